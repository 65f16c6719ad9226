import shutil
import subprocess

import pytest


def test_import_contracts():
    """engine/ and store/ never import Textual; store/ imports no model code; engine's layers import one way
    (commands -> interpretation -> activations); the TUI imports only the store; no import cycle among sibling
    modules, function-level and TYPE_CHECKING imports included (import-linter, pyproject.toml)."""
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.fail("import-linter is not installed: pip install -e '.[dev]'")
    res = subprocess.run([exe], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "5 kept, 0 broken" in res.stdout
