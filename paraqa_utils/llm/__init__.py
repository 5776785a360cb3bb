"""The LLM client (cache, limits, retries, ledger), the embedded llama.cpp server, reply checks."""
from paraqa_utils.llm.replies import RETRY_STATUS, check_reply, error_kind, parse_json_reply, retry_after_s, schema_error  # noqa: F401
from paraqa_utils.llm.server import Endpoint  # noqa: F401
from paraqa_utils.llm.store import CACHE_FILE, DiskCache, Ledger, LLMRequest, LLMResult, cache_key  # noqa: F401
from paraqa_utils.llm.client import LOOPBACK, FORMATS, FEEDBACK, LLMConfigError, RateLimiter, public_url, api_key_for, LLMClient  # noqa: F401
