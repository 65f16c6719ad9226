"""OpenAIBackend against faults a real server cannot be made to produce.

A small scripted HTTP server (stdlib, on 127.0.0.1) speaks just enough of POST /v1/chat/completions.
Retries are kept fast with `retry-after-ms` headers, which the openai client honours.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time

from helpers.fake_llm import FAST_RETRY, completion, fake_server, reply, scripted
from helpers.llm_stage import complete_and_close

from autointerp.engine.config import LLMConfig
from autointerp.engine.interpretation.llm.base import LLMRequest
from autointerp.engine.interpretation.llm.openai_http import OpenAIBackend


def backend(*urls, **over) -> OpenAIBackend:
    kw = dict(
        backend="openai",
        model="fake",
        base_urls=list(urls),
        structured_output="json_schema",
        max_retries=0,
        timeout_s=5.0,
        api_key_env="AUTOINTERP_TEST_NO_SUCH_KEY",
    )
    kw.update(over)
    return OpenAIBackend(LLMConfig(**kw))


def ask(text="hi", **kw) -> LLMRequest:
    return LLMRequest(messages=[{"role": "user", "content": text}], **kw)


def run(b: OpenAIBackend, requests):
    return complete_and_close(b, requests)


def content(seen: dict) -> str:
    return seen["body"]["messages"][0]["content"]


def test_retries_5xx_then_succeeds():
    err = reply(500, {"error": {"message": "boom"}}, FAST_RETRY)
    with fake_server(scripted(err, err, reply())) as fake:
        (r,) = run(backend(fake.url, max_retries=3), [ask()])
    assert r.ok, r.error
    assert r.text == "ok" and r.prompt_tokens == 11 and r.output_tokens == 2
    assert len(fake.seen) == 3


def test_5xx_beyond_retries_is_an_error():
    err = reply(503, {"error": {"message": "overloaded"}}, FAST_RETRY)
    with fake_server(scripted(err)) as fake:
        (r,) = run(backend(fake.url, max_retries=2), [ask()])
    assert not r.ok and r.text is None
    assert r.error.startswith("InternalServerError:") and "\n" not in r.error
    assert len(fake.seen) == 3


def test_429_with_retry_after_then_succeeds():
    with fake_server(scripted(reply(429, {"error": {"message": "slow down"}}, FAST_RETRY), reply())) as fake:
        t0 = time.perf_counter()
        (r,) = run(backend(fake.url, max_retries=3), [ask()])
    assert r.ok, r.error
    assert len(fake.seen) == 2
    # The 10 ms retry-after was used: the client's own first backoff is 0.375-0.5 s.
    assert time.perf_counter() - t0 < 0.37


def test_broken_200_bodies_are_errors_and_do_not_stop_others():
    broken = {
        "notjson": reply(raw=b"<html>not json{"),
        "html": reply(raw=b"<html>hello</html>", content_type="text/html"),
        "nochoices": reply(body={"id": "x", "object": "chat.completion", "choices": []}),
        "wrongshape": reply(body={"foo": 1}),
        "nullcontent": reply(body=completion(text=None)),
        "badtypes": reply(body={"choices": "zzz", "usage": 5}),
    }

    def respond(body, headers):
        return broken.get(body["messages"][0]["content"], reply())

    names = ["good0", *broken, "good1"]
    with fake_server(respond) as fake:
        out = run(backend(fake.url), [ask(n) for n in names])
    assert len(out) == len(names)
    for name, r in zip(names, out):
        if name.startswith("good"):
            assert r.ok and r.text == "ok", (name, r.error)
        else:
            assert not r.ok and r.text is None and r.error, name
            assert "\n" not in r.error


def test_slow_server_times_out_quickly():
    with fake_server(scripted(reply(sleep=3.0))) as fake:
        t0 = time.perf_counter()
        (r,) = run(backend(fake.url, timeout_s=0.5, max_retries=0), [ask()])
        elapsed = time.perf_counter() - t0
    assert not r.ok
    assert "timeout" in r.error.lower() or "timed out" in r.error.lower()
    assert elapsed < 1.5
    assert 0.4 < r.latency_s < 1.5


def test_connection_refused_is_an_error():
    with socket.socket() as s:  # a port that was free a moment ago and has no listener
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (r,) = run(backend(f"http://127.0.0.1:{port}/v1"), [ask()])
    assert not r.ok and r.error.startswith("APIConnectionError")


def test_round_robin_over_two_servers():
    with fake_server(scripted(reply())) as a, fake_server(scripted(reply())) as b:
        out = run(backend(a.url, b.url), [ask(f"q{i}") for i in range(6)])
    assert all(r.ok for r in out)
    assert sorted(content(s) for s in a.seen) == ["q0", "q2", "q4"]
    assert sorted(content(s) for s in b.seen) == ["q1", "q3", "q5"]


def test_api_key_is_sent_but_never_shown(monkeypatch, caplog):
    secret = "sk-test-5f0c1d9e7a3b4c2d"
    monkeypatch.setenv("AUTOINTERP_TEST_KEY", secret)
    calls = []

    def respond(body, headers):
        calls.append(headers.get("authorization"))
        if len(calls) == 1:
            return reply()
        # A hostile server that echoes the key back in its error: it must still not leak.
        return reply(401, {"error": {"message": f"invalid key {headers.get('authorization')}"}})

    caplog.set_level(logging.DEBUG)  # the openai client's and httpx's debug logs too
    with fake_server(respond) as fake:
        b = backend(fake.url, api_key_env="AUTOINTERP_TEST_KEY", max_concurrency=1)
        ok, bad = run(b, [ask("a"), ask("b")])
    assert calls == [f"Bearer {secret}"] * 2
    assert ok.ok and not bad.ok
    assert bad.error.startswith("AuthenticationError") and "invalid key" in bad.error
    for shown in (bad.error, json.dumps(b.describe()), repr(b), caplog.text):
        assert secret not in shown
    assert b.describe() == {"backend": "openai", "model": "fake", "base_urls": [fake.url]}


def test_missing_key_sends_a_placeholder(monkeypatch):
    monkeypatch.delenv("AUTOINTERP_TEST_KEY", raising=False)
    with fake_server(scripted(reply())) as fake:
        (r,) = run(backend(fake.url, api_key_env="AUTOINTERP_TEST_KEY"), [ask()])
    assert r.ok and fake.seen[0]["headers"]["authorization"] == "Bearer unused"


def test_cached_tokens_when_the_server_says_and_none_when_not():
    def respond(body, headers):
        return reply(body=completion(cached=7)) if body["messages"][0]["content"] == "cached" else reply()

    with fake_server(respond) as fake:
        cached, plain = run(backend(fake.url), [ask("cached"), ask("plain")])
    assert cached.cached_tokens == 7
    assert plain.ok and plain.cached_tokens is None


def test_concurrency_is_bounded():
    with fake_server(scripted(reply(sleep=0.2))) as fake:
        t0 = time.perf_counter()
        out = run(backend(fake.url, max_concurrency=2), [ask(f"q{i}") for i in range(6)])
        elapsed = time.perf_counter() - t0
    assert all(r.ok for r in out)
    assert [r.text for r in out] == ["ok"] * 6
    assert fake.max_active == 2  # never more, and the bound was actually reached
    assert 0.55 < elapsed < 2.0  # three waves of 0.2 s


def test_request_mapping_on_the_wire():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    req = ask(max_tokens=7, temperature=0.5, json_schema=schema, top_logprobs=3, seed=11)
    bodies = {}
    for mode in ("json_schema", "json_object", "none"):
        with fake_server(scripted(reply())) as fake:
            (r,) = run(backend(fake.url, structured_output=mode), [req])
        assert r.ok, r.error
        bodies[mode] = fake.seen[0]["body"]
    sent = bodies["json_schema"]
    assert sent["model"] == "fake" and sent["messages"] == req.messages
    assert (sent["max_tokens"], sent["temperature"], sent["seed"]) == (7, 0.5, 11)
    assert (sent["logprobs"], sent["top_logprobs"]) == (True, 3)
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": schema, "strict": True},
    }
    assert bodies["json_object"]["response_format"] == {"type": "json_object", "schema": schema}
    assert "response_format" not in bodies["none"]


def test_logprobs_are_parsed_and_capped_at_k():
    def entry(token, lp, alts):
        return {
            "token": token,
            "logprob": lp,
            "bytes": None,
            "top_logprobs": [{"token": t, "logprob": v, "bytes": None} for t, v in alts],
        }

    # Like llama.cpp: the chosen token is appended when it is outside the top k (here k=2).
    lps = {
        "content": [
            entry("1", -0.1, [("1", -0.1), ("0", -2.5)]),
            entry("x", -9.0, [("a", -0.5), ("b", -1.0), ("x", -9.0)]),
        ]
    }
    with fake_server(scripted(reply(body=completion(text="1x", logprobs=lps)))) as fake:
        with_lp, without = run(backend(fake.url), [ask(top_logprobs=2), ask()])
    assert [(t.token, t.logprob) for t in with_lp.logprobs] == [("1", -0.1), ("x", -9.0)]
    assert with_lp.logprobs[0].top == {"1": -0.1, "0": -2.5}
    assert with_lp.logprobs[1].top == {"a": -0.5, "b": -1.0}
    assert without.logprobs is None


def test_backend_survives_successive_event_loops():
    # A CLI may call asyncio.run() once per stage with the same backend.
    with fake_server(scripted(reply())) as fake:
        b = backend(fake.url, max_concurrency=1)  # 1 so that requests wait on the semaphore
        first = asyncio.run(b.complete_many([ask(), ask()]))
        second = run(b, [ask(), ask()])
    assert all(r.ok for r in first + second)
    assert len(fake.seen) == 4
