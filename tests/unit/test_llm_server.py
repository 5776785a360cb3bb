"""The embedded llama.cpp server: starts on loopback, answers the openai client, and is always stopped."""
import json
import socket

import pytest

from paraqa_utils.llm import server as llm_server

pytestmark = pytest.mark.server


def port_open(base_url: str) -> bool:
    host, port = base_url.split("//")[1].split("/")[0].split(":")
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, int(port))) == 0


def test_server_serves_chat_and_json_schema_then_stops(tmp_path):
    from openai import OpenAI

    with llm_server.embedded_llm_server(tmp_path / "logs" / "llm_server.log", n_ctx=1024) as ep:
        assert ep.base_url.startswith("http://127.0.0.1:") and ep.embedded
        client = OpenAI(base_url=ep.base_url, api_key="not-needed-for-loopback", timeout=120)
        r = client.chat.completions.create(model=ep.model, max_tokens=16, temperature=0,
                                           messages=[{"role": "user", "content": "Say hello."}])
        assert r.choices[0].message.content.strip()
        assert r.usage.completion_tokens > 0
        schema = {"type": "object", "properties": {"emotion": {"type": "string", "enum": ["happy", "sad"]}},
                  "required": ["emotion"]}
        r = client.chat.completions.create(
            model=ep.model, max_tokens=32, temperature=0,
            messages=[{"role": "user", "content": "Is a birthday party happy or sad? Answer in JSON."}],
            # llama-cpp-python's server takes the schema inside a json_object response format (it answers
            # 500 to OpenAI's `json_schema` type); it then constrains decoding with a grammar
            response_format={"type": "json_object", "schema": schema})
        assert json.loads(r.choices[0].message.content)["emotion"] in ("happy", "sad")
        url = ep.base_url
    assert not port_open(url)
    assert "llama_cpp.server" in (tmp_path / "logs" / "llm_server.log").read_text()


def test_server_is_stopped_when_the_block_raises(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with llm_server.embedded_llm_server(tmp_path / "s.log", n_ctx=512) as ep:
            url = ep.base_url
            1 / 0
    assert not port_open(url)


def test_unusable_model_fails_fast_with_log_tail(tmp_path):
    bogus = tmp_path / "not_a_model.gguf"
    bogus.write_bytes(b"GGUF but not really")
    with pytest.raises(llm_server.ServerError, match="exited with code"):
        with llm_server.embedded_llm_server(tmp_path / "s.log", model_path=bogus, startup_timeout_s=60):
            pass


def test_llm_endpoint_passes_a_real_endpoint_through(tmp_path):
    with llm_server.llm_endpoint("https://api.example.org/v1/", "gpt-4o", tmp_path) as ep:
        assert ep.base_url == "https://api.example.org/v1" and ep.model == "gpt-4o" and not ep.embedded
        assert ep.api_key_env == "OPENAI_API_KEY"
    with pytest.raises(ValueError, match="llm_model must name"):
        with llm_server.llm_endpoint("http://127.0.0.1:9/v1", "", tmp_path):
            pass
    with pytest.raises(ValueError, match="without llm_base_url"):
        with llm_server.llm_endpoint("", "gpt-4o", tmp_path):
            pass


def test_server_dies_with_a_killed_parent(tmp_path):
    """A kernel killed with SIGKILL runs no cleanup: the server must not outlive it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = ("import sys, time; from paraqa_utils.llm import server as llm_server\n"
              f"cm = llm_server.embedded_llm_server({str(tmp_path / 's.log')!r}, n_ctx=512)\n"
              "ep = cm.__enter__(); print(ep.base_url, flush=True); time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    url = parent.stdout.readline().strip()
    assert port_open(url)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 20
    while port_open(url) and time.time() < deadline:
        time.sleep(0.5)
    assert not port_open(url)
