"""Stage 06 (notebooks/06_analysis): the paper's tables, figures and REPORT.md."""
from paraqa_utils.analysis.direction import direction_table, graded_validity, write_direction  # noqa: F401
from paraqa_utils.analysis.figures import draw_figures, figure_names  # noqa: F401
from paraqa_utils.analysis.learning import learning_table  # noqa: F401
from paraqa_utils.analysis.report import (analysis_metrics, judge_validation, report_sections,  # noqa: F401
                                          table_shapes, write_classification, write_data_tables, write_learning,
                                          write_validity)
from paraqa_utils.analysis.verdict import build_verdict, verdict_text  # noqa: F401
from paraqa_utils.analysis.tables import Inputs, item_scores, main_table, stage_summary, write_report  # noqa: F401
