"""The latent list's order (sorts, filters, full-text search) in numpy, against the same order written in SQL."""

import sqlite3

import pytest

from autointerp.store.browse import Browser
from autointerp.store.latent_query import BrowseError
from autointerp.store.synthetic import make_synthetic_db


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = make_synthetic_db(tmp_path_factory.mktemp("order") / "s.db", 300, explained=0.7, seed=3)
    with sqlite3.connect(path) as c:  # a gap in the latent ids: the list is not an arange
        c.execute("delete from latents where latent between 40 and 49")
    return path


def sql_order(path, sort, descending, filters=(), words="", explainer="default"):
    """The reference: one SQL statement per order (what the browser ran before it sorted in numpy)."""

    def column(name, args):
        if name in ("latent", "frequency", "max_act", "mean_act", "n_windows", "count"):
            return f"l.{name}"
        scorer, _, metric = name.partition(".")
        args += [explainer, scorer]
        return (
            f"(select s.{metric or 'balanced_accuracy'} from scores s where s.latent = l.latent"
            " and s.explainer = ? and s.scorer = ? and s.control = 0)"
        )

    where, args = [], []
    for name, op, value in filters:
        where.append(f"{column(name, args)} {op} ?")
        args.append(value)
    if words:
        where.append(
            "l.latent in (select e.latent from explanations_fts f join explanations e on e.rowid = f.rowid"
            " where explanations_fts match ? and e.explainer = ?)"
        )
        args += [f'"{words}"*', explainer]
    key_args: list = []
    key = column(sort, key_args)
    sql = f"select l.latent from latents l {'where ' + ' and '.join(where) if where else ''}"
    sql += f" order by {key} is null, {key} {'desc' if descending else 'asc'}, l.latent"
    with sqlite3.connect(path) as c:
        return [r[0] for r in c.execute(sql, args + key_args * 2)]


@pytest.mark.parametrize(
    "sort, descending, query, filters, words",
    [
        ("latent", False, "", (), ""),
        ("latent", True, "", (), ""),
        ("detection", True, "", (), ""),
        ("detection", False, "", (), ""),
        ("fuzzing.recall", True, "", (), ""),
        ("embedding", False, "", (), ""),  # auroc, its primary metric
        ("frequency", True, "detection>=0.6", (("detection", ">=", 0.6),), ""),
        ("max_act", False, "frequency<0.00145 n_windows>21", (("frequency", "<", 0.00145), ("n_windows", ">", 21)), ""),
        ("detection", True, "w1", (), "w1"),
        ("latent", False, "w2 detection<0.7", (("detection", "<", 0.7),), "w2"),
    ],
)
def test_order_equals_the_sql_order(db, sort, descending, query, filters, words):
    browser = Browser.open(db)
    try:
        if sort == "embedding":  # the reference names the metric the browser picks for it
            sort_ref = f"embedding.{browser.scorers()['embedding']}"
        else:
            sort_ref = sort
        got = browser.order(sort, descending, query).tolist()
    finally:
        browser.close()
    want = sql_order(db, sort_ref, descending, filters, words)
    assert got == want
    assert len(got) > 0 and (sort == "latent" or len(set(got)) == len(got))


def test_packed_columns_serve_the_sort_until_a_scores_write_makes_them_stale(db, tmp_path):
    """A finished file's sort columns come from their packed copies (store/columns.py); a score written through
    the store bumps the counter they were packed from, so after a refresh the browser reads the rows again."""
    import shutil

    from autointerp.store.columns import read_score_column, read_stat_column
    from autointerp.store.db import ActivationStore
    from autointerp.store.results import Results

    path = tmp_path / "copy.db"
    shutil.copy(db, path)
    with sqlite3.connect(path) as c:
        packed = read_score_column(c, "default", "detection", "balanced_accuracy")
        want = c.execute(
            "select latent, balanced_accuracy from scores where explainer = 'default' and scorer = 'detection'"
            " and control = 0 order by latent"
        ).fetchall()
        assert packed is not None and [(int(a), float(b)) for a, b in zip(*packed)] == want
        fingerprint = c.execute("select fingerprint from stages where name = 'cache.stats'").fetchone()[0]
        assert read_stat_column(c, "frequency", fingerprint) is not None
        assert read_stat_column(c, "frequency", fingerprint + "x") is None  # other statistics: not this column
        # The packed copy is what the browser sorts by: a change behind the store's back (raw SQL) is not seen.
        worst = c.execute(
            "select latent from scores where scorer = 'detection' and control = 0 order by balanced_accuracy, latent"
        ).fetchone()[0]
        c.execute("update scores set balanced_accuracy = 2.0 where latent = ? and scorer = 'detection'", [worst])
    browser = Browser.open(path)
    try:
        first = browser.order("detection", True).tolist()
        assert first[0] != worst
        store = ActivationStore.open(path)
        try:  # the store's own write path: the score row is rewritten and the counter bumped in one transaction
            row = dict(next(Results(store.db).iter_scores(worst, "default")), balanced_accuracy=3.0, scorer="detection")
            row["control"] = 0
            Results(store.db).write_scores([row])
            assert read_score_column(store.db.conn, "default", "detection", "balanced_accuracy") is None
        finally:
            store.close()
        assert browser.order("detection", True).tolist() == first  # held until a refresh
        browser.refresh()
        assert browser.order("detection", True).tolist()[0] == worst
        with pytest.raises(BrowseError, match="cannot sort by 'nope'"):
            browser.order("nope")
        with pytest.raises(BrowseError, match="unknown column 'nope'"):
            browser.order("latent", False, "nope>1")
    finally:
        browser.close()


def test_order_without_gaps_equals_the_sql_order(tmp_path):
    """Latents 0..n-1 (every finished cache): values are placed by id without a search, from packed columns."""
    path = make_synthetic_db(tmp_path / "dense.db", 250, explained=0.6, seed=5)
    browser = Browser.open(path)
    try:
        for sort, descending, filters in (
            ("detection", True, ()),
            ("embedding", False, ()),
            ("frequency", True, (("detection", ">=", 0.7),)),
        ):
            query = " ".join(f"{c}{op}{v}" for c, op, v in filters)
            ref = f"embedding.{browser.scorers()['embedding']}" if sort == "embedding" else sort
            assert browser.order(sort, descending, query).tolist() == sql_order(path, ref, descending, filters)
    finally:
        browser.close()


def sql_minus_control_order(path, scorer, metric, descending, explainer="default"):
    """The reference for `scorer[.metric]-control`: real minus control joined per latent in SQL."""
    diff = (
        f"(select r.{metric} - c.{metric} from scores r join scores c on c.latent = r.latent"
        " and c.explainer = r.explainer and c.scorer = r.scorer and c.control = 1"
        " where r.latent = l.latent and r.explainer = ? and r.scorer = ? and r.control = 0)"
    )
    sql = f"select l.latent from latents l order by {diff} is null, {diff} {'desc' if descending else 'asc'}, l.latent"
    with sqlite3.connect(path) as c:
        return [r[0] for r in c.execute(sql, [explainer, scorer] * 2)]


@pytest.mark.parametrize(
    "sort, scorer, metric, descending",
    [
        ("detection-control", "detection", "balanced_accuracy", True),
        ("detection-control", "detection", "balanced_accuracy", False),
        ("detection.accuracy-control", "detection", "accuracy", True),
    ],
)
def test_minus_control_order_equals_the_sql_order(db, sort, scorer, metric, descending):
    browser = Browser.open(db)
    try:
        got = browser.order(sort, descending).tolist()
        filtered = browser.order("latent", False, f"{sort}>0.1").tolist()
    finally:
        browser.close()
    want = sql_minus_control_order(db, scorer, metric, descending)
    assert got == want
    with sqlite3.connect(db) as c:  # the control exists in the fixture and moves the order off the plain metric
        assert c.execute("select count(*) from scores where control = 1 and scorer = ?", [scorer]).fetchone()[0] > 0
    assert got != sql_order(db, f"{scorer}.{metric}", descending)
    # The same column filters: latents whose margin over the control is above 0.1, by id.
    with sqlite3.connect(db) as c:
        above = [
            r[0]
            for r in c.execute(
                f"select r.latent from scores r join scores c using (latent, explainer, scorer) where r.control = 0"
                f" and c.control = 1 and r.explainer = 'default' and r.scorer = ? and r.{metric} - c.{metric} > 0.1"
                " and r.latent in (select latent from latents) order by r.latent",
                [scorer],
            )
        ]
    assert filtered == above and 0 < len(above) < len(got)
