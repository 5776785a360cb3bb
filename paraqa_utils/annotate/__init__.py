"""Stage 01 (notebooks/01_annotate): VAD, windows, ASR, emotion/V-A-D/gender labels, condensation."""
from paraqa_utils.annotate.steps import Prepared, label_windows, prepare, transcribe  # noqa: F401
from paraqa_utils.annotate.records import AnnotateConfig, load_clips, build_records, VERBALISE, level_word, format_labels, serialise_transcript, prep_summary, write_outputs  # noqa: F401
