"""Stage 05 (notebooks/05_judge): LLM judges, label mapping and the judge's own validation."""
from paraqa_utils.judge.llm_judge import judged_subset, load_items, scores_table  # noqa: F401
from paraqa_utils.judge.panel import (good_probes, graded_agreement, judge_metrics, ledger_table,  # noqa: F401
                                      offline_judgments, run_llm_graded, run_llm_judges, swap_probes, write_asr, write_classification,
                                      write_label_mapping, write_similarity, write_validation)
from paraqa_utils.judge.settings import JudgeSettings  # noqa: F401
from paraqa_utils.text import minilm_embedder  # noqa: F401

# Not called by the notebook, kept for bench/bench_judge.py and tests/unit/test_synthesize.py:
from paraqa_utils.judge.llm_judge import JudgeConfig, judge_items, rubric_path  # noqa: F401,E402
