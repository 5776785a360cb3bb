"""Stage 04 (notebooks/04_finetune): the Speech-LLM, its training loop and predictions (`python -m paraqa_utils.finetune`)."""
from paraqa_utils.finetune.condition import run_condition  # noqa: F401
from paraqa_utils.finetune.model import build_model  # noqa: F401
from paraqa_utils.finetune.conditions import (base_table, finish, loss_curves, merge_predictions, plan, plan_table,  # noqa: F401
                                              plot_loss_curves, prediction_counts, prediction_examples,
                                              prepare_base, run_plan, start_from, summary_table)
from paraqa_utils.finetune.config import (ZERO_SHOT, ConfigError, FinetuneConfig, load_config,  # noqa: F401
                                          make_config, save_config)
from paraqa_utils.finetune.launch import Launch, LaunchError, LaunchSettings  # noqa: F401
from paraqa_utils.finetune.workers import WorkerFailed  # noqa: F401
from paraqa_utils.finetune.launch import resolve as resolve_launch  # noqa: F401
