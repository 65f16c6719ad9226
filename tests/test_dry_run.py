"""`batch --dry-run` counts the LLM calls a run makes exactly, stage by stage and scorer by scorer.

The run is real (the real cache, sampler, scorers and subject model for generation's probe) against a scripted local
server that answers every request in the shape its JSON schema asks for, instantly: the calls are counted, not
their quality. Intervention is left out: its count is an upper bound by design (the dry run says so).
"""

from __future__ import annotations

import json
import subprocess
import sys

from helpers.cli import invoke_cli
from helpers.databases import copy_db, rows
from helpers.fake_llm import answer_to_schema, fake_server

SCORERS = ["detection", "fuzzing", "embedding", "simulation", "intruder", "generation"]


def test_the_dry_run_counts_every_call_the_run_makes(real_cache_db, tmp_path):
    db = copy_db(real_cache_db, tmp_path / "x.db")
    with fake_server(answer_to_schema) as fake:
        cfg = tmp_path / "c.toml"
        cfg.write_text(
            f'db = "{db}"\nprofile = "cpu"\n[llm]\nbackend = "openai"\nmodel = "fake"\nbase_urls = ["{fake.url}"]\n'
            'max_retries = 0\ntop_logprobs = 0\n[batch]\nlatents = "top:3"\nstages = ["explain", "score"]\n'
            "[cache]\nn_tokens = 8192\nchunk_tokens = 4096\nbatch_size = 8\n"
            f"[score]\nscorers = {json.dumps(SCORERS)}\nexamples_per_prompt = 3\nsimulation_examples = 5\n"
            "intruder_group = 3\ngeneration_texts = 2\n[sample]\nactivating_per_decile = 3\nn_non_activating = 7\n"
        )
        cmd = [sys.executable, "-m", "autointerp.engine.commands.cli", "batch", str(cfg)]
        plan = json.loads(invoke_cli("batch", cfg, "--dry-run", "--json").stdout)  # in this process: it only reads
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        made = len(fake.seen)
    stages = plan["llm_stages"]
    assert plan["cache"]["complete"] and plan["total"]["exact"] and plan["latents"] == 3
    ((explain_calls,),) = rows(db, "select sum(n_calls) from explanations")
    assert stages["explain"]["calls"] == explain_calls == 3
    for scorer in SCORERS:
        ((calls,),) = rows(db, f"select coalesce(sum(n_calls), 0) from scores where scorer = '{scorer}'")
        assert stages[f"score/{scorer}"]["calls"] == calls, scorer
        assert stages[f"score/{scorer}"]["latents"] == 3
    assert plan["total"]["calls"] == made  # every request the server saw was planned
    # A second plan, after the run, has nothing left: every score is whole.
    again = json.loads(invoke_cli("batch", cfg, "--dry-run", "--json").stdout)
    assert again["total"]["calls"] == 0
