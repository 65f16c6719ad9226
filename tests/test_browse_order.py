"""The latent list's order (sorts, filters, full-text search) in numpy, against the same order written in SQL."""

import sqlite3

import pytest

from autointerp.store.browse import BrowseError, Browser
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


def test_a_refresh_reads_changed_scores_and_bad_names_are_refused(db, tmp_path):
    import shutil

    path = tmp_path / "copy.db"
    shutil.copy(db, path)
    browser = Browser.open(path)
    try:
        first = browser.order("detection", True).tolist()
        with sqlite3.connect(path) as c:  # the worst-scored latent becomes the best
            top = c.execute(
                "select latent from scores where scorer = 'detection' and control = 0"
                " order by balanced_accuracy, latent limit 1"
            ).fetchone()[0]
            c.execute(
                "update scores set balanced_accuracy = 2.0 where latent = ? and scorer = 'detection' and control = 0",
                [top],
            )
        assert first[0] != top
        assert browser.order("detection", True).tolist() == first  # held until a refresh
        browser.refresh()
        assert browser.order("detection", True).tolist()[0] == top
        with pytest.raises(BrowseError, match="cannot sort by 'nope'"):
            browser.order("nope")
        with pytest.raises(BrowseError, match="unknown column 'nope'"):
            browser.order("latent", False, "nope>1")
    finally:
        browser.close()
