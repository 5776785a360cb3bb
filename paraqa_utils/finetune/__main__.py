"""`python -m paraqa_utils.finetune --config F`: train one condition and answer its test sets (also under torchrun)."""
import sys

from paraqa_utils.finetune.condition import main

sys.exit(main())
