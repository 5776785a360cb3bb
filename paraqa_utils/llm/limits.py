"""The LLM client's request limits and endpoint hygiene: a token-bucket rate limiter, loggable URLs, API keys."""
from __future__ import annotations

import asyncio
import os
import time
from urllib.parse import urlsplit, urlunsplit

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class LLMConfigError(RuntimeError):
    """The client cannot be set up (e.g. the API key's environment variable is unset); nothing was sent."""


class RateLimiter:
    """Token bucket refilled at `per_minute / 60` per second holding at most one second's worth (or 1).

    A request bigger than the bucket may drive it negative; later requests then wait for the debt to clear."""

    def __init__(self, per_minute: float):
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.level, self.t = self.capacity, time.monotonic()
        self.lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.t) * self.rate)
        self.t = now

    async def acquire(self, amount: float = 1.0) -> None:
        async with self.lock:
            self._refill()
            need = min(amount, self.capacity)
            if self.level < need:
                await asyncio.sleep((need - self.level) / self.rate)
                self._refill()
            self.level -= amount

    def adjust(self, delta: float) -> None:
        self.level -= delta


def public_url(url: str) -> str:
    """A base URL fit for logs and ledgers: no user info, query or fragment (where keys sometimes hide)."""
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.hostname + (f":{p.port}" if p.port else "") if p.hostname else p.netloc,
                       p.path, "", ""))


def api_key_for(base_url: str, api_key_env: str) -> str:
    """The key from the named environment variable; loopback servers (and api_key_env='') need none."""
    value = os.environ.get(api_key_env) if api_key_env else None
    if value:
        return value
    if not api_key_env or urlsplit(base_url).hostname in LOOPBACK:
        return "no-key"
    raise LLMConfigError(f"the endpoint {public_url(base_url)} needs an API key: export it in the environment "
                         f"variable {api_key_env} (or set llm_api_key_env to '' for a server without authentication)")

