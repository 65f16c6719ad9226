"""`autointerp compare A.db B.db`: the difference of two runs' scores, its interval and rank test, on hand-made
databases whose differences are known exactly."""

import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys

import pytest

from autointerp.engine.commands.report.compare import CompareError, compare
from autointerp.store.synthetic import SCORERS, make_synthetic_db

SHIFT = 0.1


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def edited_copy(src, dst, *statements):
    """A copy of `src` with some SQL applied (the store closed both, so the copy is the whole database)."""
    shutil.copy(src, dst)
    with sqlite3.connect(dst) as conn:
        for sql in statements:
            conn.execute(sql)
    conn.close()
    return dst


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "autointerp.engine.commands.cli", "compare", *map(str, args)],
        capture_output=True,
        text=True,
    )


@pytest.fixture(scope="module")
def db_a(tmp_path_factory):
    return make_synthetic_db(tmp_path_factory.mktemp("a") / "a.db", 250, explained=0.9, seed=1)


@pytest.fixture(scope="module")
def db_shifted(db_a, tmp_path_factory):
    """A's scores with detection's balanced accuracy raised by exactly SHIFT for every latent's real explanation."""
    return edited_copy(
        db_a,
        tmp_path_factory.mktemp("b") / "b.db",
        f"update scores set balanced_accuracy = balanced_accuracy + {SHIFT} where scorer = 'detection' and control = 0",
    )


def test_same_database_differs_by_nothing(db_a):
    result = compare(db_a, db_a, n_boot=500)
    assert set(result["scorers"]) == set(SCORERS)
    assert result["same_model_and_tokens"] and result["warnings"] == []
    assert result["only_in_a"] == result["only_in_b"] == []
    for s in result["scorers"].values():
        d = s["difference"]
        assert d["mean"] == 0.0 and s["control_difference"] == 0.0
        assert d["ci_low"] <= 0.0 <= d["ci_high"]
        assert d["p_value"] > 0.99
        assert s["a"] == s["b"]


def test_a_known_shift(db_a, db_shifted):
    result = compare(db_a, db_shifted, n_boot=1000, seed=3)
    detection = result["scorers"]["detection"]
    assert detection["metric"] == "balanced_accuracy"
    d = detection["difference"]
    assert d["mean"] == pytest.approx(SHIFT, abs=1e-9)
    assert d["ci_low"] < SHIFT < d["ci_high"] and d["ci_low"] > 0
    assert d["p_value"] < 1e-4 and d["p_b_greater"] > 0.5
    assert detection["b"]["real"]["median"] == pytest.approx(detection["a"]["real"]["median"] + SHIFT, abs=1e-9)
    assert detection["control_difference"] == 0.0  # only the real explanations moved
    assert result["scorers"]["embedding"]["metric"] == "auroc"
    assert result["scorers"]["fuzzing"]["difference"]["mean"] == 0.0
    # The same seed, the same interval.
    assert compare(db_a, db_shifted, n_boot=1000, seed=3)["scorers"]["detection"]["difference"] == d


def test_cli_json_and_table(db_a, db_shifted):
    res = cli(db_a, db_shifted, "--json", "--bootstrap", "500")
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    d = result["scorers"]["detection"]["difference"]
    assert d["mean"] == pytest.approx(SHIFT, abs=1e-9) and d["ci_low"] > 0
    assert result["bootstrap"]["resamples"] == 500

    res = cli(db_a, db_shifted, "--bootstrap", "500")
    assert res.returncode == 0, res.stderr
    for scorer in SCORERS:
        assert scorer in res.stdout
    assert "B - A: +0.100 [" in res.stdout and "(bootstrap, 500)" in res.stdout


def test_bad_input_is_one_error_line(db_a, tmp_path):
    empty = edited_copy(db_a, tmp_path / "empty.db", "delete from scores")
    for a, b, needle in (
        (db_a, tmp_path / "missing.db", "does not exist"),
        (empty, db_a, "holds no scores; run `autointerp batch` first"),
    ):
        before = {p: digest(p) for p in (a, b) if p.exists()}
        res = cli(a, b)
        assert res.returncode == 2, res.stderr
        lines = res.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], res.stderr
        assert {p: digest(p) for p in (a, b) if p.exists()} == before
    assert not (tmp_path / "missing.db").exists()


def test_nothing_to_compare(db_a, tmp_path):
    renamed = edited_copy(db_a, tmp_path / "renamed.db", "update scores set scorer = 'other_' || scorer")
    with pytest.raises(CompareError, match="no scorer in common"):
        compare(db_a, renamed)
    with pytest.raises(CompareError, match="no scores of the 'cot' explainer"):
        compare(db_a, db_a, explainer="cot")
    partial = edited_copy(db_a, tmp_path / "partial.db", "delete from scores where scorer = 'fuzzing'")
    result = compare(db_a, partial, n_boot=100)
    assert result["only_in_a"] == ["fuzzing"] and "fuzzing" not in result["scorers"]


def test_other_model_is_a_warning(db_a, tmp_path):
    other = edited_copy(db_a, tmp_path / "other.db", "update provenance set model = 'other'")
    result = compare(db_a, other, n_boot=100)
    assert not result["same_model_and_tokens"]
    assert len(result["warnings"]) == 1 and "different models" in result["warnings"][0]
    assert result["b"]["provenance"]["model"] == "other"
    assert result["scorers"]["detection"]["difference"]["mean"] == 0.0  # still compared
