"""Stage 03 (notebooks/03_explicit_merge): explicit labels, training mixtures, test sets, exports."""
from paraqa_utils.explicit_merge.labels import TEMPLATES_FILE, REFERENCE_FILE, MODES, DIMS, CONDITIONS, MergeError, load_bank, stable_rng, label_bins, verbalise, dominant, fill, clip_transcript, baseline_examples, reference_items, label_words  # noqa: F401
