"""`pip install .` (not only -e) gives a working package: the four folders as autointerp.*, the
embedded SAE and the prompts as package data, and both console scripts."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "*.db*")


def test_wheel_installs_and_finds_its_data(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=SKIP)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "w"),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "w").glob("autointerp-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for pkg in (
        "engine",
        "engine/activations",
        "engine/activations/coders",
        "engine/interpretation",
        "engine/interpretation/llm",
        "engine/interpretation/scorers",
        "engine/commands",
        "store",
        "tui",
        "prompts",
    ):
        assert f"autointerp/{pkg}/__init__.py" in names
    assert "autointerp/engine/data/smollm2-135m-topk-sae/layers.15/sae.safetensors" in names
    assert "autointerp/engine/data/smollm2-135m-topk-sae/layers.15/cfg.json" in names
    assert "autointerp/prompts/README.md" in names
    assert {"autointerp/prompts/detection.txt", "autointerp/prompts/explain_default.txt"} <= names
    assert not any(n.startswith(("tests/", "autointerp/tests")) for n in names)
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert (
        "autointerp = autointerp.engine.commands.cli:main" in entry
        and "autointerp-tui = autointerp.tui.launch:main" in entry
    )

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    probe = (
        "import os, autointerp.engine.defaults as d, autointerp.store.db, autointerp.engine.commands.cli;"
        "from autointerp.engine.interpretation.prompts import PromptLibrary; PromptLibrary().get('fuzzing');"
        "print(d.__file__); print(os.path.isfile(os.path.join(d.EMBEDDED_SAE_DIR, 'layers.15', 'sae.safetensors')))"
    )
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    where, found = out.stdout.split()
    assert Path(where).is_relative_to(target) and found == "True"
