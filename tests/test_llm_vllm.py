"""VLLMBackend: a real run where vLLM and a GPU exist, and what can be checked without them.

The real test needs vllm, CUDA and a small local model given by AUTOINTERP_VLLM_MODEL (a folder or HF id
already in the local cache). Without vllm, the backend must say what to install. The stand-in tests put a
fake `vllm` module in sys.modules: they check our mapping to and from vLLM's objects (one batched chat
call, sampling parameters, output parsing), not vLLM itself.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
import types
from dataclasses import dataclass

import pytest

from autointerp.engine.config import LLMConfig
from autointerp.engine.interpretation.llm import make_backend
from autointerp.engine.interpretation.llm.base import LLMConfigError, LLMRequest
from autointerp.engine.interpretation.llm.vllm_engine import VLLMBackend

LABELS_SCHEMA = {
    "type": "object",
    "properties": {
        "labels": {"type": "array", "items": {"type": "integer", "enum": [0, 1]}, "minItems": 3, "maxItems": 3}
    },
    "required": ["labels"],
}
# Long enough to fill several of vLLM's 16-token KV blocks, so a repeat is served from the prefix cache.
SYSTEM = "You label sentences. " + " ".join(f"Rule {i}: answer with JSON only, never with prose." for i in range(12))


def run(backend, requests):
    return asyncio.run(backend.complete_many(requests))


def test_without_vllm_the_backend_says_what_to_install():
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed")
    for make in (VLLMBackend, make_backend):
        with pytest.raises(LLMConfigError, match="vllm") as err:
            make(LLMConfig(backend="vllm"))
        assert "pip install" in str(err.value)


@pytest.fixture(scope="module")
def real_backend():
    pytest.importorskip("vllm")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("vllm needs a CUDA GPU")
    model = os.environ.get("AUTOINTERP_VLLM_MODEL")
    if not model:
        pytest.skip("set AUTOINTERP_VLLM_MODEL to a small local chat model to run vLLM for real")
    backend = VLLMBackend(LLMConfig(backend="vllm", model=model, gpu_memory_utilization=0.3))
    yield backend
    asyncio.run(backend.aclose())


def test_real_vllm_schema_logprobs_and_accounting(real_backend):
    def req(text, **kw):
        return LLMRequest([{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}], **kw)

    schema_req = req("Label 'cat', 'dog', 'car' with 0 or 1.", max_tokens=40, json_schema=LABELS_SCHEMA)
    lp_req = req("Say one word.", max_tokens=4, top_logprobs=5)
    first = run(real_backend, [schema_req, lp_req])
    assert [r.error for r in first] == [None, None]
    labels = json.loads(first[0].text)["labels"]
    assert len(labels) == 3 and set(labels) <= {0, 1}
    for r in first:
        assert r.prompt_tokens > 64 and r.output_tokens > 0 and r.latency_s > 0
        assert isinstance(r.cached_tokens, int)
    assert len(first[1].logprobs) == first[1].output_tokens
    assert all(1 <= len(t.top) <= 5 for t in first[1].logprobs)
    # The same prompt again: its shared prefix now comes from vLLM's prefix cache.
    (again,) = run(real_backend, [schema_req])
    assert again.ok and again.cached_tokens >= 48


# Stand-in vLLM: just the objects VLLMBackend touches, shaped as vllm/outputs.py and vllm/logprobs.py.


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


def install_fake_vllm(monkeypatch, *, structured_outputs=True, chat_error=None):
    calls = []

    class SamplingParams:
        def __init__(self, **kw):
            if kw.get("max_tokens", 1) < 1:
                raise ValueError("max_tokens must be at least 1,\ngot 0")
            self.kw = kw

    class LLM:
        def __init__(self, **kw):
            calls.append(("LLM", kw))

        def chat(self, conversations, params, use_tqdm=True):
            calls.append(("chat", conversations, params, use_tqdm))
            if chat_error:
                raise chat_error
            outs = []
            for messages, p in zip(conversations, params):
                constrained = "structured_outputs" in p.kw or "guided_decoding" in p.kw
                text = '{"labels": [0, 1, 0]}' if constrained else "hi there"
                ids = [5, 6, 7]
                logprobs = None
                if p.kw["logprobs"]:  # k likeliest plus the sampled token: here id 7 is sampled outside them
                    logprobs = [
                        {i: Logprob(-0.1, 1, f"t{i}"), 100: Logprob(-2.0, 2, "alt"), 101: Logprob(-3.0, 3, "alt")}
                        for i in ids[:2]
                    ]
                    logprobs.append(
                        {100: Logprob(-0.2, 1, "alt"), 101: Logprob(-1.0, 2, "b"), 7: Logprob(-9.0, 50, "t7")}
                    )
                comp = types.SimpleNamespace(text=text, token_ids=ids, logprobs=logprobs, finish_reason="stop")
                outs.append(
                    types.SimpleNamespace(
                        prompt_token_ids=list(range(4 * len(messages))), num_cached_tokens=4, outputs=[comp]
                    )
                )
            return outs

    class StructuredOutputsParams:
        def __init__(self, json=None):
            self.json = json

    class GuidedDecodingParams(StructuredOutputsParams):
        pass

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams, vllm.__version__ = LLM, SamplingParams, "0.0-fake"
    sp = types.ModuleType("vllm.sampling_params")
    sp.GuidedDecodingParams = GuidedDecodingParams
    if structured_outputs:
        sp.StructuredOutputsParams = StructuredOutputsParams
    vllm.sampling_params = sp
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sp)
    return calls


def test_one_batched_chat_call_and_parsed_outputs(monkeypatch):
    calls = install_fake_vllm(monkeypatch)
    backend = VLLMBackend(LLMConfig(backend="vllm", model="some/model", gpu_memory_utilization=0.5, seed=3))
    assert calls[0] == (
        "LLM",
        {"model": "some/model", "enable_prefix_caching": True, "gpu_memory_utilization": 0.5, "seed": 3},
    )
    reqs = [
        LLMRequest([{"role": "user", "content": "a"}], max_tokens=9, json_schema=LABELS_SCHEMA, seed=1),
        LLMRequest([{"role": "system", "content": "s"}, {"role": "user", "content": "b"}], top_logprobs=2),
    ]
    schema_r, lp_r = run(backend, reqs)
    ((_, conversations, params, use_tqdm),) = calls[1:]
    assert conversations == [r.messages for r in reqs] and use_tqdm is False
    assert params[0].kw["structured_outputs"].json == LABELS_SCHEMA
    assert {k: params[0].kw[k] for k in ("max_tokens", "temperature", "seed", "logprobs")} == {
        "max_tokens": 9,
        "temperature": 0.0,
        "seed": 1,
        "logprobs": None,
    }
    assert params[1].kw["logprobs"] == 2 and "structured_outputs" not in params[1].kw

    assert json.loads(schema_r.text) == {"labels": [0, 1, 0]} and schema_r.logprobs is None
    assert (lp_r.prompt_tokens, lp_r.cached_tokens, lp_r.output_tokens, lp_r.finish_reason) == (8, 4, 3, "stop")
    assert [(t.token, t.logprob) for t in lp_r.logprobs] == [("t5", -0.1), ("t6", -0.1), ("t7", -9.0)]
    assert lp_r.logprobs[2].top == {"alt": -0.2, "b": -1.0}  # capped at k=2: the sampled outsider dropped
    assert schema_r.latency_s == lp_r.latency_s > 0  # equal shares of the batch's time
    assert backend.describe() == {"backend": "vllm", "model": "some/model", "vllm": "0.0-fake"}


def test_older_vllm_guided_decoding_and_failures(monkeypatch):
    calls = install_fake_vllm(monkeypatch, structured_outputs=False)  # vLLM < 0.11
    backend = VLLMBackend(LLMConfig(backend="vllm", model="m"))
    bad = LLMRequest([{"role": "user", "content": "x"}], max_tokens=0)  # SamplingParams rejects it
    good = LLMRequest([{"role": "user", "content": "y"}], json_schema=LABELS_SCHEMA)
    r_bad, r_good = run(backend, [bad, good])
    assert r_bad.error == "ValueError: max_tokens must be at least 1, got 0"
    assert r_good.ok and json.loads(r_good.text)["labels"] == [0, 1, 0]
    (_, conversations, (params,), _) = calls[-1]  # only the valid request reached the engine
    assert conversations == [good.messages] and params.kw["guided_decoding"].json == LABELS_SCHEMA

    install_fake_vllm(monkeypatch, chat_error=RuntimeError("CUDA error: out of memory"))
    backend = VLLMBackend(LLMConfig(backend="vllm", model="m"))
    out = run(backend, [good, good])
    assert [r.error for r in out] == ["RuntimeError: CUDA error: out of memory"] * 2


def test_embedded_model_is_refused(monkeypatch):
    install_fake_vllm(monkeypatch)
    with pytest.raises(LLMConfigError, match="Hugging Face id"):
        VLLMBackend(LLMConfig(backend="vllm"))
