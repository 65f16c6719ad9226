"""Does the sparse coder fit the model and hook? Its reconstruction, measured on a few hundred tokens.

Before hours of caching, the first things a researcher checks: the fraction of variance the coder leaves
unexplained at its hook (FVU), the next-token loss with the reconstruction spliced into the forward pass beside the
clean loss and the loss with the hook zero-ablated (and the share of that gap the reconstruction recovers), how many
latents are active per token (L0) and how many never fire on the sample. A coder read at the wrong hook, without the
input normalisation it was trained with, or on another model gives an FVU near or above 1 and recovers little of
the loss: `verdict` says so in words, before anything is cached (`autointerp check`, and the first batch of
`autointerp cache` / `batch`).

The figures are over the tokens the cache encodes: position 0 (the start token, an attention sink the cache never
stores) is left out and left as it was in every forward pass. The activations encoded are the ones the cache reads
(`SubjectModel.hook_activations`, the forward `forward_kind` names); the three losses come from TransformerLens's
bridge, the reconstruction (or zeros) written over positions 1.. of the hook with a forward hook. A transcoder reads
the MLP's input and predicts its output: its FVU is against `blocks.N.hook_mlp_out` and its splice replaces the MLP
output. Neurons are the hook's own activations: reconstruction does not apply to them.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from autointerp.store.errors import UserError

from .model import hook_from_module_path
from .setup import CacheParts

# The verdict's thresholds. A usable SAE leaves well under half of the variance at its hook unexplained and keeps
# most of what the hook carries for the next-token loss; one read at the wrong place or scale does neither.
FVU_UNUSABLE = 0.5  # above: the reconstruction is unusable
LOSS_RECOVERED_UNUSABLE = 0.5  # below: the reconstruction is unusable
FVU_WEAK = 0.3  # above (and not unusable): usable, but weak
LOSS_RECOVERED_WEAK = 0.8  # below (and not unusable): usable, but weak
MIN_LOSS_GAP = 0.05  # nats: a zero-ablation raising the loss less than this makes "loss recovered" noise, not judged

CHECK_TOKENS = 512  # `autointerp check`'s sample, by default
CACHE_CHECK_TOKENS = 256  # the cache's check: at most this many tokens of its first batch (3 full forwards of them)
LOGITS_BYTES = 1 << 29  # one forward's fp32 logits at most this large: a batch is split into smaller passes


class ReconstructionError(UserError):
    """The coder's reconstruction at its hook is unusable (the cache's check, before anything is written)."""


@dataclass
class ReconstructionCheck:
    """What `autointerp check` prints: where the coder reads, and how well it reconstructs there."""

    model: str
    hook: str  # where the coder reads
    forward: str  # "plain" | "bridge": the forward that gives the cache its activations at `hook`
    forward_reason: str
    coder_kind: str
    coder_path: str
    d_in: int
    num_latents: int
    transcoder: bool
    target_hook: str  # where the reconstruction is compared and spliced in (the MLP output for a transcoder)
    applies: bool  # False for neurons: they are the hook's activations, nothing is reconstructed
    n_sequences: int
    seq_len: int
    n_tokens: int  # tokens measured: every position but 0 of each sequence
    fvu: float | None = None  # sum |x - x_hat|^2 / sum |x - mean(x)|^2 over the tokens
    loss_clean: float | None = None  # mean next-token cross-entropy (nats), positions 1.. predicting 2..
    loss_spliced: float | None = None  # the same with the reconstruction written over the hook
    loss_zero: float | None = None  # the same with the hook's activations zeroed
    loss_recovered: float | None = None  # (zero - spliced) / (zero - clean)
    l0: float = 0.0  # mean active latents per token
    dead_fraction: float = 0.0  # latents that never fired on the sample (rare ones look dead on a small sample)
    bridge_difference: float | None = None  # |bridge's activation - the cache's| / |the cache's| at target_hook
    verdict: str = ""  # "good" | "weak" | "unusable" | "not applicable"
    problems: list[str] = field(default_factory=list)  # what made it weak or unusable, figure against threshold
    advice: list[str] = field(default_factory=list)  # what to check
    seconds: float = 0.0

    @property
    def unusable(self) -> bool:
        return self.verdict == "unusable"

    def to_json(self) -> dict:
        return dict(
            asdict(self),
            thresholds={
                "fvu_unusable": FVU_UNUSABLE,
                "loss_recovered_unusable": LOSS_RECOVERED_UNUSABLE,
                "fvu_weak": FVU_WEAK,
                "loss_recovered_weak": LOSS_RECOVERED_WEAK,
            },
        )

    def figures(self) -> str:
        """The figures in one line (the cache's event, the error line)."""
        if not self.applies:
            return f"{self.coder_kind}: reconstruction does not apply"
        parts = [f"FVU {_num(self.fvu)}"]
        if self.loss_recovered is not None:
            parts.append(f"loss recovered {_num(self.loss_recovered)}")
        if self.loss_clean is not None:
            parts.append(
                f"loss clean {_num(self.loss_clean)} / spliced {_num(self.loss_spliced)} / zero-ablated "
                f"{_num(self.loss_zero)} nats"
            )
        parts.append(f"L0 {self.l0:.1f}")
        return ", ".join(parts)

    def error_line(self) -> str:
        """The cache's one `error:` line for an unusable reconstruction."""
        return (
            f"the {self.coder_kind} coder's reconstruction at {self.target_hook} is unusable on {self.n_tokens} "
            f"tokens ({'; '.join(self.problems)}): a wrong hook, a missing input normalisation or the wrong model; "
            "`autointerp check` with the same settings shows the figures, and --no-check "
            "(cache.check_reconstruction = false) caches anyway"
        )


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def target_hook_of(parts: CacheParts) -> str | None:
    """Where the coder's output lives: its own hook, or a transcoder's MLP output (None: cannot tell)."""
    if not parts.coder.transcoder:
        return parts.hook
    m = re.fullmatch(r"blocks\.(\d+)\.mlp\.hook_in", parts.hook)
    return f"blocks.{m.group(1)}.hook_mlp_out" if m else None


@dataclass
class _Sums:
    """Running sums over the sample (float64)."""

    rows: int = 0
    nnz: int = 0
    sse: float = 0.0
    sum_x: torch.Tensor | None = None
    sum_x2: float = 0.0
    nll_clean: float = 0.0
    nll_spliced: float = 0.0
    nll_zero: float = 0.0
    predictions: int = 0
    diff2: float = 0.0
    norm2: float = 0.0

    def add_target(self, target: torch.Tensor, x_hat: torch.Tensor) -> None:
        t = target.double()
        self.sse += float(((t - x_hat.double()) ** 2).sum())
        s = t.sum(0)
        self.sum_x = s if self.sum_x is None else self.sum_x + s
        self.sum_x2 += float((t**2).sum())

    def fvu(self) -> float | None:
        if self.sum_x is None or self.rows == 0:
            return None
        total = self.sum_x2 - float((self.sum_x**2).sum()) / self.rows  # sum |x - mean(x)|^2
        return self.sse / total if total > 0 else None


def _positions(act: torch.Tensor, B: int, T: int) -> torch.Tensor:
    """[B, T, ...] hook activations as [B, T, width] (a hook with heads, [B, T, n_heads, d_head], concatenated)."""
    return act.reshape(B, T, -1)


def _overwrite(values: torch.Tensor | None, B: int, T: int, sums: _Sums | None, reference: torch.Tensor | None):
    """A TransformerLens hook function writing `values` [B*(T-1), width] (None: zeros) over positions 1.. of its
    hook, position 0 as it was; with `sums`, it also measures how far the bridge's activation is from `reference`
    (the cache's)."""

    def fn(act, hook):
        out = act.clone()
        view = out.view(B, T, -1)
        if sums is not None and reference is not None:
            here = view[:, 1:].reshape(-1, view.shape[-1]).float()
            sums.diff2 += float(((here - reference) ** 2).sum())
            sums.norm2 += float((reference**2).sum())
        if values is None:
            view[:, 1:] = 0
        else:
            view[:, 1:] = values.view(B, T - 1, -1).to(out.dtype)
        return out

    return fn


def _nll(parts: CacheParts, tokens: torch.Tensor, hook: str | None = None, fn=None) -> float:
    """Summed next-token cross-entropy of positions 1..T-2 (predicting tokens 2..T-1) through the bridge, with `fn`
    on `hook` when given. Position 0's prediction is left out: it sees only the start token, which no pass alters."""
    bridge = parts.model.bridge
    hooks = bridge.hooks(fwd_hooks=[(hook, fn)]) if fn is not None else contextlib.nullcontext()
    with hooks:
        logits = bridge(tokens)
    logits = logits[:, 1:-1]
    return float(
        torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), tokens[:, 2:].reshape(-1), reduction="sum"
        )
    )


def measure_reconstruction(parts: CacheParts, sequences: Iterable[np.ndarray], batch_size: int) -> ReconstructionCheck:
    """The check over `sequences` (token id arrays of one length, as the cache reads them), `batch_size` sequences
    per forward pass at most (fewer where one pass's logits would exceed LOGITS_BYTES)."""
    t0 = time.perf_counter()
    seqs = [np.asarray(s) for s in sequences]
    if not seqs:
        raise ValueError("no sequences to check the reconstruction on")
    model, coder, hook = parts.model, parts.coder, parts.hook
    T = len(seqs[0])
    target = target_hook_of(parts)
    applies = coder.kind != "neurons" and target is not None
    result = ReconstructionCheck(
        model=model.name,
        hook=hook,
        forward=model.forward_kind(hook),
        forward_reason=model.forward_reason(hook),
        coder_kind=coder.kind,
        coder_path=coder.path,
        d_in=coder.d_in,
        num_latents=coder.num_latents,
        transcoder=coder.transcoder,
        target_hook=target or hook,
        applies=applies,
        n_sequences=len(seqs),
        seq_len=T,
        n_tokens=len(seqs) * (T - 1),
    )
    sums = _Sums()
    fired = torch.zeros(coder.num_latents, dtype=torch.bool, device=model.device)
    with_loss = applies and T >= 3
    per_pass = max(1, min(batch_size, LOGITS_BYTES // max(T * model.vocab_size * 4, 1)))
    with torch.inference_mode():
        for start in range(0, len(seqs), per_pass):
            tokens = torch.from_numpy(np.stack(seqs[start : start + per_pass])).to(model.device, torch.int64)
            B = tokens.shape[0]
            x = _positions(model.hook_activations(tokens, hook), B, T)[:, 1:].reshape(B * (T - 1), -1).float()
            acts = coder.encode(x)
            sums.rows += x.shape[0]
            sums.nnz += len(acts)
            fired[acts.latents.to(fired.device)] = True
            if not applies:
                continue
            x_hat = coder.decode(acts, x.shape[0], x).float()
            if target is None or target == hook:  # None never gets here: `applies` is False then
                y = x
            else:
                y = _positions(model.hook_activations(tokens, target), B, T)[:, 1:].reshape(B * (T - 1), -1).float()
            sums.add_target(y, x_hat)
            if with_loss:
                sums.nll_clean += _nll(parts, tokens)
                sums.nll_spliced += _nll(parts, tokens, target, _overwrite(x_hat, B, T, sums, y))
                sums.nll_zero += _nll(parts, tokens, target, _overwrite(None, B, T, None, None))
                sums.predictions += B * (T - 2)
    result.l0 = sums.nnz / max(sums.rows, 1)
    result.dead_fraction = 1.0 - float(fired.sum()) / max(coder.num_latents, 1)
    if applies:
        result.fvu = sums.fvu()
        if sums.norm2 > 0:
            result.bridge_difference = math.sqrt(sums.diff2 / sums.norm2)
        if sums.predictions:
            n = sums.predictions
            result.loss_clean, result.loss_spliced, result.loss_zero = (
                sums.nll_clean / n,
                sums.nll_spliced / n,
                sums.nll_zero / n,
            )
            gap = result.loss_zero - result.loss_clean
            if gap > 1e-6:
                result.loss_recovered = (result.loss_zero - result.loss_spliced) / gap
    judge(result, parts)
    result.seconds = time.perf_counter() - t0
    return result


BRIDGE_DIFFERENCE_WARN = 0.01  # the bridge's activation at the hook this far (relative) from the cache's: say so


def judge(r: ReconstructionCheck, parts: CacheParts) -> None:
    """The verdict, what made it, and what to check."""
    coder = parts.coder
    if not r.applies:
        r.verdict = "not applicable"
        if coder.kind == "neurons":
            r.advice.append("neurons are the hook's own activations: reconstruction does not apply (FVU 0)")
        else:
            r.advice.append(
                f"transcoder hook {r.hook!r} is not blocks.N.mlp.hook_in: cannot tell which MLP output it predicts"
            )
        return
    problems, weak = [], []
    if r.fvu is None:
        problems.append("FVU undefined (the activations do not vary over the sample)")
    elif r.fvu > FVU_UNUSABLE:
        problems.append(f"FVU {r.fvu:.2f} > {FVU_UNUSABLE}")
    elif r.fvu > FVU_WEAK:
        weak.append(f"FVU {r.fvu:.2f} > {FVU_WEAK}")
    small_gap = r.loss_zero is not None and r.loss_clean is not None and r.loss_zero - r.loss_clean < MIN_LOSS_GAP
    if r.loss_recovered is not None and not small_gap:
        if r.loss_recovered < LOSS_RECOVERED_UNUSABLE:
            problems.append(f"loss recovered {r.loss_recovered:.2f} < {LOSS_RECOVERED_UNUSABLE}")
        elif r.loss_recovered < LOSS_RECOVERED_WEAK:
            weak.append(f"loss recovered {r.loss_recovered:.2f} < {LOSS_RECOVERED_WEAK}")
    if problems:
        r.verdict, r.problems = "unusable", problems
        named = hook_from_module_path(coder.hook, coder.transcoder) if coder.hook else None
        if named and named != r.hook:
            r.advice.append(f"the checkpoint names hook {coder.hook!r} ({named}), this run reads {r.hook}")
        r.advice += [
            f"the hook: is {r.hook} where the coder was trained (layer and site: resid_pre vs resid_post, MLP in vs "
            "out)?",
            "the input normalisation: SAELens's normalize_activations / norm_scaling_factor in cfg.json, or a scale "
            "the training applied outside the checkpoint",
            f"the model: is {r.model} the one the coder was trained on (not a base / instruct twin, the same "
            "revision and dtype)?",
        ]
        if r.transcoder:
            r.advice.append(f"a transcoder reads {r.hook} and predicts {r.target_hook}: both must be that MLP's")
    elif weak:
        r.verdict, r.problems = "weak", weak
        r.advice.append(
            "usable, but the coder misses a good part of what the model computes here: explanations describe the "
            "coder's latents, not everything the model does at this hook"
        )
    else:
        r.verdict = "good"
    if small_gap:
        r.advice.append(
            f"zero-ablating {r.target_hook} raises the loss by less than {MIN_LOSS_GAP} nats on this sample: the loss "
            "recovered is not judged (FVU is)"
        )
    if r.bridge_difference is not None and r.bridge_difference > BRIDGE_DIFFERENCE_WARN:
        r.advice.append(
            f"TransformerLens's activation at {r.target_hook} differs from the one the cache reads by "
            f"{r.bridge_difference:.1%}: the spliced loss is measured at a slightly different point"
        )
    if r.n_tokens and r.dead_fraction > 0.5:
        r.advice.append(
            f"{r.dead_fraction:.0%} of the latents did not fire on these {r.n_tokens} tokens (rare latents look "
            "dead on a small sample: --n-tokens reads more)"
        )
