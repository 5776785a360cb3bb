"""The LLM client (cache, limits, retries, ledger), the embedded llama.cpp server, reply checks."""
from paraqa_utils.llm.client import FORMATS, LLMClient  # noqa: F401
from paraqa_utils.llm.limits import LOOPBACK, LLMConfigError, RateLimiter, api_key_for, public_url  # noqa: F401
from paraqa_utils.llm.replies import (RETRY_STATUS, check_reply, error_kind, parse_json_reply,  # noqa: F401
                                      retry_after_s, schema_error)
from paraqa_utils.llm.server import Endpoint, ServerError, embedded_llm_server, llm_endpoint  # noqa: F401
from paraqa_utils.llm.store import CACHE_FILE, DiskCache, Ledger, LLMRequest, LLMResult, cache_key  # noqa: F401
