"""Every command crossed with every kind of bad input: exit status 2, exactly one stderr line (it starts with
`error:`), no traceback, and the database byte for byte as it was (sha256), or still absent.

Commands run in-process through click's CliRunner (a command that raised would show as `exception`, not as an
exit status), except the TUI, which is its own program. The database files are real: copies of a real cache,
damaged the ways files get damaged.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from helpers.databases import copy_db
from helpers.llm_stage import write_stand_in_explanation
from safetensors.torch import save_file

from autointerp.engine.commands.cli import main
from autointerp.store.schema import SCHEMA_VERSION

TINY = ["--seq-len", "32", "--n-tokens", "64", "--batch-size", "2"]
# The real_cache_db fixture's settings: a batch with these finds its cache complete.
CACHE_TOML = "[cache]\nn_tokens = 8192\nchunk_tokens = 4096\nbatch_size = 8\n"


def digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ("dir" if path.is_dir() else None)


# ---- damaged databases ------------------------------------------------------------------------------------------


def modify(db: Path, *statements) -> None:
    """Run SQL on a file and fold its write-ahead log into it, so the file is final before its digest is taken."""
    c = sqlite3.connect(db)
    try:
        for sql in statements:
            c.execute(*sql) if isinstance(sql, tuple) else c.execute(sql)
        c.commit()
        c.execute("pragma wal_checkpoint(truncate)")
    finally:
        c.close()


def make_db(kind: str, good: Path, path: Path) -> Path:
    """A database file of the given kind at `path` (built from a copy of a good cache)."""
    if kind == "missing":
        return path
    if kind == "directory":
        path.mkdir()
        return path
    if kind == "empty":
        path.write_bytes(b"")
        return path
    if kind == "random":
        path.write_bytes(random.Random(0).randbytes(64 * 1024))
        return path
    copy_db(good, path)
    if kind == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "corrupt":  # the root page of the statistics table overwritten with garbage
        modify(path)
        c = sqlite3.connect(path)
        page_size = c.execute("pragma page_size").fetchone()[0]
        root = c.execute("select rootpage from sqlite_master where name = 'latents'").fetchone()[0]
        c.close()
        with open(path, "r+b") as f:
            f.seek((root - 1) * page_size)
            f.write(random.Random(1).randbytes(page_size))
    elif kind == "newer":
        modify(path, ("update meta set value = ? where key = 'schema_version'", [str(SCHEMA_VERSION + 3)]))
    elif kind == "no_version":
        modify(path, "delete from meta where key = 'schema_version'")
    elif kind == "bad_version":
        modify(path, "update meta set value = 'six' where key = 'schema_version'")
    elif kind == "foreign":
        path.unlink()
        modify(path, "create table customers (id integer primary key, name text)")
    elif kind == "unfinished":  # a cache killed inside its statistics pass
        modify(
            path,
            "update stages set done_at = null, detail = '{\"next_latent\": 1000}' where name = 'cache.stats'",
            "delete from stages where name = 'cache'",
            "delete from latents where latent >= 1000",
        )
    elif kind == "no_cache":  # an autointerp database with no cache in it yet
        path.unlink()
        from autointerp.store.db import ActivationStore

        ActivationStore.open(path, create=True).close()
    else:
        assert kind == "good", kind
    return path


# Damaged files every command that reads a database must refuse; "good" marks the commands' other cases.
DAMAGED = ["directory", "empty", "random", "truncated", "corrupt", "newer", "no_version", "bad_version", "foreign"]


@pytest.fixture(scope="module")
def good(real_cache_db, tmp_path_factory):
    """A real cache with two stand-in explanations (so score and export have something to work on)."""
    from autointerp.store.db import ActivationStore

    path = copy_db(real_cache_db, tmp_path_factory.mktemp("good") / "good.db")
    with ActivationStore.open(path) as store:
        live = [r[0] for r in store.db.execute("select latent from latents where n_windows >= 20 order by count desc")]
        for latent in live[:2]:
            write_stand_in_explanation(store.results, latent, f"stand-in explanation of latent {latent}")
    modify(path)
    return path


# ---- running one case ---------------------------------------------------------------------------------------------


def assert_refused(args: list[str], watched: list[Path], *needles: str) -> str:
    """Run the CLI in-process; exactly one stderr line `error: ...`, exit 2, every watched path unchanged."""
    before = {p: digest(p) for p in watched}
    res = CliRunner().invoke(main, args)
    assert res.exception is None or isinstance(res.exception, SystemExit), (args, res.exception)
    assert res.exit_code == 2, (args, res.exit_code, res.stderr, res.stdout)
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (args, res.stderr)
    assert "Traceback" not in res.output
    for needle in needles:
        assert needle in lines[0], (args, lines[0])
    for p, d in before.items():
        assert digest(p) == d, (args, p)
    return lines[0]


def config(tmp_path: Path, db: Path, text: str = "", name: str = "c.toml") -> Path:
    path = tmp_path / name
    path.write_text(f'db = "{db}"\nprofile = "cpu"\n{text}')
    return path


# ---- every command against every damaged database -----------------------------------------------------------------

READERS = {  # command -> arguments around the database path
    "report": lambda db, tmp: ["report", str(db)],
    "info": lambda db, tmp: ["info", str(db)],
    "export": lambda db, tmp: ["export", str(db), "--format", "json", "--out", str(tmp / "x.json")],
    "upgrade": lambda db, tmp: ["upgrade", str(db)],
    "annotate": lambda db, tmp: ["annotate", str(db)],
    "explain": lambda db, tmp: ["explain", "--db", str(db), "--latents", "top:1"],
    "score": lambda db, tmp: ["score", "--db", str(db), "--latents", "top:1", "--scorers", "embedding"],
    "batch": lambda db, tmp: ["batch", str(config(tmp, db, CACHE_TOML + '[batch]\nstages = ["explain"]\n'))],
    "batch --dry-run": lambda db, tmp: ["batch", str(config(tmp, db, CACHE_TOML)), "--dry-run"],
    "cache": lambda db, tmp: ["cache", "--db", str(db), *TINY],
}
# Which commands must refuse which kinds of file (the others accept it: cache and the dry run start a database from
# nothing; a cache left unfinished is finished by `cache`, upgraded by `upgrade`, described by `info`, ...).
SPECIAL = {
    "missing": set(READERS) - {"cache", "batch --dry-run"},
    "empty": set(READERS) - {"cache", "batch --dry-run"},
    "unfinished": {"explain", "score", "batch"},  # the LLM stages need a finished cache
    "no_cache": {"explain", "score", "batch", "export", "annotate"},
}


REFUSALS = [(command, kind) for kind in DAMAGED + sorted(SPECIAL) for command in sorted(SPECIAL.get(kind, READERS))]


@pytest.mark.parametrize(("command", "kind"), REFUSALS)
def test_every_command_refuses_every_damaged_database(command, kind, good, tmp_path):
    db = make_db(kind, good, tmp_path / "db.sqlite")
    line = assert_refused(READERS[command](db, tmp_path), [db, tmp_path / "x.json"])
    assert "Traceback" not in line
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("kind", DAMAGED + ["missing"])
def test_the_tui_refuses_every_damaged_database_before_taking_the_screen(kind, good, tmp_path):
    db = make_db(kind, good, tmp_path / "db.sqlite")
    before = digest(db)
    r = subprocess.run(
        [sys.executable, "-m", "autointerp.tui", str(db)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 2, (kind, r.stdout[-500:], r.stderr[-2000:])
    assert r.stderr.splitlines() == [r.stderr.strip()] and r.stderr.startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr and digest(db) == before


def test_an_older_database_is_refused_by_readers_with_the_way_to_upgrade_it(good, tmp_path):
    db = copy_db(good, tmp_path / "old.db")
    modify(
        db,
        "drop table stages",
        "alter table scores drop column n_retry",
        "update meta set value = '5' where key = 'schema_version'",
    )
    for args in (
        ["info", str(db)],
        ["report", str(db)],
        ["export", str(db), "--out", str(tmp_path / "o.json")],
        ["batch", str(config(tmp_path, db, CACHE_TOML)), "--dry-run"],
    ):
        assert_refused(args, [db], "older", f"autointerp upgrade {db}")
    r = subprocess.run([sys.executable, "-m", "autointerp.tui", str(db)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "autointerp upgrade" in r.stderr


# ---- configs, selections and paths -----------------------------------------------------------------------------------

BAD_CONFIGS = {
    "unknown key": ("[cache]\nn_tokenz = 5\n", "'cache.n_tokenz'"),
    "wrong type": ("[cache]\nseq_len = 'long'\n", "expected int"),
    "bad choice": ("[llm]\nbackend = 'ollama'\n", "'llm.backend'"),
    "not TOML": ("[cache\n", "not valid TOML"),
    "empty stages": ("[batch]\nstages = []\n", "batch.stages"),
    "bad list": ("[batch]\nlatents = [1, -2]\n", "latent ids"),
    "bad scorer": ("[score]\nscorers = ['vibes']\n", "'score.scorers'"),
    "bad kl": ("[score]\nkl_targets = [0.0]\n", "kl_targets"),
    "not UTF-8": ('[llm]\nmodel = "caf\xe9.gguf"\n'.encode("latin-1"), "not valid TOML"),
}


BATCH_ONLY = {"empty stages", "bad list"}  # [batch] settings: only the batch reads them
CONFIG_CASES = [
    (command, case)
    for case in sorted(BAD_CONFIGS)
    for command in ("batch", "batch --dry-run", "cache", "explain", "score", "report")
    if command == "batch" or case not in BATCH_ONLY
]


@pytest.mark.parametrize(("command", "case"), CONFIG_CASES)
def test_bad_configs_name_the_key(command, case, good, tmp_path):
    db = copy_db(good, tmp_path / "db.sqlite")
    text, needle = BAD_CONFIGS[case]
    cfg = config(tmp_path, db, text if isinstance(text, str) else "")
    if isinstance(text, bytes):
        cfg.write_bytes(cfg.read_bytes() + text)
    args = {
        "batch": ["batch", str(cfg)],
        "batch --dry-run": ["batch", str(cfg), "--dry-run"],
        "cache": ["cache", "--config", str(cfg)],
        "explain": ["explain", "--config", str(cfg)],
        "score": ["score", "--config", str(cfg)],
        "report": ["report", str(db), "--config", str(cfg)],
    }[command]
    assert_refused(args, [db], needle)


def test_config_files_that_cannot_be_read(good, tmp_path):
    db = copy_db(good, tmp_path / "db.sqlite")
    latin = tmp_path / "latin.toml"
    latin.write_bytes('db = "caf\xe9.db"\n'.encode("latin-1"))
    for args, needle in (
        (["batch", str(latin)], "not valid TOML"),
        (["batch", str(tmp_path / "none.toml")], "does not exist"),
        (["cache", "--config", str(tmp_path / "none.toml")], "does not exist"),
        (["batch", str(tmp_path)], "is a directory"),
    ):
        assert_refused(args, [db, latin], needle)


BAD_SELECTIONS = {
    "abc": "not a latent id",
    "5-2": "reversed",
    "random:x": "random:N",
    "top:": "top:N",
    "99999": "does not exist",
    "": "not a latent id",
    "1,,2": "not a latent id",
}


@pytest.mark.parametrize("selection", sorted(BAD_SELECTIONS))
def test_bad_selections_are_refused_before_anything_loads_or_writes(selection, good, tmp_path):
    db = copy_db(good, tmp_path / "db.sqlite")
    needle = BAD_SELECTIONS[selection]
    cfg = config(tmp_path, db, CACHE_TOML)
    for args in (
        ["batch", str(cfg), "--latents", selection],
        ["batch", str(cfg), "--latents", selection, "--dry-run"],
        ["explain", "--db", str(db), "--latents", selection],
        ["score", "--db", str(db), "--latents", selection, "--scorers", "embedding"],
    ):
        assert_refused(args, [db], needle)
    # On a fresh path the cache stage is not run first: nothing is created.
    fresh = tmp_path / "fresh.db"
    if selection != "99999":  # a latent past the coder's width is known once the coder is loaded, still unwritten
        assert_refused(["batch", str(config(tmp_path, fresh, name="f.toml")), "--latents", selection], [fresh], needle)
    assert not fresh.exists()


def test_a_selection_matching_no_latent_changes_nothing(good, tmp_path):
    db = copy_db(good, tmp_path / "db.sqlite")
    cfg = config(tmp_path, db, CACHE_TOML)
    assert_refused(["batch", str(cfg), "--latents", "random:0"], [db], "matches no live latent")
    assert_refused(["explain", "--db", str(db), "--latents", "top:0"], [db], "matches no live latent")


def test_bad_database_paths(good, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    under = afile / "db.sqlite"
    for args in (
        ["cache", "--db", str(under), *TINY],
        ["batch", str(config(tmp_path, under))],
        ["cache", "--db", str(tmp_path), *TINY],
    ):
        assert_refused(args, [afile])
    assert afile.read_text() == "x"


def test_bad_export_destinations(good, tmp_path):
    db = copy_db(good, tmp_path / "db.sqlite")
    afile = tmp_path / "afile.txt"
    afile.write_text("keep me")
    for args, needle in (
        (["export", str(db), "--format", "json", "--out", str(afile / "x.json")], "is a file, not a folder"),
        (["export", str(db), "--format", "csv", "--out", str(afile / "deeper" / "x.csv")], "is a file, not a folder"),
        (["export", str(db), "--format", "delphi", "--out", str(afile)], "delphi's layout is a folder"),
        (["export", str(db), "--format", "delphi", "--out", str(afile / "d")], "is a file, not a folder"),
    ):
        assert_refused(args, [db, afile], needle)
    assert afile.read_text() == "keep me"
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert_refused(["export", str(db), "--out", str(locked / "x.json")], [db], "not writable")


def test_bad_output_paths_of_the_other_commands(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for args, needle in (
        (["init", str(afile / "c.toml")], "is a file, not a folder"),
        (["init", str(afile)], "already exists"),
        (["init", str(tmp_path)], "is a directory"),
        (["bench", "cache", "--workdir", str(afile)], "is a file"),
        (["bench", "cache", "--workdir", str(afile / "w")], "is a file, not a folder"),
        (["train-default-sae", "--out", str(afile)], "is a file"),
        (["train-default-sae", "--out", str(afile / "sae")], "is a file, not a folder"),
    ):
        assert_refused(args, [afile], needle)
    assert afile.read_text() == "x"


def test_an_existing_folder_or_a_trailing_slash_exports_into_it(good, tmp_path):
    db = copy_db(good, tmp_path / "db.sqlite")
    folder = tmp_path / "results"
    folder.mkdir()
    for out in (str(folder), str(tmp_path / "new") + "/"):
        res = CliRunner().invoke(main, ["export", str(db), "--format", "json", "--out", out])
        assert res.exit_code == 0, res.output
        written = Path(out) / "db.json"
        assert len(json.loads(written.read_text())) == 2
    assert not (tmp_path / "results.json").exists() and sorted(p.name for p in folder.iterdir()) == ["db.json"]


# ---- model, hook, coder, corpus, LLM ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_coders(tmp_path_factory):
    root = tmp_path_factory.mktemp("coders")
    wide = root / "wide" / "layers.3"
    wide.mkdir(parents=True)
    save_file(
        {
            "encoder.weight": torch.zeros(16, 100),
            "encoder.bias": torch.zeros(16),
            "W_dec": torch.zeros(16, 100),
            "b_dec": torch.zeros(100),
        },
        str(wide / "sae.safetensors"),
    )
    (wide / "cfg.json").write_text(json.dumps({"k": 4, "d_in": 100}))
    broken = root / "broken" / "layers.2"
    broken.mkdir(parents=True)
    (broken / "sae.safetensors").write_bytes(b"\x00" * 64)
    (broken / "cfg.json").write_text("{}")
    unknown = root / "unknown"
    unknown.mkdir()
    return {"wide": wide, "broken": broken, "unknown": unknown}


def corpora(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    short = tmp_path / "short.txt"
    short.write_text("three words only")
    odd = tmp_path / "table.xlsx"
    odd.write_bytes(b"PK\x03\x04")
    bad_jsonl = tmp_path / "bad.jsonl"
    bad_jsonl.write_text('{"text": "fine"}\nnot json\n')
    return {
        "empty": (empty, "no text"),
        "latin": (latin, "not UTF-8"),
        "short": (short, "fewer tokens than one"),
        "odd": (odd, "unsupported file type"),
        "missing": (tmp_path / "gone.jsonl", "does not exist"),
        "bad_jsonl": (bad_jsonl, "line 2 is not JSON"),
    }


@pytest.mark.parametrize("command", ["cache", "batch"])
def test_unusable_model_hook_coder_or_corpus(command, good, bad_coders, tmp_path):
    db = copy_db(good, tmp_path / "db.sqlite")
    fresh = tmp_path / "fresh.db"

    def args_for(db_path: Path, **cache) -> list[str]:
        if command == "cache":
            flags = [f"--{k.replace('_', '-')}={v}" for k, v in cache.items()]
            return ["cache", "--db", str(db_path), *TINY, *flags]
        body = "[cache]\nseq_len = 32\nn_tokens = 64\nbatch_size = 2\n" + "".join(
            f'{k} = "{v}"\n' for k, v in cache.items()
        )
        return ["batch", str(config(tmp_path, db_path, body, name=f"{len(cache)}{sorted(cache)}.toml"))]

    cases = [
        ({"model": str(tmp_path / "no-model")}, "no-model"),
        ({"model": str(tmp_path / "fake.gguf")}, "does not exist"),
        ({"hook": "blocks.3.hook_nonsense"}, "unknown hook point"),
        ({"hook": "blocks.99.hook_resid_post"}, "only 30 blocks"),
        ({"coder": str(tmp_path / "nope")}, "does not exist"),
        ({"coder": str(bad_coders["wide"])}, "width 576"),
        ({"coder": str(bad_coders["broken"])}, "safetensors"),
        ({"coder": str(bad_coders["unknown"])}, "cannot tell the checkpoint format"),
        ({"coder": "neurons", "hook": "blocks.3.hook_resid_post"}, "mlp.hook_post"),
        (
            {"device": "cuda:7"} if not torch.cuda.is_available() else {"dtype": "float8"},
            "cuda" if not torch.cuda.is_available() else "dtype",
        ),
    ]
    for _name, (path, needle) in corpora(tmp_path).items():
        cases.append(({"corpus": str(path)}, needle))
    for cache, needle in cases:
        assert_refused(args_for(fresh, **cache), [fresh], needle)
        assert not fresh.exists()
    # A database made from other inputs: refused, named, untouched.
    other = tmp_path / "other.txt"
    other.write_text("A different corpus entirely. " * 50)
    for cache, needle in (({"corpus": str(other)}, "corpus_hash"), ({"hook": "blocks.14.hook_resid_post"}, "hook=")):
        assert_refused(args_for(db, **cache), [db], needle)


def test_unusable_llm_settings_are_refused_before_anything_loads_or_writes(good, tmp_path):
    db = copy_db(good, tmp_path / "db.sqlite")
    notgguf = tmp_path / "model.gguf"
    notgguf.write_bytes(b"not a gguf at all")
    cases = {
        f'[llm]\nmodel = "{tmp_path / "none.gguf"}"\n': "does not exist",
        f'[llm]\nmodel = "{notgguf}"\n': "not a GGUF file",
        '[llm]\nbackend = "openai"\nbase_urls = []\n': "base_urls is empty",
        '[llm]\nbackend = "openai"\nbase_urls = ["localhost:8000"]\n': "not an http",
        '[llm]\nbackend = "openai"\nmax_concurrency = 0\n': "max_concurrency",
        "[llm]\nn_ctx = 512\n": "n_ctx",
    }
    for i, (text, needle) in enumerate(cases.items()):
        cfg = config(tmp_path, db, CACHE_TOML + text, name=f"l{i}.toml")
        assert_refused(["batch", str(cfg), "--latents", "top:1"], [db], needle)
        assert_refused(["explain", "--config", str(cfg), "--latents", "top:1"], [db], needle)
        assert_refused(["score", "--config", str(cfg), "--latents", "top:1", "--scorers", "detection"], [db], needle)
    assert sqlite3.connect(db).execute("select count(*) from runs").fetchone()[0] == 0
