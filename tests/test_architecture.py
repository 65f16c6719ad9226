import shutil
import subprocess

import pytest


def test_import_contracts():
    """engine/ and store/ never import Textual; store/ imports no model code; engine's layers import one way
    (commands -> interpretation -> activations) (import-linter)."""
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.fail("import-linter is not installed: pip install -e '.[dev]'")
    res = subprocess.run([exe], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "3 kept, 0 broken" in res.stdout


def test_tui_imports_only_the_store():
    """The TUI reads the store; it never imports the engine (so it starts fast and runs nothing it cannot stop)."""
    from pathlib import Path

    tui = Path(__file__).parents[1] / "tui"
    offenders = [
        f"{f.name}: {line.strip()}"
        for f in sorted(tui.glob("*.py"))
        for line in f.read_text().splitlines()
        if "autointerp.engine" in line and "import" in line
    ]
    assert offenders == []
