"""Stage 02 (notebooks/02_synthesize): LLM-written CPQA and PQA* pairs and their post-filters."""
from paraqa_utils.llm.client import LLMClient, LLMRequest, LLMResult, schema_error  # noqa: F401
from paraqa_utils.synthesize.generation import prompt_path, QUESTION_TYPES, REASONING, SPAN, Prompt, load_prompt, SynthesizeConfig, load_annotations, numbered_transcript, available_types, pair_plan, qa_item_schema, qa_schema, build_request, to_records, generate, funnel_rows, generator_info, reject_counts, write_outputs, stage_metrics  # noqa: F401
