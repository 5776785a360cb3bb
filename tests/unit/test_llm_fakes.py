"""A fault-injecting OpenAI-compatible chat server on loopback (for the LLM client's tests and bench), and its tests.

`FakeLLMServer` answers POST /v1/chat/completions and GET /v1/models from a thread of its own. Replies come from
`reply(body) -> str` (the assistant's content). Faults are planted per request: `faults = {marker: [kind, ...]}`
makes the n-th attempt whose messages contain `marker` fail with the n-th kind, later attempts succeed.
Kinds: "429" / "429:<retry_after_s>", "500", "503", "400", "hang" (no reply until the server stops), "close"
(drop the connection), "malformed", "empty", "refusal" (OpenAI's message.refusal), "wrong_schema", "truncated"
(finish_reason length).
A response_format type not in `supports` is refused with `refuse_status` (400; llama-cpp-python answers 500).
The server always stops after `max_lifetime_s`. As a script (`python -m tests.unit.test_llm_fakes`) it serves
from its own process, which the benchmark uses so that client and server do not share one interpreter.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from collections import Counter, defaultdict
from typing import Any, Callable

CONTENT_FAULTS = {
    "malformed": '{"qa_pairs": [{"question": "Why', "empty": "", "wrong_schema": '{"items": 3}',
    "refusal": "I'm sorry, but I can't help with that request."}


def default_reply(body: dict[str, Any]) -> str:
    return json.dumps({"echo": body["messages"][-1]["content"][:40]})


class FakeLLMServer:
    """Loopback OpenAI-compatible server with planted faults and counters; use as a context manager."""

    def __init__(self, reply: Callable[[dict[str, Any]], str] = default_reply, latency_s: float = 0.0,
                 faults: dict[str, list[str]] | None = None, max_lifetime_s: float = 120.0,
                 host: str = "127.0.0.1", port: int = 0, model: str = "fake-model", keep_bodies: bool = True,
                 supports: tuple[str, ...] = ("json_schema", "json_object"), refuse_status: int = 400):
        self.reply, self.latency_s, self.model, self.supports = reply, latency_s, model, supports
        self.refuse_status = refuse_status
        self.faults = {k: list(v) for k, v in (faults or {}).items()}
        self.max_lifetime_s, self.host, self.port, self.keep_bodies = max_lifetime_s, host, port, keep_bodies
        self.seen: Counter[str] = Counter()      # attempts per fault marker
        self.bodies: list[dict[str, Any]] = []   # every chat request received (if keep_bodies)
        self.answered: list[dict[str, Any]] = []  # requests that got a 200 reply
        self.n_requests = self.n_answered = self.in_flight = self.max_in_flight = 0
        self.status_counts: Counter[int] = Counter()
        self.authorizations: set[str] = set()  # Authorization headers seen
        self.hold_after: int | None = None  # once this many were answered, new chat requests hang (freeze a run)
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    # -- lifecycle ---------------------------------------------------------------------------------------
    def __enter__(self) -> "FakeLLMServer":
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake server did not start")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def stop(self) -> None:
        """Stop serving and drop every open connection (also what 'the server died' looks like to a client)."""
        if self._thread.is_alive() and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stopped = asyncio.Event()
        server = await asyncio.start_server(self._handle, self.host, self.port, backlog=2048)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await asyncio.wait_for(self._stopped.wait(), self.max_lifetime_s)
        except asyncio.TimeoutError:
            pass
        server.close()
        for w in list(self._writers):
            w.transport.abort()
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    # -- HTTP --------------------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                raw = await reader.readexactly(int(headers.get("content-length", 0)))
                if method == "GET" and path.endswith("/models"):
                    await self._send(writer, 200, {"object": "list", "data": [{"id": self.model, "object": "model"}]})
                elif method == "POST" and path.endswith("/chat/completions"):
                    self.authorizations.add(headers.get("authorization", ""))
                    if not await self._chat(writer, json.loads(raw)):
                        return
                else:
                    await self._send(writer, 404, {"error": {"message": f"no route {path}"}})
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError, ValueError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _send(self, writer: asyncio.StreamWriter, status: int, payload: Any,
                    extra: dict[str, str] | None = None) -> None:
        self.status_counts[status] += 1
        data = json.dumps(payload).encode()
        hdr = [f"HTTP/1.1 {status} X", "content-type: application/json", f"content-length: {len(data)}",
               *(f"{k}: {v}" for k, v in (extra or {}).items())]
        writer.write(("\r\n".join(hdr) + "\r\n\r\n").encode() + data)
        await writer.drain()

    def _fault_for(self, body: dict[str, Any]) -> str | None:
        text = json.dumps(body["messages"])
        for marker, kinds in self.faults.items():
            if marker in text:
                n = self.seen[marker]
                self.seen[marker] += 1
                return kinds[n] if n < len(kinds) else None
        return None

    async def _chat(self, writer: asyncio.StreamWriter, body: dict[str, Any]) -> bool:
        """Answer one chat request; False when the connection must be dropped."""
        self.n_requests += 1
        if self.keep_bodies:
            self.bodies.append(body)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            fault = self._fault_for(body)
            fmt = (body.get("response_format") or {}).get("type")
            if fmt and fmt not in self.supports:
                await self._send(writer, self.refuse_status,
                                 {"error": {"message": f"response_format {fmt} is not supported"}})
                return True
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            if fault == "hang" or (self.hold_after is not None and self.n_answered >= self.hold_after):
                await asyncio.Event().wait()  # until the server stops and cancels us
            if fault == "close":
                writer.transport.abort()
                return False
            if fault and fault.split(":")[0] in ("429", "500", "503", "400"):
                code = int(fault.split(":")[0])
                extra = {"retry-after": fault.split(":")[1]} if ":" in fault else None
                await self._send(writer, code, {"error": {"message": f"planted {code}", "type": "fake"}}, extra)
                return True
            content = CONTENT_FAULTS[fault] if fault in CONTENT_FAULTS else self.reply(body)
            finish = "length" if fault == "truncated" else "stop"
            if fault == "truncated":
                content = content[: max(1, len(content) // 2)]
            n_prompt = sum(len(str(m.get("content", ""))) for m in body["messages"]) // 4
            n_out = max(1, len(content) // 4)
            self.n_answered += 1
            if self.keep_bodies:
                self.answered.append(body)
            await self._send(writer, 200, {
                "id": f"chatcmpl-{self.n_requests}", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model", self.model),
                "choices": [{"index": 0, "finish_reason": finish, "message": (
                    {"role": "assistant", "content": None, "refusal": content} if fault == "refusal"  # OpenAI's form
                    else {"role": "assistant", "content": content})}],
                "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_out, "total_tokens": n_prompt + n_out}})
            return True
        finally:
            self.in_flight -= 1


def answered_per_prompt(server: FakeLLMServer) -> dict[str, int]:
    """How often each distinct first-turn conversation (the client's cache unit) was answered."""
    out: dict[str, int] = defaultdict(int)
    for b in server.answered:
        out[json.dumps(b["messages"][:2], sort_keys=True)] += 1
    return dict(out)


def main() -> None:
    ap = argparse.ArgumentParser(description="Serve the fake LLM from this process (benchmarks).")
    ap.add_argument("--latency-s", type=float, default=0.1)
    ap.add_argument("--max-lifetime-s", type=float, default=300)
    args = ap.parse_args()
    with FakeLLMServer(latency_s=args.latency_s, max_lifetime_s=args.max_lifetime_s, keep_bodies=False) as srv:
        print(srv.base_url, flush=True)
        srv._thread.join()


# -- tests of the fake itself (so the client tests below can trust it) -----------------------------------

def _post(url: str, messages: list[dict[str, str]]) -> tuple[int, dict[str, str], Any]:
    import httpx

    r = httpx.post(f"{url}/chat/completions", json={"model": "m", "messages": messages}, timeout=5)
    return r.status_code, dict(r.headers), r.json()


def test_fake_server_plants_faults_in_order_then_answers():
    with FakeLLMServer(faults={"clip-7": ["429:0.25", "500", "malformed"]}, max_lifetime_s=20) as srv:
        msgs = [{"role": "user", "content": "about clip-7"}]
        code, headers, _ = _post(srv.base_url, msgs)
        assert code == 429 and headers["retry-after"] == "0.25"
        assert _post(srv.base_url, msgs)[0] == 500
        code, _, body = _post(srv.base_url, msgs)
        assert code == 200 and body["choices"][0]["message"]["content"] == CONTENT_FAULTS["malformed"]
        code, _, body = _post(srv.base_url, msgs)
        assert json.loads(body["choices"][0]["message"]["content"]) == {"echo": "about clip-7"}
        assert _post(srv.base_url, [{"role": "user", "content": "other"}])[0] == 200
        assert srv.n_requests == 5 and srv.n_answered == 3 and srv.status_counts[200] == 3


def test_fake_server_stops_and_refuses_connections():
    import httpx
    import pytest

    srv = FakeLLMServer(max_lifetime_s=20).__enter__()
    url = srv.base_url
    assert _post(url, [{"role": "user", "content": "hi"}])[0] == 200
    srv.stop()
    with pytest.raises(httpx.ConnectError):
        _post(url, [{"role": "user", "content": "hi"}])


if __name__ == "__main__":
    main()
