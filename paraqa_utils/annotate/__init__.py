"""Stage 01 (notebooks/01_annotate): VAD, windows, ASR, emotion/V-A-D/gender labels, condensation, quality."""
from paraqa_utils.annotate.quality import (condensation_table, confusion_on, evaluate, plot_condensation,  # noqa: F401
                                           plot_confusion, quality_table, reject_summary, timing_metrics)
from paraqa_utils.annotate.records import (VERBALISE, AnnotateConfig, build_records, clip_summary,  # noqa: F401
                                           example_text, format_labels, level_word, load_clips, prep_summary,
                                           recogniser_table, serialise_transcript, write_outputs)
from paraqa_utils.annotate.steps import Prepared, label_windows, prepare, transcribe  # noqa: F401
