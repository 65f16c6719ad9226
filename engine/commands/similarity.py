"""`autointerp similarity A.db B.db`: the latents of two databases matched by what their explanations say (the
paper's "nearby layers are similar").

Every latent with an explanation text (one explainer per side) is embedded with the sentence-embedding model of the
embedding scorer (all-MiniLM-L6-v2, offline); two latents' similarity is the cosine of their unit embeddings. Reported:

- best matches, A -> B and B -> A: each latent's most similar latent on the other side (a blocked search over
  identical texts embedded once: memory is one [block, block] tile plus the embeddings, at any width);
- a one-to-one matching that maximises the summed similarity (the Hungarian algorithm, scipy's
  `linear_sum_assignment`). It is exact while n_A x n_B <= exact_limit^2. Beyond that it is solved in blocks and is
  an approximation: A's latents in order of their best similarity, a block at a time, each block assigned exactly
  among the B latents still free that its rows have in their top k; rows left without a partner are searched again
  against the B latents still free. The summary says which method ran;
- a random control: a random one-to-one pairing (B's explanations shuffled), so a reader sees what chance gives;
- where A and B share a space (same model, hook and d_in) and both coders' checkpoints are still where the caches
  say, with the same content hash: the decoder cosine of each matched pair, and of the random pairs.

The pairs are stored in A (tables `similarity_runs`, `similarity`) in one transaction at the end, unless `store` is
off; B is only read.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autointerp.store import compare_reads as reads
from autointerp.store.db import ActivationStore
from autointerp.store.errors import UserError
from autointerp.store.similarity import write_similarity
from autointerp.store.text import printable

from .report.compare import describe

BLOCK_SIZE = 8192  # rows and columns of one similarity tile: 256 MB of float32
EXACT_LIMIT = 4096  # the exact matching while n_A x n_B <= EXACT_LIMIT^2 (a 134 MB float64 cost matrix)
TOP_K = 8  # candidate partners per latent for the blocked matching
THRESHOLDS = (0.8, 0.9)
HIST_BINS = 10
EMBED_CHUNK = 2048  # texts per progress step
PROVENANCE_BASICS = ("model", "hook", "coder_kind", "num_latents", "d_in")

Progress = Callable[[str, int, int], None]  # (stage, done, total)


class SimilarityError(UserError):
    """Two databases that cannot be matched: no explanations, none from this explainer, an unwritable A."""


@dataclass
class Side:
    path: Path
    explainer: str
    latents: np.ndarray  # ascending ids of the latents with an explanation text
    texts: list[str]
    provenance: dict | None


@dataclass
class SimilarityResult:
    """The summary (what --json prints) and, per A latent that took part, its pairs (-1 / NaN: none)."""

    summary: dict
    latents: np.ndarray
    best: np.ndarray
    best_similarity: np.ndarray
    match: np.ndarray
    match_similarity: np.ndarray
    decoder_cosine: np.ndarray
    run: int | None = None
    seconds: dict = field(default_factory=dict)

    def pairs(self):
        """Rows for the `similarity` table: (latent, best, best_similarity, match, match_similarity, decoder_cosine)
        with None where a value is missing."""
        for i in range(len(self.latents)):
            m = int(self.match[i])
            d = float(self.decoder_cosine[i])
            yield (
                int(self.latents[i]),
                int(self.best[i]),
                float(self.best_similarity[i]),
                m if m >= 0 else None,
                float(self.match_similarity[i]) if m >= 0 else None,
                None if math.isnan(d) else d,
            )


# ---- reading -------------------------------------------------------------------------------------------------


def read_side(store: ActivationStore, explainer: str, option: str) -> Side:
    """A database's explained latents and texts, in latent order; refused in one line when it has none."""
    path, conn = store.path, store.db.conn
    if not reads.holds_explanations(conn):
        raise SimilarityError(f"{path} holds no explanations; run `autointerp explain` first")
    rows = reads.explanation_texts(conn, explainer)
    if not rows:
        held = reads.explainers_explained(conn)
        if explainer in held:
            raise SimilarityError(
                f"{path} holds no explanation text of the {printable(explainer)!r} explainer (every attempt failed)"
            )
        raise SimilarityError(
            f"{path} holds no explanations of the {printable(explainer)!r} explainer (it has "
            f"{printable(', '.join(held))}); choose one with {option}"
        )
    latents = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    return Side(path, explainer, latents, [r[1] for r in rows], store.provenance)


def fingerprint(side: Side) -> str:
    """What identifies the other file's side of a run: its model, hook and coder, and a hash of the explanations
    matched (so a reader can tell that B has changed since)."""
    h = hashlib.sha256()
    for latent, text in zip(side.latents.tolist(), side.texts):
        h.update(f"{latent}\t{text}\n".encode())
    prov = side.provenance or {}
    ident = {k: prov.get(k) for k in ("model", "hook", "coder_hash")}
    return json.dumps({**ident, "explainer": side.explainer, "explanations": h.hexdigest()[:16]}, sort_keys=True)


# ---- embedding ------------------------------------------------------------------------------------------------


def embed_texts(a: Side, b: Side, embedder, progress: Progress | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit embeddings of every distinct text over both sides, once each ([n_distinct, dim] float32), and per
    latent of A and of B the row of its text. Identical texts (A == B, repeated explanations) cost nothing extra."""
    index: dict[str, int] = {}
    a_text = np.fromiter((index.setdefault(t, len(index)) for t in a.texts), np.int64, len(a.texts))
    b_text = np.fromiter((index.setdefault(t, len(index)) for t in b.texts), np.int64, len(b.texts))
    distinct = list(index)
    del index
    parts = []
    if progress is not None:  # the bar shows from the start: the first chunk takes a while
        progress("embedding explanations", 0, len(distinct))
    for start in range(0, len(distinct), EMBED_CHUNK):
        parts.append(np.asarray(embedder.encode(distinct[start : start + EMBED_CHUNK]), dtype=np.float32))
        if progress is not None:
            progress("embedding explanations", min(start + EMBED_CHUNK, len(distinct)), len(distinct))
    return np.concatenate(parts), a_text, b_text


# ---- best matches -------------------------------------------------------------------------------------------


def best_matches(ea, eb, block: int, k: int, progress: Progress | None = None):
    """For each row of `ea`: the k most similar rows of `eb` (values, indices, descending); for each row of `eb`: its
    most similar row of `ea` (value, index). Cosine of unit rows, a [block, block] tile at a time with running
    maxima, so memory does not grow with the widths. Tensors in, numpy out."""
    import torch

    n_a, n_b = ea.shape[0], eb.shape[0]
    k = min(k, n_b)
    top_v = np.empty((n_a, k), np.float32)
    top_i = np.empty((n_a, k), np.int64)
    col_v = torch.full((n_b,), -math.inf, device=eb.device)
    col_i = torch.zeros(n_b, dtype=torch.long, device=eb.device)
    with torch.inference_mode():
        for a0 in range(0, n_a, block):
            a1 = min(a0 + block, n_a)
            q = ea[a0:a1]
            run_v = torch.empty((a1 - a0, 0), device=q.device)
            run_i = torch.empty((a1 - a0, 0), dtype=torch.long, device=q.device)
            for b0 in range(0, n_b, block):
                b1 = min(b0 + block, n_b)
                s = q @ eb[b0:b1].T
                v, i = s.topk(min(k, b1 - b0), dim=1)
                run_v, order = torch.cat([run_v, v], 1).topk(min(k, run_v.shape[1] + v.shape[1]), dim=1)
                run_i = torch.cat([run_i, i + b0], 1).gather(1, order)
                cv, ci = s.max(dim=0)
                better = cv > col_v[b0:b1]  # strict: on a tie the earlier A row stays
                col_v[b0:b1] = torch.where(better, cv, col_v[b0:b1])
                col_i[b0:b1] = torch.where(better, ci + a0, col_i[b0:b1])
                del s
            top_v[a0:a1], top_i[a0:a1] = run_v.cpu().numpy(), run_i.cpu().numpy()
            if progress is not None:
                progress("best matches", a1, n_a)
    # Cosines of unit vectors: clipped to [-1, 1], so float rounding never reports an identical text above 1.
    return np.clip(top_v, -1, 1), top_i, np.clip(col_v.cpu().numpy(), -1, 1), col_i.cpu().numpy()


# ---- the one-to-one matching ---------------------------------------------------------------------------------


def _ranks(groups: np.ndarray) -> np.ndarray:
    """Each element's rank among the elements with the same value, in array order."""
    order = np.argsort(groups, kind="stable")
    sorted_g = groups[order]
    first = np.r_[0, np.flatnonzero(sorted_g[1:] != sorted_g[:-1]) + 1]
    run_start = np.repeat(first, np.diff(np.r_[first, len(groups)]))
    ranks = np.empty(len(groups), np.int64)
    ranks[order] = np.arange(len(groups)) - run_start
    return ranks


class Matcher:
    """The one-to-one matching of A's latents (rows) with B's (columns) by explanation similarity.

    B's latents are grouped by text (`eb` holds one row per distinct text): latents with the same text are
    interchangeable, so a group is handed out in latent order and only its count of free members matters. That
    keeps hub explanations ("punctuation", repeated in thousands of latents) from exhausting the candidate lists."""

    def __init__(self, ea, eb, a_text, b_text, exact_limit: int, k: int, block: int, progress: Progress | None):
        self.ea, self.eb, self.a_text = ea, eb, a_text
        self.exact_limit, self.k, self.block, self.progress = exact_limit, k, block, progress
        self.order_b = np.argsort(b_text, kind="stable")  # B's latents grouped by text, in latent order
        sizes = np.bincount(b_text, minlength=eb.shape[0])
        self.ends = np.cumsum(sizes)
        self.next_free = self.ends - sizes  # members before it are matched
        n_a = len(a_text)
        self.match = np.full(n_a, -1, np.int64)
        self.match_sim = np.full(n_a, np.nan, np.float32)
        self.done = 0
        self.passes = 0

    def _free(self, groups: np.ndarray) -> np.ndarray:
        return self.ends[groups] - self.next_free[groups]

    def assign(self, rows: np.ndarray, groups: np.ndarray, take: np.ndarray) -> np.ndarray:
        """Solve rows against `take[j]` free members of each group `groups[j]` exactly; returns the rows matched."""
        import torch
        from scipy.optimize import linear_sum_assignment

        with torch.inference_mode():
            sims = (self.ea[torch.as_tensor(self.a_text[rows])] @ self.eb[torch.as_tensor(groups)].T).cpu().numpy()
        np.clip(sims, -1, 1, out=sims)
        column_group = np.repeat(np.arange(len(groups)), take)
        r, c = linear_sum_assignment(sims[:, column_group], maximize=True)
        g = column_group[c]
        # Members of a group are interchangeable: the ones matched are its next free ones, in latent order.
        members = self.order_b[self.next_free[groups[g]] + _ranks(g)]
        self.next_free[groups] += np.bincount(g, minlength=len(groups))
        self.match[rows[r]] = members
        self.match_sim[rows[r]] = sims[r, g]
        self.done += len(r)
        if self.progress is not None:
            self.progress("matching", self.done, len(self.a_text))
        return rows[r]

    def exact(self) -> None:
        groups = np.arange(self.eb.shape[0])
        self.assign(np.arange(len(self.a_text)), groups, self._free(groups))

    def blocked(self, top_i: np.ndarray, best_v: np.ndarray) -> None:
        """The approximation beyond the exact limit (see the module doc)."""
        import torch

        rows_per_block = max(1, self.exact_limit // self.k)  # a block's cost matrix: at most exact_limit^2 / k cells
        pending = np.argsort(-best_v[self.a_text], kind="stable")  # the most confident rows choose first
        candidates = top_i  # per distinct A text: B groups, most similar first (-1: none)
        while len(pending):
            free_groups = np.flatnonzero(self.next_free < self.ends)
            if not len(free_groups):
                break  # B has no latent left: the rest of A stays unmatched
            self.passes += 1
            if len(pending) * int(self._free(free_groups).sum()) <= self.exact_limit**2:
                self.assign(pending, free_groups, self._free(free_groups))  # what is left fits: exactly
                break
            if self.passes > 1:  # rows whose candidates were all taken: their top k among B's free latents
                texts = np.unique(self.a_text[pending])
                _, idx, _, _ = best_matches(
                    self.ea[torch.as_tensor(texts)], self.eb[torch.as_tensor(free_groups)], self.block, self.k
                )
                candidates = np.full((self.ea.shape[0], idx.shape[1]), -1, np.int64)
                candidates[texts] = free_groups[idx]
            leftover = []
            matched = 0
            for start in range(0, len(pending), rows_per_block):
                rows = pending[start : start + rows_per_block]
                cand = candidates[self.a_text[rows]].ravel()
                groups, wanted = np.unique(cand[cand >= 0], return_counts=True)
                take = np.minimum(wanted, self._free(groups))  # a group serves at most the rows that want it
                groups, take = groups[take > 0], take[take > 0]
                if not len(groups):
                    leftover.append(rows)
                    continue
                got = self.assign(rows, groups, take)
                matched += len(got)
                leftover.append(rows[~np.isin(rows, got)])
            pending = np.concatenate(leftover) if leftover else pending[:0]
            if matched == 0 and self.passes > 1:
                break  # cannot happen (fresh candidates are free); a guard against looping for ever


# ---- decoder directions --------------------------------------------------------------------------------------


def same_space(pa: dict | None, pb: dict | None) -> bool:
    """Decoder directions are comparable: the same model, hook point and width of the hook's activations."""
    if pa is None or pb is None:
        return False
    return all(pa.get(key) == pb.get(key) for key in ("model", "hook", "d_in"))


def load_decoder(path: Path, prov: dict):
    """The coder's decoder directions [num_latents, d] (the coder loaded as the cache did), or a reason why not."""
    from autointerp.engine.activations.coders import CoderError, load_coder

    kind = prov.get("coder_kind")
    if kind == "neurons":
        return None, "neurons have no decoder directions"
    try:
        coder = load_coder(prov.get("coder_path") or "", kind or "auto")
    except Exception as e:  # CoderError, a damaged file: the report goes on without decoder cosines
        why = str(e) if isinstance(e, CoderError) else f"{type(e).__name__}: {e}"
        return None, f"cannot load the coder of {path} ({why})"
    if coder.content_hash != prov.get("coder_hash"):
        return None, f"the coder at {prov.get('coder_path')} has changed since {path} was cached"
    w = coder.decoder_directions()
    if w is None:
        return None, f"the {kind} coder of {path} has no decoder directions"
    return w.detach().float(), None


def _unit_rows(w, latents: np.ndarray):
    import torch

    rows = w[torch.as_tensor(latents)]
    return rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)


def decoder_cosines(a: Side, b: Side, pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[list | None, str | None]:
    """Per (A latents, B latents) list of pairs: their decoder cosines, or None and the reason there are none."""
    if a.provenance is None or b.provenance is None:
        return None, "a database without provenance: its coder is unknown"
    if not same_space(a.provenance, b.provenance):
        pa, pb = a.provenance, b.provenance
        differ = [key for key in ("model", "hook", "d_in") if pa.get(key) != pb.get(key)]
        return None, f"A and B are not in the same space (different {', '.join(differ)})"
    wa, why = load_decoder(a.path, a.provenance)
    if wa is None:
        return None, why
    same_coder = all(a.provenance.get(k) == b.provenance.get(k) for k in ("coder_path", "coder_kind", "coder_hash"))
    wb, why = (wa, None) if same_coder else load_decoder(b.path, b.provenance)
    if wb is None:
        return None, why
    for side, w in ((a, wa), (b, wb)):
        if len(side.latents) and int(side.latents.max()) >= w.shape[0]:
            return None, f"{side.path} has latent {int(side.latents.max())} but its coder only {w.shape[0]}"
    out = []
    for la, lb in pairs:
        out.append((_unit_rows(wa, la) * _unit_rows(wb, lb)).sum(dim=1).numpy().astype(np.float32))
    return out, None


# ---- the command -------------------------------------------------------------------------------------------------


def distribution(values: np.ndarray, edges: np.ndarray) -> dict:
    """describe() (n, mean, median, std, quartiles), counts above each threshold and a histogram on `edges`."""
    values = values[~np.isnan(values)].astype(np.float64)
    out = describe(values)
    out["above"] = {str(t): int((values > t).sum()) for t in THRESHOLDS}
    out["histogram"] = np.histogram(np.clip(values, edges[0], edges[-1]), edges)[0].tolist()
    return out


def _basics(prov: dict | None) -> dict | None:
    return {k: prov.get(k) for k in PROVENANCE_BASICS} if prov is not None else None


def _warnings(a: Side, b: Side) -> list[str]:
    out = []
    for side in (a, b):
        if side.provenance is None:
            out.append(f"{side.path} has no provenance: no decoder cosine, and which model it explains is unknown")
    if a.provenance is not None and b.provenance is not None and a.provenance.get("model") != b.provenance.get("model"):
        out.append(
            f"{a.path} and {b.path} were made from different models ({a.provenance.get('model')!r} and "
            f"{b.provenance.get('model')!r}): explanations are still compared, decoder directions are not"
        )
    return out


def check_writable(path: Path) -> None:
    """Refuse, before any work, an A the pairs cannot be stored in (SQLite also writes its journal beside it)."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.exists() and not (os.access(path, os.W_OK) and os.access(folder, os.W_OK | os.X_OK)):
        raise SimilarityError(
            f"cannot store the pairs in {path}: the file or its folder is not writable; "
            "pass --no-store to only print the report"
        )


def similarity(
    path_a: str | Path,
    path_b: str | Path,
    *,
    explainer: str = "default",
    other_explainer: str | None = None,
    block_size: int = BLOCK_SIZE,
    exact_limit: int = EXACT_LIMIT,
    top_k: int = TOP_K,
    seed: int = 0,
    store: bool = True,
    device: str = "cpu",
    embedding_model: str = "embedded",
    embedder=None,
    progress: Progress | None = None,
) -> SimilarityResult:
    """Match A's explained latents with B's; stores the pairs in A unless `store` is False. `embedder` (an
    interpretation.embedding.Embedder) may be passed in to reuse a loaded model."""
    import torch

    from autointerp.engine.interpretation.embedding import Embedder

    other_explainer = other_explainer or explainer
    path_a, path_b = Path(path_a), Path(path_b)
    if store:
        check_writable(path_a)
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise SimilarityError(f"--device {device!r} is not a device torch knows (cpu, cuda, cuda:1, ...)") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise SimilarityError(f"--device {device}: no CUDA device here; use --device cpu")
    # Read-only, both: A is opened for writing only at the end, for the one transaction that stores the pairs.
    with ActivationStore.open(path_a, readonly=True) as sa, ActivationStore.open(path_b, readonly=True) as sb:
        a = read_side(sa, explainer, "--explainer")
        b = read_side(sb, other_explainer, "--other-explainer")
    seconds: dict = {}
    t0 = time.perf_counter()
    if embedder is None:
        embedder = Embedder(embedding_model, device=device)
    distinct, a_text, b_text = embed_texts(a, b, embedder, progress)
    seconds["embed"] = time.perf_counter() - t0

    # The search runs over distinct texts: latents with the same explanation share their row.
    t0 = time.perf_counter()
    ua, a_pos = np.unique(a_text, return_inverse=True)
    ub, b_pos = np.unique(b_text, return_inverse=True)
    u = torch.from_numpy(distinct).to(device)
    ea = u[torch.as_tensor(ua, device=u.device)]
    eb = ea if np.array_equal(ua, ub) else u[torch.as_tensor(ub, device=u.device)]
    del u, distinct
    top_v, top_i, col_v, _ = best_matches(ea, eb, block_size, top_k, progress)
    a_first = np.full(len(ua), len(a_pos), np.int64)
    np.minimum.at(a_first, a_pos, np.arange(len(a_pos)))  # the lowest latent of each distinct text stands for it
    b_first = np.full(len(ub), len(b_pos), np.int64)
    np.minimum.at(b_first, b_pos, np.arange(len(b_pos)))
    best = b.latents[b_first[top_i[a_pos, 0]]]
    best_sim = top_v[a_pos, 0]
    b_best_sim = col_v[b_pos]
    seconds["search"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    matcher = Matcher(ea, eb, a_pos, b_pos, exact_limit, top_k, block_size, progress)
    exact = len(a_pos) * len(b_pos) <= exact_limit**2
    if exact:
        matcher.exact()
    else:
        matcher.blocked(top_i, top_v[:, 0])
    matched = matcher.match >= 0
    match = np.where(matched, b.latents[np.maximum(matcher.match, 0)], -1)
    seconds["match"] = time.perf_counter() - t0

    # The control: a random one-to-one pairing of A's explanations with B's (B shuffled).
    rng = np.random.default_rng(seed)
    m = min(len(a_pos), len(b_pos))
    ra, rb = np.sort(rng.permutation(len(a_pos))[:m]), rng.permutation(len(b_pos))[:m]
    control = np.empty(m, np.float32)
    with torch.inference_mode():
        for s in range(0, m, block_size):
            x = ea[torch.as_tensor(a_pos[ra[s : s + block_size]])]
            y = eb[torch.as_tensor(b_pos[rb[s : s + block_size]])]
            control[s : s + block_size] = (x * y).sum(dim=1).clamp(-1, 1).cpu().numpy()

    t0 = time.perf_counter()
    cosines, why = decoder_cosines(a, b, [(a.latents[matched], match[matched]), (a.latents[ra], b.latents[rb])])
    decoder = np.full(len(a_pos), np.nan, np.float32)
    decoder_summary: dict = {"available": cosines is not None, "reason": why}
    all_values = [best_sim, b_best_sim, matcher.match_sim, control]
    low = min(0.0, *(float(np.nanmin(v)) for v in all_values if np.isfinite(v).any()))
    edges = np.linspace(low, 1.0, HIST_BINS + 1)
    if cosines is not None:
        decoder[matched] = cosines[0]
        dec_edges = np.linspace(-1.0, 1.0, HIST_BINS + 1)
        decoder_summary.update(
            edges=dec_edges.tolist(),
            matched=distribution(cosines[0], dec_edges),
            random_pairs=distribution(cosines[1], dec_edges),
        )
    seconds["decoder"] = time.perf_counter() - t0

    settings = {
        "embedding_model": getattr(embedder, "name", embedding_model),
        "block_size": block_size,
        "exact_limit": exact_limit,
        "top_k": top_k,
        "seed": seed,
        "device": str(device),
    }
    summary = {
        "a": {"path": str(path_a), "explainer": explainer, "n": len(a_pos), "provenance": _basics(a.provenance)},
        "b": {"path": str(path_b), "explainer": other_explainer, "n": len(b_pos), "provenance": _basics(b.provenance)},
        "same_space": same_space(a.provenance, b.provenance),
        "warnings": _warnings(a, b),
        "distinct_texts": {"a": len(ua), "b": len(ub)},
        "edges": edges.tolist(),
        "a_to_b": distribution(best_sim, edges),
        "b_to_a": distribution(b_best_sim, edges),
        "matching": {
            "method": "exact" if exact else "blocked",
            "approximate": not exact,
            "passes": matcher.passes,
            "pairs": int(matched.sum()),
            "unmatched_a": int((~matched).sum()),
            **distribution(matcher.match_sim, edges),
        },
        "random_pairs": distribution(control, edges),
        "decoder": decoder_summary,
        "thresholds": list(THRESHOLDS),
    }
    result = SimilarityResult(summary, a.latents, best, best_sim, match, matcher.match_sim, decoder, seconds=seconds)
    if store:
        t0 = time.perf_counter()
        with ActivationStore.open(path_a) as target:
            result.run = write_similarity(
                target.db,
                other_path=str(path_b.resolve()),
                other_fingerprint=fingerprint(b),
                explainer=explainer,
                other_explainer=other_explainer,
                settings=settings,
                summary=summary,
                pairs=result.pairs(),
            )
        seconds["store"] = time.perf_counter() - t0
    summary["settings"] = settings
    summary["run"] = result.run
    summary["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    return result


@contextmanager
def progress_bar() -> Iterator[Progress]:
    """A rich progress bar on stderr, a line per stage, as a `Progress` callback; nothing when stderr is not a
    terminal (a failing command then prints only its error line)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import (
        Progress as RichProgress,
    )

    console = Console(stderr=True)
    bar = RichProgress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
    )
    tasks: dict = {}  # stage -> its rich task id

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    with bar:
        yield update


# ---- the terminal view -----------------------------------------------------------------------------------------


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


BLOCKS = " ▁▂▃▄▅▆▇█"


def sparkline(counts: list[int]) -> str:
    top = max(counts) if counts else 0
    return "".join(BLOCKS[min(8, round(8 * c / top))] if top else BLOCKS[0] for c in counts)


def format_similarity(summary: dict):
    """A rich renderable: who A and B are, one table of the similarity distributions beside the random control, and
    the decoder cosines where A and B share a space."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    # Paths, provenance and explainer names come from files: shown literally, never as markup.
    parts: list = []
    for side in ("a", "b"):
        s = summary[side]
        prov = s["provenance"]
        about = (
            f"model {prov['model']}, hook {prov['hook']}, {prov['num_latents']} latents" if prov else "no provenance"
        )
        parts.append(
            Text(printable(f"{side.upper()}: {s['path']} ({about}); {s['n']:,} explained by {s['explainer']}"))
        )
    st = summary["settings"]
    parts.append(Text(printable(f"explanation similarity: cosine of {st['embedding_model']} embeddings")))
    edges = summary["edges"]
    above = [str(t) for t in summary["thresholds"]]
    table = Table(title="similarity", title_justify="left")
    table.add_column("")
    for col in ("n", "mean", "median", "IQR", *(f"> {t}" for t in above), f"histogram {edges[0]:.2f}..1"):
        table.add_column(col, justify="right")
    m = summary["matching"]
    rows = (
        ("best match A -> B", summary["a_to_b"]),
        ("best match B -> A", summary["b_to_a"]),
        ("one-to-one matching", m),
        ("random pairs (control)", summary["random_pairs"]),
    )
    for label, d in rows:
        iqr = f"[{_num(d['q1'])}, {_num(d['q3'])}]" if d["n"] else "-"
        table.add_row(
            label,
            f"{d['n']:,}",
            _num(d["mean"]),
            _num(d["median"]),
            iqr,
            *(f"{d['above'][t]:,}" for t in above),
            sparkline(d["histogram"]),
        )
    parts.append(table)
    if m["method"] == "exact":
        how = "exact (Hungarian algorithm)"
    else:
        how = (
            f"blocked, approximate: {summary['a']['n']:,} x {summary['b']['n']:,} is over the exact limit "
            f"{st['exact_limit']:,}^2; {m['passes']} pass(es) over blocks, top {st['top_k']} candidates per latent"
        )
    parts.append(Text(f"matching: {how}; {m['pairs']:,} pairs, {m['unmatched_a']:,} of A unmatched"))
    dec = summary["decoder"]
    if dec["available"]:
        d, r = dec["matched"], dec["random_pairs"]
        parts.append(
            Text(
                f"decoder cosine of matched pairs: mean {_num(d['mean'])}, median {_num(d['median'])}, "
                f"> {above[0]}: {d['above'][above[0]]:,}; random pairs: mean {_num(r['mean'])}"
            )
        )
    else:
        parts.append(Text(printable(f"decoder cosine: not computed: {dec['reason']}")))
    if summary["run"] is not None:
        parts.append(Text(printable(f"stored in {summary['a']['path']} as similarity run {summary['run']}")))
    else:
        parts.append(Text("not stored (--no-store)"))
    return Group(*parts)
