"""`python -m paraqa_utils.evaluate`: any Speech-LLM on any CPQA test set, answered, judged and tabulated."""
