"""Stage 00 (notebooks/00_corpus): the embedded synthetic corpus, real-corpus loaders, the manifest, acoustics."""
from paraqa_utils.corpus.acoustics import measure_segments, prosody_table, separability  # noqa: F401
from paraqa_utils.corpus.loaders import LOADERS, load  # noqa: F401
from paraqa_utils.corpus.manifest import (SPLITS, CorpusError, check_splits, corpus_metrics, pick_examples,  # noqa: F401
                                          segment_table, write_manifest)
from paraqa_utils.corpus.real_speech import fetch_real_speech, load_real_speech  # noqa: F401
from paraqa_utils.corpus.stage import (build, clips_per_split, count_table, plot_f0_rms,  # noqa: F401
                                       plot_valence_arousal, show_examples)
from paraqa_utils.corpus.synthetic import (SCRIPTS_FILE, CorpusConfig, build_synthetic, load_scripts,  # noqa: F401
                                           plan_corpus, render_clip, split_scripts)
