"""`autointerp check`: does the coder fit the model and hook? Loads both as the cache does, runs a few hundred tokens
of the corpus through, and prints the reconstruction's figures and a verdict (engine/activations/reconstruction.py)."""

from __future__ import annotations

import itertools
import time

from autointerp.engine.activations.corpus import CorpusError
from autointerp.engine.activations.reconstruction import (
    FVU_UNUSABLE,
    LOSS_RECOVERED_UNUSABLE,
    ReconstructionCheck,
    measure_reconstruction,
)
from autointerp.engine.config import CacheConfig
from autointerp.store.text import printable


def run_check(cfg: CacheConfig, n_tokens: int, parts=None) -> tuple[ReconstructionCheck, float]:
    """The check over the first `n_tokens` tokens of the corpus (whole sequences of cfg.seq_len, at least one), read
    as the cache reads them. -> (the check, seconds spent loading the model and coder)."""
    from autointerp.engine.activations.cache import sequence_stream
    from autointerp.engine.activations.setup import prepare

    t0 = time.perf_counter()
    parts = parts or prepare(cfg)
    load_s = time.perf_counter() - t0
    n_seqs = max(-(-n_tokens // cfg.seq_len), 1)
    seqs = list(itertools.islice(sequence_stream(parts, cfg), n_seqs))
    if not seqs:
        raise CorpusError(
            f"the corpus holds fewer tokens than one sequence (seq_len = {cfg.seq_len}); "
            "use a bigger corpus or a smaller seq_len"
        )
    return measure_reconstruction(parts, seqs, cfg.batch_size), load_s


def format_check(r: ReconstructionCheck, load_s: float | None = None) -> str:
    """What a researcher reads first, one figure a line."""
    p = printable
    lines = [
        f"model       {p(r.model)}",
        f"hook        {r.hook}, read by the {r.forward} forward"
        + (f": {p(r.forward_reason)}" if r.forward_reason else ""),
        f"coder       {r.coder_kind} {p(r.coder_path) or '(no checkpoint)'}: {r.num_latents:,} latents, d_in {r.d_in}"
        + (", a transcoder" if r.transcoder else ""),
        f"sample      {r.n_tokens:,} tokens ({r.n_sequences} sequences of {r.seq_len}, position 0 left out)",
    ]
    if not r.applies:
        lines.append(f"reconstruction does not apply: {'; '.join(r.advice)}")
        lines.append(f"L0          {r.l0:.1f} active per token; {r.dead_fraction:.1%} never fired on the sample")
        lines.append(f"checked in {r.seconds:.1f}s" + (f" (model and coder loaded in {load_s:.1f}s)" if load_s else ""))
        return "\n".join(lines)
    if r.transcoder:
        lines.append(f"transcoder  reads {r.hook}, predicts {r.target_hook}: compared and spliced there")
    lines.append(
        f"FVU         {_f(r.fvu)}  (fraction of variance unexplained at {r.target_hook}; unusable above {FVU_UNUSABLE})"
    )
    if r.loss_clean is not None:
        recovered = (
            "n/a (zero-ablation does not raise the loss)" if r.loss_recovered is None else f"{r.loss_recovered:.1%}"
        )
        lines.append(
            f"loss        clean {_f(r.loss_clean)}, spliced {_f(r.loss_spliced)}, zero-ablated {_f(r.loss_zero)} "
            f"nats/token; recovered {recovered} (unusable below {LOSS_RECOVERED_UNUSABLE:.0%})"
        )
    else:
        lines.append("loss        n/a (sequences shorter than 3 tokens)")
    lines.append(f"L0          {r.l0:.1f} active latents per token; {r.dead_fraction:.1%} of latents never fired here")
    verdict = {
        "good": "good: the coder reconstructs this hook",
        "weak": f"usable but weak ({'; '.join(r.problems)})",
        "unusable": f"the reconstruction is unusable ({'; '.join(r.problems)}): a wrong hook, a missing input "
        "normalisation or the wrong model",
    }[r.verdict]
    lines.append(f"verdict     {verdict}")
    for a in r.advice:
        lines.append(f"  check:    {p(a)}" if r.unusable else f"  note:     {p(a)}")
    lines.append(f"checked in {r.seconds:.1f}s" + (f" (model and coder loaded in {load_s:.1f}s)" if load_s else ""))
    return "\n".join(lines)


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"
