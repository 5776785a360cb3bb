"""The embedded LLM: llama.cpp's OpenAI-compatible server on a free loopback port, always stopped afterwards."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

EMBEDDED_MODEL_ALIAS = "smollm2-135m-instruct-q4_1"


class ServerError(RuntimeError):
    """The server could not be started or did not become healthy; the message carries its log's tail."""


@dataclass(frozen=True)
class Endpoint:
    """Where stages send chat completions. `api_key_env` names the variable holding the key (never the key)."""
    base_url: str
    model: str
    api_key_env: str = ""
    embedded: bool = False
    log_path: str = ""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _healthy(base_url: str, timeout_s: float = 2.0) -> str | None:
    """The served model id once /v1/models answers, else None."""
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=timeout_s) as r:
            data = json.loads(r.read())
        return data["data"][0]["id"] if data.get("data") else None
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return None


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM the server when its parent dies, even by SIGKILL (a killed kernel
    never runs our `finally`, and an orphaned server would keep a core busy)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the context manager's cleanup is all there is


def server_command(model_path: Path, port: int, host: str, n_ctx: int, n_threads: int, alias: str) -> list[str]:
    return [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--model_alias", alias,
            "--host", host, "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(n_threads)]


@contextlib.contextmanager
def embedded_llm_server(log_path: Path, model_path: Path | None = None, n_ctx: int = 4096,
                        n_threads: int | None = None, startup_timeout_s: float = 180.0,
                        alias: str = EMBEDDED_MODEL_ALIAS, host: str = "127.0.0.1") -> Iterator[Endpoint]:
    """Start the server, wait until it serves, yield its Endpoint, and stop it whatever happens."""
    try:
        import llama_cpp  # noqa: F401  (only to fail early with the install command)
    except ImportError as exc:
        raise ServerError("llama-cpp-python is not installed; run: CMAKE_ARGS=\"-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF\" "
                          "pip install 'llama-cpp-python[server]==0.3.36' (or `make setup`)") from exc
    if model_path is None:
        from paraqa_utils.assets import smollm2_gguf
        model_path = smollm2_gguf()
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    port = free_port(host)
    cmd = server_command(Path(model_path), port, host, n_ctx, n_threads or min(os.cpu_count() or 1, 8), alias)
    base_url = f"http://{host}:{port}/v1"
    with open(log_path, "ab") as log:
        log.write(f"$ {' '.join(cmd)}\n".encode())
        log.flush()
        # Own process group, so stopping it also stops anything it spawned.
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=_die_with_parent)
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if proc.poll() is not None:
                raise ServerError(f"llama.cpp server exited with code {proc.returncode} before serving; "
                                  f"log {log_path}:\n{_tail(log_path)}")
            if _healthy(base_url) is not None:
                break
            if time.monotonic() > deadline:
                raise ServerError(f"llama.cpp server not healthy after {startup_timeout_s:.0f} s; "
                                  f"log {log_path}:\n{_tail(log_path)}")
            time.sleep(0.25)
        yield Endpoint(base_url=base_url, model=alias, embedded=True, log_path=str(log_path))
    finally:
        stop(proc)


def stop(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the server's process group, then SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace_s)


@contextlib.contextmanager
def llm_endpoint(base_url: str, model: str, log_dir: Path, api_key_env: str = "OPENAI_API_KEY",
                 **server_kwargs) -> Iterator[Endpoint]:
    """What stages call: a user's endpoint as given, or (empty base_url) the embedded server for the block."""
    if base_url:
        if not model:
            raise ValueError("llm_model must name the served model when llm_base_url is set")
        yield Endpoint(base_url=base_url.rstrip("/"), model=model, api_key_env=api_key_env)
        return
    if model and model != EMBEDDED_MODEL_ALIAS:
        raise ValueError(f"llm_model='{model}' given without llm_base_url: the embedded server only serves "
                         f"'{EMBEDDED_MODEL_ALIAS}'; set llm_base_url to your endpoint")
    with embedded_llm_server(Path(log_dir) / "llm_server.log", **server_kwargs) as ep:
        yield ep
