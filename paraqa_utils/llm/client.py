"""The pipeline's one LLM client: async OpenAI-compatible chat with limits, retries, a disk cache, schemas, a ledger.

    client = LLMClient([endpoint], cache_dir=stage.cache / "llm", ledger_name="02_synthesize", concurrency=8)
    results = client.complete([LLMRequest(messages=[...], json_schema=SCHEMA, validator=check), ...])
    client.ledger.as_dict()   # calls, cache hits, retries, failures, tokens, cost, wall time

Every request is keyed (sha256) on model, messages, sampling and schema; a key already in the cache is never sent
again, so a rerun or a resumed run is free. A final failure comes back as `LLMResult(ok=False, error_kind=...)`,
never as an exception through the batch. API keys come only from the environment variable an endpoint names.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import random
import re
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import openai

from paraqa_utils.llm.limits import LLMConfigError, RateLimiter, api_key_for, public_url
from paraqa_utils.llm.replies import check_reply, error_kind, retry_after_s
from paraqa_utils.llm.server import Endpoint
from paraqa_utils.llm.store import DiskCache, Ledger, LLMRequest, LLMResult, cache_key

# How a request's schema travels, strongest first: OpenAI/vLLM's json_schema; llama-cpp-python's json_object with
# a schema (its server refuses json_schema); plain JSON mode; nothing (the reply is still parsed and validated).
FORMATS = ("json_schema", "json_object_schema", "json_object", "none")
FEEDBACK = ("Your previous reply could not be used: {error}. Reply again with only the JSON object that the task "
            "asks for, following its schema exactly.")


class _Target:
    """One base URL with its own HTTP client, response-format support and a pause after a 429."""

    def __init__(self, base_url: str, api_key: str, timeout_s: float, concurrency: int, response_format: str):
        import httpx2

        limits = httpx2.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency + 8)
        self.url = public_url(base_url)
        try:  # aiohttp underneath (openai's [aiohttp] extra) costs about half the CPU per request of plain httpx2
            http, self.transport = openai.DefaultAioHttpClient(limits=limits, timeout=timeout_s), "aiohttp"
        except RuntimeError:  # the extra is not installed
            http, self.transport = openai.DefaultAsyncHttpxClient(limits=limits, timeout=timeout_s), "httpx2"
        self.client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout_s,
                                         http_client=http)
        self.response_format, self.pause_until = response_format, 0.0

    def response_format_for(self, req: LLMRequest) -> dict[str, Any] | None:
        if req.json_schema is None or self.response_format == "none":
            return None
        if self.response_format == "json_schema":
            return {"type": "json_schema", "json_schema": {"name": req.schema_name, "schema": req.json_schema}}
        if self.response_format == "json_object_schema":
            return {"type": "json_object", "schema": req.json_schema}
        return {"type": "json_object"}

    def degrade(self) -> bool:
        """After the server refused our response_format: the next weaker form. False when nothing is left."""
        if self.response_format == "none":
            return False
        self.response_format = FORMATS[FORMATS.index(self.response_format) + 1]
        return True


def text_chars(content: Any) -> int:
    """Characters of a message's text for the token estimate: content parts other than text (base64 audio in an
    `input_audio` part) are not prompt tokens of the kind a tokens-per-minute limit counts."""
    if isinstance(content, list):
        return sum(len(str(p.get("text", ""))) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return len(str(content))


class LLMClient:
    """OpenAI-compatible chat for every stage; `complete` (sync) and `complete_many` (async) keep request order.

    endpoints: `llm_server.Endpoint`s or base URLs (a comma-separated base_url means replicas, used round-robin);
    cache_dir: None disables the cache; rpm/tpm: 0 means unlimited; price_table: {model: (usd per 1M prompt
    tokens, usd per 1M completion tokens)}; response_format: one of FORMATS, or auto (json_object_schema for the
    embedded llama.cpp server, json_schema elsewhere); a server that refuses it is asked with the next weaker form.
    """

    def __init__(self, endpoints: Sequence[Endpoint | str], model: str = "", cache_dir: Path | None = None,
                 ledger_name: str = "llm", concurrency: int = 8, rpm: float = 0, tpm: float = 0,
                 timeout_s: float = 120.0, max_retries: int = 4, max_invalid_retries: int = 1,
                 price_table: Mapping[str, Sequence[float]] | None = None, response_format: str = "json_schema",
                 backoff_base_s: float = 0.5, backoff_max_s: float = 30.0, max_retry_after_s: float = 120.0,
                 progress: bool = True):
        eps = [e if isinstance(e, Endpoint) else Endpoint(base_url=e, model=model) for e in endpoints]
        self.urls = [(u.strip().rstrip("/"), e.api_key_env) for e in eps for u in e.base_url.split(",") if u.strip()]
        self.formats = [response_format if response_format != "auto" else
                        "json_object_schema" if e.embedded else "json_schema"
                        for e in eps for u in e.base_url.split(",") if u.strip()]
        if not self.urls:
            raise LLMConfigError("no endpoint given")
        if response_format not in (*FORMATS, "auto"):
            raise LLMConfigError(f"response_format must be auto or one of {', '.join(FORMATS)}, not {response_format!r}")
        self.keys = [api_key_for(u, env) for u, env in self.urls]  # fail before any work if a key is missing
        self.model = model or eps[0].model
        self.cache = DiskCache(cache_dir)
        self.ledger = Ledger(ledger_name)
        self.concurrency, self.rpm, self.tpm, self.timeout_s = max(1, concurrency), rpm, tpm, timeout_s
        self.max_retries, self.max_invalid_retries = max_retries, max_invalid_retries
        self.price_table = {k: tuple(v) for k, v in (price_table or {}).items()}
        self.progress = progress
        self.backoff_base_s, self.backoff_max_s, self.max_retry_after_s = backoff_base_s, backoff_max_s, max_retry_after_s

    def describe(self) -> dict[str, Any]:
        """Provenance for stage.json / metrics (no keys: only the variable names)."""
        return {"model": self.model, "endpoints": [public_url(u) for u, _ in self.urls],
                "api_key_env": sorted({env for _, env in self.urls if env}), "response_format": self.formats,
                "concurrency": self.concurrency, "rpm": self.rpm, "tpm": self.tpm, "timeout_s": self.timeout_s,
                "max_retries": self.max_retries, "max_invalid_retries": self.max_invalid_retries,
                "price_usd_per_1m_tokens": self.price_table}

    def key(self, req: LLMRequest) -> str:
        return cache_key(req.model or self.model, req)

    def complete(self, requests: Iterable[LLMRequest]) -> list[LLMResult]:
        """Sync wrapper, usable from a notebook (whose event loop is already running in this thread)."""
        coro = self.complete_many(list(requests))
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coro)
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            return ex.submit(asyncio.run, coro).result()

    async def complete_many(self, requests: Sequence[LLMRequest]) -> list[LLMResult]:
        """Cache hits first (no task per item), then `concurrency` workers over the misses."""
        from paraqa_utils.progress import tqdm  # text bar that also reports to the runner

        t0 = time.monotonic()
        requests = list(requests)
        self.ledger.requests += len(requests)
        results: list[LLMResult | None] = [self._from_cache(r) for r in requests]
        todo = asyncio.Queue()
        for i, res in enumerate(results):
            if res is None:
                todo.put_nowait(i)
        bar = tqdm(total=len(requests), initial=len(requests) - todo.qsize(), desc=self.ledger.name,
                   disable=not self.progress, mininterval=1.0)
        self._targets = [_Target(u, k, self.timeout_s, self.concurrency, f)
                         for (u, _), k, f in zip(self.urls, self.keys, self.formats)]
        self._next = 0
        self._rpm = RateLimiter(self.rpm) if self.rpm > 0 else None
        self._tpm = RateLimiter(self.tpm) if self.tpm > 0 else None

        async def worker() -> None:
            while not todo.empty():
                i = todo.get_nowait()
                results[i] = await self._one(requests[i])
                bar.update(1)
        try:
            await asyncio.gather(*(worker() for _ in range(min(self.concurrency, todo.qsize()))))
        finally:
            bar.close()
            self.formats = [t.response_format for t in self._targets]  # keep what each server accepted
            for t in self._targets:
                await t.client.close()
            self.ledger.wall_s += time.monotonic() - t0
        return results  # type: ignore[return-value]

    def _from_cache(self, req: LLMRequest) -> LLMResult | None:
        key = self.key(req)
        entry = self.cache.get(key)
        if entry is None:
            return None
        data, kind, _ = check_reply(entry["text"], None, entry.get("finish_reason", ""), req)
        if entry["ok"] and kind:  # the schema or validator became stricter since it was cached: ask again
            return None
        self.ledger.cache_hits += 1
        self.ledger.failures += not entry["ok"]
        entry.pop("created", None)
        return LLMResult(key=key, cached=True, tag=req.tag, data=data, **entry)

    def _backoff(self, attempt: int) -> float:
        return min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)

    async def _call(self, target: _Target, body: dict[str, Any]) -> dict[str, Any]:
        wait = target.pause_until - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        if self._rpm:
            await self._rpm.acquire(1)
        if self._tpm:
            await self._tpm.acquire(body["_estimate"])
        payload = {k: v for k, v in body.items() if k != "_estimate"}
        self.ledger.calls += 1
        self.ledger.count(self.ledger.calls_per_endpoint, target.url)
        return await asyncio.wait_for(target.client.post("/chat/completions", body=payload, cast_to=object),
                                      self.timeout_s)

    async def _one(self, req: LLMRequest) -> LLMResult:
        key, model = self.key(req), req.model or self.model
        res = LLMResult(key=key, ok=False, tag=req.tag)
        messages, n_transport, n_invalid = [dict(m) for m in req.messages], 0, 0
        while True:
            target = self._targets[self._next % len(self._targets)]
            self._next += 1
            body = {"model": model, "messages": messages, **req.sampling(), "_estimate": req.max_tokens + sum(
                text_chars(m.get("content", "")) for m in messages) / 4}
            if (fmt := target.response_format_for(req)) is not None:
                body["response_format"] = fmt
            res.attempts += 1
            try:
                raw = await self._call(target, body)
            except Exception as exc:  # noqa: BLE001 - every failure is classified, none escapes the batch
                kind, retryable = error_kind(exc)
                if kind.startswith("http_") and "response_format" in body and re.search(
                        r"response_format|json_schema|grammar", str(exc), re.I) and target.degrade():
                    continue  # some servers answer an unknown response_format with 422 or even 500
                n_transport += 1
                if not retryable or n_transport > self.max_retries:
                    return self._fail(res, kind, f"{type(exc).__name__}: {str(exc)[:300]}", cache=False)
                self.ledger.retries += 1
                self.ledger.count(self.ledger.errors, kind)
                delay = retry_after_s(exc)
                if delay is not None:
                    delay = min(delay, self.max_retry_after_s)
                    target.pause_until = max(target.pause_until, time.monotonic() + delay)
                await asyncio.sleep(delay if delay is not None else self._backoff(n_transport))
                continue
            usage = raw.get("usage") or {}
            p_tok, c_tok = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
            if self._tpm:
                self._tpm.adjust(p_tok + c_tok - body["_estimate"])
            self._spend(model, p_tok, c_tok)
            res.prompt_tokens += p_tok
            res.completion_tokens += c_tok
            choice = (raw.get("choices") or [{}])[0]
            msg = choice.get("message") or {}
            res.text, res.model = msg.get("content") or "", raw.get("model") or model
            res.finish_reason = choice.get("finish_reason") or ""
            res.data, kind, err = check_reply(res.text, msg.get("refusal"), res.finish_reason, req)
            if not kind:
                res.ok = True
                self._store(res)
                return res
            self.ledger.count(self.ledger.errors, kind)
            if n_invalid >= self.max_invalid_retries:
                return self._fail(res, kind, err, cache=True)
            n_invalid += 1
            self.ledger.invalid_retries += 1
            messages = [dict(m) for m in req.messages] + [
                {"role": "assistant", "content": res.text[:4000]}, {"role": "user", "content": FEEDBACK.format(error=err)}]

    def _spend(self, model: str, p_tok: int, c_tok: int) -> None:
        self.ledger.prompt_tokens += p_tok
        self.ledger.completion_tokens += c_tok
        price = self.price_table.get(model)
        if price:
            self.ledger.cost_usd += (p_tok * price[0] + c_tok * price[1]) / 1e6

    def _fail(self, res: LLMResult, kind: str, err: str, cache: bool) -> LLMResult:
        """Record a final failure. Invalid replies are cached (the same call would give the same answer);
        transport failures are not, so a resumed run tries them again."""
        res.ok, res.error_kind, res.error = False, kind, err
        self.ledger.failures += 1
        self.ledger.count(self.ledger.errors, f"final_{kind}")
        if cache:
            self._store(res)
        return res

    def _store(self, res: LLMResult) -> None:
        self.cache.put(res.key, {"ok": res.ok, "text": res.text, "error": res.error, "error_kind": res.error_kind,
                                 "prompt_tokens": res.prompt_tokens, "completion_tokens": res.completion_tokens,
                                 "model": res.model, "finish_reason": res.finish_reason, "created": time.time()})
