"""The README's SAE-vs-neurons recipe, run as written on the embedded default at a small size: two configs that differ
only in the coder (the embedded SAE; the same layer's MLP neurons, top-k sparsified), two batches, then
`autointerp compare`. The LLM is a scripted local server answering in the shape each prompt asks for (the calls are
what is tested here, not their quality); the subject model, coders, caches and scorers are real."""

from __future__ import annotations

import json

import pytest
from helpers.cli import run_cli
from helpers.databases import rows
from helpers.fake_llm import answer_to_schema, fake_server

pytestmark = pytest.mark.slow  # two whole batches through the CLI (about two minutes): run by `pytest -q -m slow`

COMMON = """
[cache]
n_tokens = 4096
chunk_tokens = 4096
batch_size = 8
{coder}
[llm]
backend = "openai"
model = "fake"
base_urls = ["{url}"]
max_retries = 0
top_logprobs = 0
[sample]
n_explain = 6
activating_per_decile = 1
n_non_activating = 6
min_windows = 8
[score]
scorers = ["detection", "embedding"]
examples_per_prompt = 3
[batch]
latents = "random:3"  # the most frequent MLP neurons fire in every window: no negatives, no metric
"""


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("recipe")
    with fake_server(answer_to_schema) as fake:
        for name, coder in (
            ("sae", 'coder = "embedded"'),
            ("neurons", 'coder = "neurons"\nhook = "blocks.15.mlp.hook_post"\nneurons_k = 32'),
        ):
            cfg = d / f"{name}.toml"
            cfg.write_text(f'db = "{d / name}.db"\nprofile = "cpu"\n' + COMMON.format(coder=coder, url=fake.url))
            run = run_cli("batch", cfg, timeout=900)
            assert run.returncode == 0, run.stderr[-3000:]
    return d / "sae.db", d / "neurons.db"


def test_the_two_runs_share_model_and_tokens_and_differ_in_the_coder(two_runs):
    sae, neurons = two_runs
    (a,) = rows(
        sae, "select model, corpus_hash, seq_len, n_tokens_target, hook, coder_kind, num_latents from provenance"
    )
    (b,) = rows(
        neurons, "select model, corpus_hash, seq_len, n_tokens_target, hook, coder_kind, num_latents from provenance"
    )
    assert a[:4] == b[:4]
    assert b[4] == "blocks.15.mlp.hook_post" and b[5] == "neurons" and a[5] != "neurons"
    # The very same token windows went through the model for both.
    assert rows(sae, "select tokens from sequences order by id") == rows(
        neurons, "select tokens from sequences order by id"
    )


def test_compare_reads_both_runs_without_a_warning(two_runs):
    sae, neurons = two_runs
    run = run_cli("compare", sae, neurons, "--json", "--bootstrap", "200")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["same_model_and_tokens"] and result["warnings"] == []
    assert set(result["scorers"]) == {"detection", "embedding"}
    metric = {"detection": "balanced_accuracy", "embedding": "auroc"}
    for scorer, s in result["scorers"].items():
        for side, db in (("a", sae), ("b", neurons)):
            ((n_rows, n_defined),) = rows(
                db, f"select count(*), count({metric[scorer]}) from scores where scorer = '{scorer}' and control = 0"
            )
            assert n_rows == 3, (scorer, side)
            assert s[side]["real"]["n"] == n_defined > 0, (scorer, side)  # undefined metrics are left out, not 0
