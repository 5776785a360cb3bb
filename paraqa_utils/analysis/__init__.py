"""Stage 06 (notebooks/06_analysis): the paper's tables, figures and REPORT.md."""
from paraqa_utils.analysis.tables import MAIN_SET, TYPES, Inputs, stage_summary, item_scores, main_table, data_tables, fmt, write_report, compare, main  # noqa: F401
