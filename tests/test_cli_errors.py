"""Bad input: one clear error line naming the problem, exit status 2, the database untouched."""

import hashlib
import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from autointerp.engine.commands.cli import main
from autointerp.store.schema import SCHEMA_VERSION

TINY = ["--seq-len", "32", "--n-tokens", "64", "--batch-size", "2"]


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def run(*args):
    return CliRunner().invoke(main, list(args))


def assert_one_error(res, *needles):
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    lines = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, res.output
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture(scope="module")
def cached_db(tmp_path_factory):
    db = tmp_path_factory.mktemp("db") / "a.db"
    res = run("cache", "--db", str(db), *TINY)
    assert res.exit_code == 0, res.output
    return db


def test_unknown_hook(tmp_path, cached_db):
    before = digest(cached_db)
    assert_one_error(
        run("cache", "--db", str(cached_db), "--hook", "blocks.3.hook_nonsense", *TINY), "unknown hook point"
    )
    assert_one_error(
        run("cache", "--db", str(cached_db), "--hook", "blocks.99.hook_resid_post", *TINY), "only 30 blocks"
    )
    assert digest(cached_db) == before


def test_coder_width_mismatch(tmp_path, cached_db):
    folder = tmp_path / "sae" / "layers.3"
    folder.mkdir(parents=True)
    save_file(
        {
            "encoder.weight": torch.zeros(16, 100),
            "encoder.bias": torch.zeros(16),
            "W_dec": torch.zeros(16, 100),
            "b_dec": torch.zeros(100),
        },
        str(folder / "sae.safetensors"),
    )
    (folder / "cfg.json").write_text(json.dumps({"k": 4, "d_in": 100}))
    before = digest(cached_db)
    assert_one_error(run("cache", "--db", str(cached_db), "--coder", str(folder), *TINY), "d_in 100", "width 576")
    assert digest(cached_db) == before


def test_missing_and_corrupt_checkpoints(tmp_path, cached_db):
    before = digest(cached_db)
    assert_one_error(run("cache", "--db", str(cached_db), "--coder", str(tmp_path / "nope"), *TINY), "does not exist")
    folder = tmp_path / "layers.2"
    folder.mkdir()
    (folder / "sae.safetensors").write_bytes(b"\x00" * 64)
    (folder / "cfg.json").write_text("{}")
    assert_one_error(run("cache", "--db", str(cached_db), "--coder", str(folder), *TINY), "safetensors")
    assert digest(cached_db) == before


def test_bad_corpora_leave_no_database(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    db = tmp_path / "x.db"
    assert_one_error(run("cache", "--db", str(db), "--corpus", str(empty), *TINY), "no text")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    assert_one_error(run("cache", "--db", str(db), "--corpus", str(latin), *TINY), "not UTF-8", "latin.txt")
    assert_one_error(run("cache", "--db", str(db), "--corpus", str(tmp_path / "gone.jsonl"), *TINY), "does not exist")
    assert not db.exists()


def test_database_of_another_coder_or_corpus(tmp_path, cached_db):
    before = digest(cached_db)
    assert_one_error(
        run("cache", "--db", str(cached_db), "--coder", "neurons", "--hook", "blocks.3.mlp.hook_post", *TINY), "hook="
    )
    other = tmp_path / "other.txt"
    other.write_text("A different corpus entirely. " * 50)
    assert_one_error(run("cache", "--db", str(cached_db), "--corpus", str(other), *TINY), "corpus_hash")
    assert digest(cached_db) == before


def test_newer_schema(tmp_path, cached_db):
    import shutil
    import sqlite3

    db = tmp_path / "newer.db"
    shutil.copy(cached_db, db)
    with sqlite3.connect(db) as c:
        c.execute("update meta set value = ? where key = 'schema_version'", [str(SCHEMA_VERSION + 5)])
    before = digest(db)
    assert_one_error(run("cache", "--db", str(db), *TINY), "newer than this autointerp")
    assert_one_error(run("info", str(db)), "schema version")
    assert digest(db) == before


def test_config_errors(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[cache]\nn_tokenz = 5\n")
    assert_one_error(run("cache", "--config", str(cfg)), "'cache.n_tokenz'")
    cfg.write_text("[cache]\nseq_len = 'long'\n")
    assert_one_error(run("cache", "--config", str(cfg)), "'cache.seq_len'", "expected int")
    cfg.write_text("[cache\n")
    assert_one_error(run("cache", "--config", str(cfg)), "not valid TOML")


def test_info_reports_cache(cached_db):
    res = run("info", str(cached_db))
    assert res.exit_code == 0, res.output
    assert "blocks.15.hook_resid_post" in res.output and "bytes/activation" in res.output
