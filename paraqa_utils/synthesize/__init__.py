"""Stage 02 (notebooks/02_synthesize): LLM-written CPQA and PQA* pairs and their post-filters."""
from paraqa_utils.synthesize.filters import FilterConfig, STEPS, examples, run_filters, type_mix  # noqa: F401
from paraqa_utils.synthesize.generation import (QUESTION_TYPES, REASONING, SPAN, Prompt,  # noqa: F401
                                                SynthesizeConfig, available_types, build_request, build_requests,
                                                generate, with_profile,
                                                load_annotations, load_prompt, numbered_transcript, pair_plan,
                                                prompt_path, qa_item_schema, qa_schema, to_records)
from paraqa_utils.synthesize.small import PROFILES, SmallPrompt, load_small_prompt  # noqa: F401
from paraqa_utils.synthesize.quality import kept_quality  # noqa: F401
from paraqa_utils.synthesize.outputs import funnel_rows, reject_counts, stage_metrics, write_outputs  # noqa: F401
from paraqa_utils.synthesize.stage import (LLMSettings, as_table, clip_preview, example_prompt,  # noqa: F401
                                           examples_table, filter_qas, generator_info, llm_client, load_prompts,
                                           summary)
