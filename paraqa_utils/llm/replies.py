"""Judging what came back from an LLM server: JSON and schema checks of a reply, and the kind of a failed call."""
from __future__ import annotations

import asyncio
import email.utils
import json
import re
import time
from typing import Any, Callable, Mapping

import fastjsonschema
import openai

from paraqa_utils.llm.store import LLMRequest

RETRY_STATUS = (408, 409, 429)  # and every 5xx, like the openai package's own policy


_VALIDATORS: dict[str, Callable[[Any], Any]] = {}


def schema_error(schema: Mapping[str, Any], data: Any) -> str | None:
    """The first violation of a JSON schema ('data.qa_pairs[0].question_type must be one of ...'), or None.

    fastjsonschema compiles each schema once (and imports in milliseconds, unlike jsonschema's format plugins)."""
    key = json.dumps(schema, sort_keys=True)
    if key not in _VALIDATORS:
        _VALIDATORS[key] = fastjsonschema.compile(dict(schema))
    try:
        _VALIDATORS[key](data)
    except fastjsonschema.JsonSchemaValueException as exc:
        return f"schema violation: {exc.message[:300]}"
    return None


def parse_json_reply(text: str) -> Any:
    """JSON from a reply, tolerating a ``` fence or chatter around one object; ValueError when there is none."""
    body = re.sub(r"^\s*```(?:json)?\s*|\s*```\s*$", "", text.strip())
    try:  # strict=False: raw newlines inside strings, which llama.cpp's JSON grammar lets through
        return json.loads(body, strict=False)
    except json.JSONDecodeError as exc:
        start, end = body.find("{"), body.rfind("}")
        if 0 <= start < end:
            try:
                return json.loads(body[start:end + 1], strict=False)
            except json.JSONDecodeError:
                pass
        raise ValueError(f"not valid JSON ({exc.msg} at char {exc.pos})") from None


def check_reply(text: str, refusal: str | None, finish_reason: str, req: LLMRequest) -> tuple[Any, str, str]:
    """(data, error_kind, error) for one reply; error_kind '' means it is usable."""
    if refusal:
        return None, "refusal", f"the model refused: {refusal[:200]}"
    if not text.strip():
        return None, "empty", "the reply was empty"
    if req.json_schema is None and req.validator is None:
        return text, "", ""
    try:
        data = parse_json_reply(text)
    except ValueError as exc:
        kind = "truncated" if finish_reason == "length" else "invalid_json"
        return None, kind, f"the reply is {exc}" + (" (cut off at max_tokens)" if kind == "truncated" else "")
    if req.json_schema is not None and (err := schema_error(req.json_schema, data)):
        return data, "schema", err
    if req.validator is not None:
        try:
            req.validator(data)
        except ValueError as exc:
            return data, "schema", str(exc)[:300]
    return data, "", ""


def retry_after_s(exc: Exception) -> float | None:
    """Seconds the server asked us to wait (retry-after-ms, retry-after as seconds or an HTTP date)."""
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            return max(0.0, float(raw) * scale)
        except ValueError:
            try:  # a malformed header is no reason to give up: fall back to our own back-off
                when = email.utils.parsedate_to_datetime(raw) if scale == 1.0 else None
            except (TypeError, ValueError):
                when = None
            if when is not None:
                return max(0.0, when.timestamp() - time.time())
    return None


def _dropped_connection(exc: BaseException) -> bool:
    """A refused, reset or closed connection somewhere in the cause chain (not a timeout). openai's aiohttp
    transport reports a connection the server closed as a connect *timeout*; its cause tells the truth."""
    try:
        from aiohttp import ClientConnectionError
    except ImportError:
        ClientConnectionError = ConnectionError  # noqa: N806
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, (ConnectionError, ClientConnectionError)) and not isinstance(seen, TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def error_kind(exc: Exception) -> tuple[str, bool]:
    """(kind, retryable) for a failed HTTP call."""
    if isinstance(exc, (asyncio.TimeoutError, openai.APITimeoutError)):
        return ("connection" if _dropped_connection(exc) else "timeout"), True
    if isinstance(exc, openai.APIConnectionError):
        return "connection", True
    if isinstance(exc, openai.APIStatusError):
        code = exc.status_code
        return f"http_{code}", code in RETRY_STATUS or code >= 500
    return type(exc).__name__, False
