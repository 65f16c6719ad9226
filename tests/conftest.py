"""Shared fixtures. Stores are made by the real store code; models are the real embedded SmolLM2."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from helpers.batch_config import write_config
from helpers.cli import batch_cmd, invoke_cli
from helpers.stores import fill_store

# Test files that build minutes of shared fixtures (whole batches, LLM scoring), started first and longest first so
# that the two workers do not end on them one after the other (pytest-xdist hands out whole files in this order:
# pyproject's addopts turn off its own reordering by test count). test_batch.py builds the reference batch that
# test_intervals.py and test_retest.py read, while the other worker runs the embedded default.
HEAVY_FIRST = (
    "test_interpret_real.py",
    "test_batch.py",
    "test_batch_faults.py",  # the slow run's longest file (three fault chains)
    "test_scorers_real.py",
    "test_ray_cluster.py",  # slow: the Ray chain
    "test_resume.py",  # slow: kill -9 after every commit
    "test_intervals.py",
    "test_model_hooks.py",
    "test_retest.py",
    "test_tui_keys.py",
    "test_bad_input.py",
    "test_families_cache.py",
    "test_steering.py",
    "test_tui.py",
    "test_generation_planted.py",
)


def pytest_configure(config):
    """The suite runs offline: Hugging Face libraries read these when first imported, and a test that imports one
    before another test sets them would otherwise wait on network timeouts (20 s seen for one `datasets` call).

    Under pytest-xdist, give each worker its own share of the cores (worker i of n: every n-th core from i). Two
    workers that each ran torch and llama.cpp on every core would oversubscribe them: llama.cpp's spinning thread
    barriers and torch's OpenMP pool slow down many times over when their threads outnumber the cores. Batch and
    server processes a test starts inherit the share, and size their thread pools by it."""
    os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    worker = getattr(config, "workerinput", None)
    if worker is None or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    n, i = int(worker["workercount"]), int(worker["workerid"].removeprefix("gw"))
    mine = cores[i::n] or cores
    for tid in os.listdir("/proc/self/task"):  # every thread started so far (numpy's BLAS pool), not just this one
        try:
            os.sched_setaffinity(int(tid), mine)
        except OSError:
            pass  # a thread that just ended
    os.environ["OMP_NUM_THREADS"] = str(len(mine))  # torch, read when it is first imported (after this)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture(autouse=True)
def tui_settings_file(tmp_path_factory, monkeypatch) -> Path:
    """The TUI saves its settings on exit: every test gets its own file, never the real home's."""
    path = tmp_path_factory.mktemp("tui-config") / "tui.toml"
    monkeypatch.setenv("AUTOINTERP_TUI_CONFIG", str(path))
    return path


@pytest.fixture
def filled_store(tmp_path):
    store, truth = fill_store(tmp_path / "t.db")
    yield store, truth
    store.close()


@pytest.fixture(scope="session")
def subject_model():
    """The embedded SmolLM2 through TransformerLens (CPU, fp32), loaded once for every in-process test: each load
    costs ~10 s (weights, then booting the bridge). Tests leave it as they found it (steering removes its hooks)."""
    from autointerp.engine.activations.model import SubjectModel

    return SubjectModel.load("embedded", "cpu", "float32")


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory, request) -> Path:
    """A folder every pytest-xdist worker of this session sees: the workers' common parent (each worker has its
    own base folder under it), or the session's own base folder when the run is not distributed.

    `AUTOINTERP_TEST_SHARED` names a folder that outlives the session instead: `.ci/run` points both of its pytest
    runs (the fast suite, then the slow one) at one fresh folder, so the slow run reuses the batches the fast run
    built (the same code on the same clone) rather than building them again. Leave it unset elsewhere: nothing
    checks that a folder from an earlier session was built by today's code."""
    if os.environ.get("AUTOINTERP_TEST_SHARED"):
        folder = Path(os.environ["AUTOINTERP_TEST_SHARED"])
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    base = tmp_path_factory.getbasetemp()
    return base.parent if hasattr(request.config, "workerinput") else base


def build_once(shared_dir: Path, name: str, build) -> Path:
    """`build(folder)` run once per test session, whichever worker asks first; the others wait on a file lock and
    reuse the folder. A build that raised leaves no done mark, so the next worker to ask builds it again."""
    import shutil

    from filelock import FileLock

    folder = shared_dir / name
    with FileLock(str(shared_dir / f"{name}.lock")):
        if not (folder / ".done").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / ".done").touch()
    return folder


@pytest.fixture(scope="session")
def real_cache_db(shared_dir, subject_model):
    """A real cache: the embedded SmolLM2 + shipped SAE over 8,192 tokens of the embedded corpus, built once per
    session. Tests copy the file (`copy_db`) before writing to it."""
    from autointerp.engine.activations.cache import run_cache
    from autointerp.engine.activations.setup import prepare
    from autointerp.engine.config import CacheConfig

    cfg = CacheConfig(n_tokens=8192, chunk_tokens=4096, batch_size=8)

    def build(folder):
        run_cache(cfg, str(folder / "cache.db"), parts=prepare(cfg, model=subject_model))

    return build_once(shared_dir, "realcache", build) / "cache.db"


# ---- the batch on a small slice of the embedded default, shared by the batch, resume and fault tests ----------


@pytest.fixture(scope="session")
def reference(shared_dir):
    """One uninterrupted batch of the small slice, and the dry-run plan made before it (once per session: the
    tests that compare a resumed or faulted run against it share this one run). -> (db, plan, the run)"""

    def build(d):
        cfg = write_config(d / "c.toml", d / "ref.db")
        plan = invoke_cli("batch", cfg, "--dry-run", "--json")  # in this process: the plan reads, never writes
        assert plan.returncode == 0, plan.stderr
        run = subprocess.run(batch_cmd(cfg), capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-3000:]
        (d / "plan.json").write_text(plan.stdout)
        (d / "run.stderr").write_text(run.stderr)

    d = build_once(shared_dir, "ref", build)
    run = subprocess.CompletedProcess(batch_cmd(d / "c.toml"), 0, "", (d / "run.stderr").read_text())
    return d / "ref.db", json.loads((d / "plan.json").read_text()), run


# ---- comparing whole databases ---------------------------------------------------------------------------------


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache that everything in this process reads, offline (huggingface_hub's module
    constants are read at import, so they are set beside the environment). Layouts: tests/hub_layout.py."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture
def requested(monkeypatch) -> list[str]:
    """The repo files asked of huggingface_hub, in order (a spy: every call goes through)."""
    import huggingface_hub

    asked: list[str] = []
    real = huggingface_hub.hf_hub_download

    def spy(repo_id, filename, **kw):
        asked.append(filename)
        return real(repo_id, filename, **kw)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", spy)
    return asked
