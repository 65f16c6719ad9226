"""The backend registry is the one place an LLM backend is declared: a toy backend registered with one line is
accepted by the config, checked by its own `check_config`, made by `make_backend`, and explains and scores through
the real stages on a real cache; what the stage asks of a backend is asked of its attributes, never its name."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from helpers.databases import copy_db
from helpers.llm_stage import FAULT_SAMPLE_SIZES

from autointerp.engine.config import CHOICES, ConfigError, LLMConfig, SampleConfig, ScoreConfig, load_config
from autointerp.engine.interpretation.interpret import Interpreter
from autointerp.engine.interpretation.llm import (
    BACKEND_NAMES,
    BACKENDS,
    LLMBackend,
    LLMConfigError,
    LLMResponse,
    backend_class,
    check_backend_config,
    make_backend,
)
from autointerp.store.db import ActivationStore


class EchoBackend(LLMBackend):
    """Answers from the prompt alone: an explanation counting the excerpts it was shown, a 1 for every excerpt to
    label. Tests-only."""

    name = "echo"

    @classmethod
    def check_config(cls, cfg) -> None:
        if cfg.model != "echo-1":
            raise LLMConfigError(f"llm.model: the echo backend runs echo-1 only, not {cfg.model!r}")

    def __init__(self, cfg):
        self.model = cfg.model
        self.seen: list = []

    async def complete_many(self, requests):
        self.seen += requests
        return [LLMResponse(text=json.dumps(self.answer(r)), prompt_tokens=1, output_tokens=1) for r in requests]

    @staticmethod
    def answer(request) -> dict:
        props = request.json_schema["properties"]
        if "labels" in props:
            return {"labels": [1] * props["labels"]["minItems"]}
        shown = len(re.findall(r"^Excerpt \d+:", request.messages[-1]["content"], re.M))
        return {"explanation": f"echo of {shown} excerpts"}


@pytest.fixture
def echo(monkeypatch):
    monkeypatch.setitem(BACKENDS, EchoBackend.name, (__name__, "EchoBackend"))  # the one line a new backend adds
    return EchoBackend.name


def test_a_registered_backend_is_checked_made_and_answers_the_stages(echo, real_cache_db, tmp_path):
    path = tmp_path / "echo.toml"
    path.write_text(f'[llm]\nbackend = "{echo}"\nmodel = "echo-1"\n')
    cfg = load_config(path)  # the config accepts the registry's names, this one included
    assert echo in BACKEND_NAMES and echo in tuple(CHOICES["llm.backend"])
    with pytest.raises(LLMConfigError, match="the echo backend runs echo-1 only, not 'other'"):
        check_backend_config(LLMConfig(backend=echo, model="other"))
    backend = make_backend(cfg.llm)
    assert isinstance(backend, EchoBackend)

    db = copy_db(real_cache_db, tmp_path / "echo.db")
    cfg.db = str(db)
    cfg.sample = SampleConfig(**FAULT_SAMPLE_SIZES)
    cfg.score = ScoreConfig(scorers=["detection"], examples_per_prompt=1)
    with ActivationStore.open(db) as store:
        interp = Interpreter(cfg, store, backend)
        try:
            latents = interp.select("top:2")
            assert interp.latents_in_flight() == 2  # a backend's defaults: one latent at a time, one preparing
            explained = asyncio.run(interp.run_stage("explain", latents))
            scored = asyncio.run(interp.run_stage("score", latents))
        finally:
            interp.close()
        assert explained.done == scored.done == 2 and explained.failed == scored.failed == 0
        assert all(r.json_schema is not None for r in backend.seen)  # a backend asks for JSON unless it says not
        asked = [r for r in backend.seen if "explanation" in r.json_schema["properties"]]
        texts = []
        for latent in latents:
            row = store.results.explanation(latent, "default")
            n = len(store.results.sample_set(latent).role("explain"))
            assert row["text"] == f"echo of {n} excerpts" and n > 0
            assert (row["backend"], row["model"]) == ("echo", "echo-1")
            assert json.loads(row["settings"])["backend"] == "echo"
            texts.append(row["text"])
        assert sorted(EchoBackend.answer(r)["explanation"] for r in asked) == sorted(texts)
        rows = store.results.scores()
        assert len(rows) == 4 and {r["backend"] for r in rows} == {"echo"}
        assert all(o["prediction"] == 1 for r in rows for o in r["outcomes"])  # its labels, parsed as the scorer's
        assert sum(r["n_calls"] for r in rows) == len(backend.seen) - len(asked)


def test_an_unknown_backend_is_refused_in_one_line_naming_the_registry(tmp_path):
    with pytest.raises(LLMConfigError, match=r"^unknown llm.backend 'nope' \(llamacpp, openai, vllm\)$"):
        make_backend(LLMConfig(backend="nope"))
    path = tmp_path / "nope.toml"
    path.write_text('[llm]\nbackend = "nope"\n')
    with pytest.raises(ConfigError, match="'nope' is not one of llamacpp, openai, vllm"):
        load_config(path)


def test_each_registered_backend_owns_its_name_and_what_the_stage_asks_of_it():
    assert tuple(BACKEND_NAMES) == tuple(CHOICES["llm.backend"]) == ("llamacpp", "openai", "vllm")
    for name in BACKENDS:
        assert backend_class(name).name == name
    openai = backend_class("openai")
    assert not openai.in_process and backend_class("llamacpp").in_process and backend_class("vllm").in_process
    assert backend_class("llamacpp").threads_from_config and not openai.threads_from_config
    made = openai(LLMConfig(backend="openai", structured_output="none", max_concurrency=7))
    assert made.json_output is False and made.parallel_latents == 7 and made.on_cpu is False
    assert openai(LLMConfig(backend="openai")).json_output is True
    with pytest.raises(LLMConfigError, match="is not an http:// or https:// URL"):
        check_backend_config(LLMConfig(backend="openai", base_urls=["ftp://x"]))
