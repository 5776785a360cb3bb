"""ParaQA: contextual paralinguistic QA for Speech-LLMs (the thin package behind the numbered notebooks)."""
__version__ = "0.1.0"
