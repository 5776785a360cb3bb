"""The LLM client's records and its memory: requests, results, the spending ledger and the append-only disk cache."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

CACHE_FILE = "llm_cache.jsonl"


@dataclass(frozen=True)
class LLMRequest:
    """One chat completion. `json_schema` is sent as response_format (where served) and checked on the reply;
    `validator(data)` may raise ValueError for further checks. Both failures are fed back for a retry."""
    messages: Sequence[Mapping[str, str]]
    temperature: float = 0.0
    max_tokens: int = 512
    top_p: float | None = None
    seed: int | None = None
    json_schema: Mapping[str, Any] | None = None
    schema_name: str = "reply"
    validator: Callable[[Any], None] | None = field(default=None, compare=False)
    model: str = ""  # empty: the client's model
    tag: Any = field(default=None, compare=False)  # the caller's reference, handed back with the result

    def sampling(self) -> dict[str, Any]:
        s = {"temperature": self.temperature, "max_tokens": self.max_tokens, "top_p": self.top_p, "seed": self.seed}
        return {k: v for k, v in s.items() if v is not None}


@dataclass
class LLMResult:
    key: str
    ok: bool
    text: str = ""
    data: Any = None  # the parsed JSON reply (also kept for an invalid reply, so callers may salvage parts)
    error: str = ""
    error_kind: str = ""  # invalid_json | schema | empty | refusal | truncated | http_<code> | timeout | connection
    cached: bool = False
    attempts: int = 0  # HTTP calls made for it in this batch (0 when it came from the cache)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""  # the model id the server reported
    finish_reason: str = ""
    tag: Any = None


@dataclass
class Ledger:
    """What one client spent (per stage): what the run's metrics.json reports."""
    name: str
    requests: int = 0
    calls: int = 0
    cache_hits: int = 0
    retries: int = 0
    invalid_retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    wall_s: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    calls_per_endpoint: dict[str, int] = field(default_factory=dict)

    def count(self, table: dict[str, int], key: str) -> None:
        table[key] = table.get(key, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "cost_usd": round(self.cost_usd, 6), "wall_s": round(self.wall_s, 3)}


def cache_key(model: str, req: LLMRequest) -> str:
    blob = json.dumps({"model": model, "messages": list(req.messages), "sampling": req.sampling(),
                       "schema": req.json_schema, "schema_name": req.schema_name}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class DiskCache:
    """Append-only `<key>\\t<json>` lines; the index holds only offsets, so memory stays small at 100k+ items.

    One os.write per entry on an O_APPEND descriptor: a killed process leaves at most one torn last line,
    which the next load skips (and a newline is added before appending after it)."""

    def __init__(self, folder: Path | None):
        self.path = Path(folder) / CACHE_FILE if folder else None
        self.index: dict[bytes, int] = {}  # key digest -> offset << 24 | length
        self._fd: int | None = None
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        offset = 0
        with open(self.path, "rb") as f:
            for line in f:
                if line.endswith(b"}\n") and line[64:66] == b"\t{":  # a torn line, even sealed, never ends so
                    self.index[bytes.fromhex(line[:64].decode())] = offset << 24 | len(line)
                offset += len(line)
        if offset and os.pread(self._fd, 1, offset - 1) != b"\n":
            os.write(self._fd, b"\n")  # seal a line torn by a kill

    def __len__(self) -> int:
        return len(self.index)

    def get(self, key: str) -> dict[str, Any] | None:
        packed = self.index.get(bytes.fromhex(key))
        if packed is None or self._fd is None:
            return None
        try:
            return json.loads(os.pread(self._fd, packed & 0xFFFFFF, packed >> 24)[65:])
        except json.JSONDecodeError:  # a torn line that happened to end in '}': a miss, asked again
            return None

    def put(self, key: str, entry: dict[str, Any]) -> None:
        if self._fd is None:
            return
        line = f"{key}\t{json.dumps(entry, ensure_ascii=False)}\n".encode()
        if len(line) >= 1 << 24:  # beyond what the index can address (16 MiB): simply not cached
            return
        os.write(self._fd, line)
        end = os.lseek(self._fd, 0, os.SEEK_CUR)
        self.index[bytes.fromhex(key)] = (end - len(line)) << 24 | len(line)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
