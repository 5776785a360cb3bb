"""Stage 03 (notebooks/03_explicit_merge): explicit labels, training mixtures, test sets, leakage gate, exports."""
from paraqa_utils.explicit_merge.config import MergeConfig  # noqa: F401
from paraqa_utils.explicit_merge.labels import REFERENCE_FILE, TEMPLATES_FILE  # noqa: F401
from paraqa_utils.explicit_merge.mixtures import build_conditions, load_inputs  # noqa: F401
from paraqa_utils.explicit_merge.outputs import (block_examples, check_leakage, merge_metrics,  # noqa: F401
                                                 mixture_metrics, mixture_table, types_per_test_set, write_exports,
                                                 write_test_sets)
