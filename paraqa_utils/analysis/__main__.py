"""python -m paraqa_utils.analysis compare RUN_A RUN_B [...]"""
import sys

from paraqa_utils.analysis.tables import main

sys.exit(main())
