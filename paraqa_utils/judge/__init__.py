"""Stage 05 (notebooks/05_judge): LLM judges, label mapping and the judge's own validation."""
from paraqa_utils.llm.client import LLMClient, LLMRequest  # noqa: F401
from paraqa_utils.judge.llm_judge import RUBRICS, SCALE_TO_100, LAST_RATING, LAST_INT, JudgeConfig, rubric_path, rubric_text, rubric_sha, schema, fill, parse_rating, requests_for, judge_items, OPEN_SETS, LABEL_SETS, load_items, scores_table  # noqa: F401
