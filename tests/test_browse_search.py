"""The latent list's fast paths against the plain ones they replace: the full-text search aggregated inside SQLite
against one row per hit, and the packed-key sort against numpy's stable argsort."""

import shutil
import sqlite3

import numpy as np
import pytest

from autointerp.store.browse import Browser
from autointerp.store.latent_query import search_latents, search_latents_by_row, stable_argsort
from autointerp.store.synthetic import make_synthetic_db


@pytest.fixture(scope="module")
def two_explainers(tmp_path_factory):
    """A synthetic store with a second explainer whose texts differ (quotes, a shared word, failures) and a gap in
    the latent ids."""
    path = make_synthetic_db(tmp_path_factory.mktemp("search") / "s.db", 400, explained=0.8, seed=7)
    with sqlite3.connect(path) as c:
        rows = [
            (latent, "other", None if latent % 9 == 0 else f'word{latent % 7} "quoted" token{latent % 3}')
            for latent in range(0, 400, 2)
        ]
        c.executemany("insert into explanations (latent, explainer, text) values (?, ?, ?)", rows)
        c.execute("delete from latents where latent between 100 and 119")
    return path


QUERIES = ["token", "tok", "w1", "the token", 'quoted"', "word3", "token2", "nomatchanywhere", "w4 in"]


@pytest.mark.parametrize("explainer", ["default", "other"])
def test_aggregated_search_returns_what_the_row_by_row_search_returns(two_explainers, explainer):
    with sqlite3.connect(two_explainers) as c:
        sizes = []
        for words in QUERIES:
            fast = search_latents(c, words, explainer)
            assert len(np.unique(fast)) == len(fast)  # each latent once
            assert np.array_equal(np.sort(fast), search_latents_by_row(c, words, explainer)), words
            sizes.append(len(fast))
    assert (
        max(sizes) > 100 and 0 in sizes and any(0 < s < max(sizes) / 3 for s in sizes)
    )  # common, absent and rare words


def old_order(path, sort, descending, words, explainer):
    """The order as the browser built it before: np.isin over the row-by-row search, then a stable argsort."""
    browser = Browser.open(path)
    try:
        ids = browser._ids()
        with sqlite3.connect(path) as c:
            chosen = ids[np.isin(ids, search_latents_by_row(c, words, explainer), assume_unique=True)]
        if sort == "latent":
            return (chosen[::-1] if descending else chosen).tolist()
        values = browser._values(sort, explainer)[np.isin(ids, chosen)]
        return chosen[np.argsort(-values if descending else values, kind="stable")].tolist()
    finally:
        browser.close()


@pytest.mark.parametrize("dense", [False, True])
def test_search_order_equals_the_old_order(two_explainers, tmp_path, dense):
    path = two_explainers
    if dense:  # latents 0..n-1: the mask is placed by id
        path = tmp_path / "dense.db"
        shutil.copy(two_explainers, path)
        with sqlite3.connect(path) as c:
            c.execute("delete from latents where latent >= 100")
    browser = Browser.open(path)
    try:
        for explainer in ("default", "other"):
            for words in QUERIES:
                for sort, descending in (
                    ("latent", False),
                    ("latent", True),
                    ("detection", True),
                    ("frequency", False),
                ):
                    got = browser.order(sort, descending, words, explainer).tolist()
                    assert got == old_order(path, sort, descending, words, explainer), (explainer, words, sort)
        assert len(browser.order("latent", False, "token")) > 50
    finally:
        browser.close()


def test_fast_stable_sort_equals_the_stable_argsort():
    """Each path of `stable_argsort`: ranks of few distinct values, packed float32 keys, and their fallback."""
    rng = np.random.default_rng(0)
    n = 20_000
    ties = np.round(rng.random(n) * 20) / 20  # a metric of few values: ties everywhere (the rank path)
    ties[rng.random(n) < 0.1] = np.nan
    ties[:300], ties[300:600] = -0.0, 0.0  # equal to the stable sort
    ties[600:700] = np.inf
    ties[700:800] = -np.inf
    noisy = ties + rng.choice([0.0, 2e-17, 5.5e-17], n)  # 0.15 beside 0.15000000000000002, as real metrics hold
    wide = rng.permutation(100_000) / 1024.0  # > 65,536 distinct values, exact in float32: the packed keys
    wide[rng.random(len(wide)) < 0.05] = np.nan
    wide[:500] = 0.0
    wide[500:1000] = -0.0
    close = rng.random(100_000)
    close[1::2] = close[::2] + 1e-12  # equal in float32, not in float64: the plain sort must run
    small = rng.random(50)  # below the size the fast paths pay off
    for values in (ties, -ties, noisy, -noisy, wide, -wide, close, -close, small, np.full(n, np.nan)):
        assert np.array_equal(stable_argsort(values), np.argsort(values, kind="stable"))
