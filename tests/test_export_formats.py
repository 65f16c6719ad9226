"""The export format registry (engine/commands/export/formats.py): a format is a name -> (module, function) line,
imported only when asked for. A toy format registered here at test time is exported through the same `export` call
the CLI makes, with the shared path checks and whole-file writing of export/common.py."""

from __future__ import annotations

import importlib
import sqlite3
from pathlib import Path

import pytest

from autointerp.engine.commands.export.common import (
    ExportError,
    check_database,
    file_output,
    open_results,
    replace_file,
)
from autointerp.engine.commands.export.flat import flat_rows
from autointerp.engine.commands.export.formats import EXPORT_FORMATS, export
from autointerp.engine.config import Config
from autointerp.store.db import StoreError
from autointerp.store.synthetic import make_synthetic_db


def export_toy(cfg: Config, out) -> dict:
    """The toy format: one line per explained latent, `latent<TAB>explanation`, in a `.toy` file."""
    check_database(cfg)
    path = file_output(out, "toy", cfg.db)
    with open_results(cfg) as store:
        rows = [(r["latent"], r["explanation"]) for r in flat_rows(store, cfg.explain.explainer)]
    replace_file(path, lambda f: f.writelines(f"{latent}\t{text}\n" for latent, text in rows))
    return {"files": 1, "latents": len(rows), "path": str(path)}


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    return make_synthetic_db(tmp_path_factory.mktemp("formats") / "s.db", 40, explained=0.5, seed=3)


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(EXPORT_FORMATS, "toy", (__name__, "export_toy"))


def test_a_format_registered_at_test_time_is_exported(db, tmp_path, toy):
    out = tmp_path / "deep" / "x.toy"
    result = export(Config(db=str(db)), "toy", out)
    lines = out.read_text().splitlines()
    expected = explanations_of(db)  # read here with plain SQL, not the export's own queries
    assert result == {"files": 1, "latents": len(expected), "path": str(out)}
    assert lines == [f"{r['latent']}\t{r['explanation']}" for r in expected] and len(lines) > 0


def test_the_toy_format_gets_the_shared_path_checks(db, tmp_path, toy):
    folder = tmp_path / "folder"
    folder.mkdir()
    written = export(Config(db=str(db)), "toy", folder)  # a folder: `<database name>.toy` inside it
    assert written["path"] == str(folder / "s.toy") and (folder / "s.toy").exists()
    (tmp_path / "taken" / "s.toy").mkdir(parents=True)
    with pytest.raises(ExportError, match="is a folder"):
        export(Config(db=str(db)), "toy", tmp_path / "taken")
    with pytest.raises(StoreError, match="does not exist"):
        export(Config(db=str(tmp_path / "missing.db")), "toy", tmp_path / "y.toy")
    assert not (tmp_path / "y.toy").exists()


def test_unregistered_names_are_refused_and_every_registered_one_resolves():
    assert list(EXPORT_FORMATS) == ["delphi", "json", "csv", "neuronpedia"]  # the order `--format` lists them
    for module, function in EXPORT_FORMATS.values():
        assert callable(getattr(importlib.import_module(module), function))
    with pytest.raises(ValueError, match="unknown export format 'toy'"):
        export(Config(db="x.db"), "toy", "out")


def explanations_of(db: Path) -> list[dict]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "select latent, text from explanations where explainer = 'default' order by latent"
        ).fetchall()
    conn.close()
    return [{"latent": latent, "explanation": text} for latent, text in rows]
