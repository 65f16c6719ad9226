"""Subject models by Hugging Face id with a pinned revision, read offline from a hub cache laid out by the test in
huggingface_hub's own format (models--ORG--NAME/snapshots/REV, refs/main)."""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from autointerp.engine.activations.tiny import tiny_model_folder

REV = "0123456789abcdef0123456789abcdef01234567"
OTHER = "fedcba9876543210fedcba9876543210fedcba98"


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory) -> Path:
    """A hub cache holding `test-org/tiny-llama` at two commits (main -> REV); OTHER is a tiny GPT-2."""
    cache = tmp_path_factory.mktemp("hub") / "hub"
    repo = cache / "models--test-org--tiny-llama"
    for rev, family in ((REV, "llama"), (OTHER, "gpt2")):
        shutil.copytree(tiny_model_folder(f"tiny:{family}")[0], repo / "snapshots" / rev)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REV)
    return cache


def run(hub_cache: Path, *args, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_CACHE=str(hub_cache), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


LOAD = (
    "import sys; from autointerp.engine.activations.model import SubjectModel;"
    "m = SubjectModel.load(sys.argv[1], 'cpu', 'float32');"
    "print(m.name, m.content_hash, m.revision, m.model_type, sep='|')"
)


def test_a_hub_id_loads_at_main_and_at_a_pinned_revision(hub_cache):
    r = run(hub_cache, "-c", LOAD, "test-org/tiny-llama")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().split("|") == [
        "test-org/tiny-llama",
        REV,
        "",
        "llama",
    ]  # the commit main pointed at, recorded
    r = run(hub_cache, "-c", LOAD, f"test-org/tiny-llama@{OTHER}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().split("|") == [f"test-org/tiny-llama@{OTHER}", OTHER, OTHER, "gpt2"]


def test_the_pinned_revision_is_recorded_with_the_cache_and_a_missing_one_is_one_line(hub_cache, tmp_path):
    db = tmp_path / "h.db"
    common = ["--hook", "blocks.1.mlp.hook_post", "--coder", "neurons", "--seq-len", "32", "--n-tokens", "256"]
    cli = ["-m", "autointerp.engine.commands.cli", "cache", "--db", str(db)]
    r = run(hub_cache, *cli, "--model", f"test-org/tiny-llama@{OTHER}", *common, "--no-check")
    assert r.returncode == 0, r.stderr[-2000:]
    with sqlite3.connect(db) as c:
        model, model_hash, model_type, config = c.execute(
            "select model, model_hash, model_type, config from provenance"
        ).fetchone()
    assert (model, model_hash, model_type) == (f"test-org/tiny-llama@{OTHER}", OTHER, "gpt2")
    assert json.loads(config)["model"] == f"test-org/tiny-llama@{OTHER}"
    missing = "0" * 40
    r = run(hub_cache, *cli.copy()[:-1], str(tmp_path / "m.db"), "--model", f"test-org/tiny-llama@{missing}", *common)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [r.stderr.strip()], r.stderr[-2000:]
    assert r.stderr.startswith("error: ") and "test-org/tiny-llama@" + missing in r.stderr
    assert not (tmp_path / "m.db").exists()
