"""Stage 06 (notebooks/06_analysis): the paper's tables, figures and REPORT.md."""
from paraqa_utils.analysis.figures import draw_figures, figure_names  # noqa: F401
from paraqa_utils.analysis.report import (analysis_metrics, report_sections, table_shapes,  # noqa: F401
                                          write_classification, write_data_tables, write_validity)
from paraqa_utils.analysis.tables import Inputs, item_scores, main_table, stage_summary, write_report  # noqa: F401
