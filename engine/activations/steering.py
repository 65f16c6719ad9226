"""Causal steering for intervention scoring: add a latent's decoder direction at its hook point.

The strength is tuned per latent so that the next-token distribution moves by a target KL divergence
(a scale that means the same for every latent, model and coder width), then greedy continuations are
generated clean and steered. Everything runs through TransformerLens hooks on the subject model's
`TransformerBridge`, under `torch.inference_mode()`.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass, field

import torch

from autointerp.store.errors import UserError

from .model import SubjectModel


class SteeringError(UserError):
    """A latent that cannot be steered, stated in one line."""


@dataclass
class SteeringSite:
    hook: str  # TransformerLens hook name the direction is added at
    direction: torch.Tensor  # [d] float32 on the model's device, in that hook's space


def steering_site(coder, hook: str, latent: int) -> SteeringSite:
    """Where and what to add to steer `latent` of `coder`, which reads `hook`."""
    n = int(coder.num_latents)
    if not isinstance(latent, int) or isinstance(latent, bool) or not 0 <= latent < n:
        raise SteeringError(f"latent {latent!r} is out of range: the coder has {n} latents (0..{n - 1})")
    dirs = coder.decoder_directions()
    if dirs is None:
        # Neurons: the "decoder" of neuron i is the unit vector e_i in the MLP's hidden space.
        if not hook.endswith("mlp.hook_post"):
            raise SteeringError(
                f"coder {coder.kind!r} has no decoder directions and hook {hook!r} is not an MLP's hook_post"
            )
        direction = torch.zeros(n, dtype=torch.float32)
        direction[latent] = 1.0
        site_hook = hook
    else:
        direction = dirs[latent].detach().float().clone()
        site_hook = hook
        if coder.transcoder:
            # A transcoder reads the MLP input but its decoder writes (predicts) the MLP output.
            m = re.fullmatch(r"blocks\.(\d+)\.mlp\.hook_in", hook)
            if not m:
                raise SteeringError(
                    f"transcoder hook {hook!r} is not blocks.N.mlp.hook_in: cannot tell where its decoder writes"
                )
            site_hook = f"blocks.{m.group(1)}.hook_mlp_out"
    if not bool(torch.isfinite(direction).all()):
        raise SteeringError(f"decoder direction of latent {latent} has non-finite values (nan/inf)")
    if float(direction.norm()) == 0.0:
        raise SteeringError(f"decoder direction of latent {latent} is all zeros: nothing to steer with")
    return SteeringSite(site_hook, direction)


@dataclass
class StrengthSearch:
    target: float
    strength: float | None  # None when the target was not reached
    kl: float | None  # mean KL reached at that strength
    steps: int  # forward passes used
    error: str | None


@dataclass
class _Clean:
    """What the clean pass over a batch of prompts gives; reused by every strength tried on them."""

    prompts: torch.Tensor
    logprobs: torch.Tensor  # [B, vocab] float64 last-position log-probs
    scale: float  # typical activation norm at the site hook
    evals: list[tuple[float, float]] = field(default_factory=list)  # (strength, KL) measured so far


class Steerer:
    def __init__(self, model: SubjectModel, site: SteeringSite):
        model.check_hook(site.hook)
        width = model.hook_width(site.hook)
        if site.direction.shape != (width,):
            raise SteeringError(
                f"steering direction has shape {tuple(site.direction.shape)}, hook {site.hook!r} has width {width}"
            )
        self.model = model
        self.site = site
        self.direction = site.direction.detach().to(model.device, torch.float32)
        self._cache: _Clean | None = None

    # ---- forward passes -----------------------------------------------------------------------

    def _check(self, prompts: torch.Tensor) -> torch.Tensor:
        if prompts.dim() != 2 or prompts.dtype not in (torch.int64, torch.int32) or prompts.shape[1] < 1:
            raise ValueError(f"prompts must be [B, T] integer token ids, got {tuple(prompts.shape)} {prompts.dtype}")
        return prompts.to(self.model.device, torch.int64)

    def _hooks(self, strength: float):
        """Temporary hook adding strength * direction at every position; nothing at all for strength 0."""
        if strength == 0:
            return contextlib.nullcontext()
        delta = strength * self.direction

        def add(act, hook):
            # attn.hook_z is [B, T, heads, d_head] at the hook, the direction heads x d_head (the cache's layout)
            return act + delta.to(act.dtype).reshape(act.shape[2:] if act.dim() == 4 else act.shape[-1:])

        return self.model.bridge.hooks(fwd_hooks=[(self.site.hook, add)])

    def _clean(self, prompts: torch.Tensor) -> tuple[_Clean, bool]:
        """The clean distribution and the site's typical norm (one pass, cached for these prompts)."""
        c = self._cache
        if c is not None and c.prompts.shape == prompts.shape and torch.equal(c.prompts, prompts):
            return c, False
        with torch.inference_mode():
            logits, cache = self.model.bridge.run_with_cache(
                prompts, names_filter=self.site.hook, return_cache_object=False
            )
        acts = cache[self.site.hook].float()
        if acts.dim() == 4:  # attn.hook_z: heads concatenated, as the direction is
            acts = acts.flatten(-2)
        # Position 0 (the start token) is an attention sink with a norm ~100x the others: leave it out.
        norms = (acts[:, 1:] if acts.shape[1] > 1 else acts).norm(dim=-1).flatten()
        scale = float(norms.median()) if norms.numel() else 1.0
        if not math.isfinite(scale) or scale <= 0:
            scale = 1.0
        self._cache = _Clean(prompts.clone(), logits[:, -1].double().log_softmax(-1), scale)
        return self._cache, True

    def next_token_logprobs(self, prompts: torch.Tensor, strength: float) -> torch.Tensor:
        """[B, vocab] float64 log-softmax at the last position, steered at every position."""
        prompts = self._check(prompts)
        with torch.inference_mode(), self._hooks(strength):
            return self.model.bridge(prompts)[:, -1].double().log_softmax(-1)

    def kl(self, prompts: torch.Tensor, strength: float, clean: torch.Tensor | None = None) -> float:
        """Mean over prompts of KL(clean || steered) of the next token, in nats."""
        prompts = self._check(prompts)
        if clean is None:
            clean = self._clean(prompts)[0].logprobs
        steered = self.next_token_logprobs(prompts, strength)
        clean = clean.double()
        return float((clean.exp() * (clean - steered)).sum(-1).mean())

    # ---- strength search ----------------------------------------------------------------------

    def find_strength(
        self, prompts: torch.Tensor, target: float, *, rel_tol: float = 0.1, max_steps: int = 40
    ) -> StrengthSearch:
        """The strength whose mean next-token KL is within rel_tol * target of `target`.

        Starts where the added vector's norm equals the median activation norm at the hook on these
        prompts, doubles (or halves) until the target is bracketed, then narrows the bracket by
        interpolation in log-log space (KL grows roughly as a power of the strength), kept inside the
        middle 80% of the bracket so it always shrinks (a safeguarded bisection). Every KL measured on
        these prompts is kept, so a later target starts from the brackets earlier searches found."""
        if not (math.isfinite(target) and target > 0) or not rel_tol > 0:
            raise ValueError(f"KL target must be a positive number and rel_tol > 0 (got {target}, {rel_tol})")
        prompts = self._check(prompts)
        if prompts.shape[0] == 0:
            return StrengthSearch(target, None, None, 0, "no prompts to steer")
        clean, fresh = self._clean(prompts)
        steps = int(fresh)
        norm = float(self.direction.norm())
        start = clean.scale / (norm if math.isfinite(norm) and norm > 0 else 1.0)
        evals = clean.evals
        last = None
        while True:
            hit = min(((abs(k - target), s, k) for s, k in evals if abs(k - target) <= rel_tol * target), default=None)
            if hit is not None:
                return StrengthSearch(target, hit[1], hit[2], steps, None)
            hi, khi = min(((s, k) for s, k in evals if k > target), default=(math.inf, math.inf))
            lo, klo = max(((s, k) for s, k in evals if k < target and s < hi), default=(0.0, 0.0))
            if hi == math.inf and lo > 0:
                # KL saturates once the direction swamps the residual stream: no gain over the last 8x of
                # strength (three doublings) means the target is out of reach.
                below = [k for s, k in evals if s <= lo / 8 * (1 + 1e-9)]
                if (below and klo <= max(below) * 1.01) or lo > start * 2.0**40:
                    kmax, smax = max((k, s) for s, k in evals)
                    return StrengthSearch(
                        target,
                        None,
                        None,
                        steps,
                        f"KL target {target:g} unreachable: at most {kmax:.3g} at strength {smax:.3g}",
                    )
            if steps >= max_steps:
                tried = f" (last {last[1]:.3g} at strength {last[0]:.3g})" if last else ""
                return StrengthSearch(
                    target, None, None, steps, f"KL target {target:g} not reached in {max_steps} forward passes{tried}"
                )
            if hi == math.inf:
                s = 2 * lo if lo > 0 else start
            elif lo == 0:
                s = hi / 2
            else:
                s = _interpolate(lo, klo, hi, khi, target)
            k = self.kl(prompts, s, clean.logprobs)
            steps += 1
            if not math.isfinite(k):
                return StrengthSearch(target, None, None, steps, f"KL is {k} at strength {s:.3g}")
            last = (s, k)
            evals.append(last)

    # ---- generation ---------------------------------------------------------------------------

    def generate(self, prompts: torch.Tensor, strength: float, n_new: int) -> torch.Tensor:
        """[B, n_new] greedy continuation; the steering applies at every position of every step."""
        tokens = self._check(prompts)
        if tokens.shape[0] == 0 or n_new <= 0:
            return torch.zeros((tokens.shape[0], max(n_new, 0)), dtype=torch.int64, device=tokens.device)
        # Full passes each step (no KV cache): prompts are short and n_new small, and the steered
        # positions of the new tokens are then treated exactly like the prompt's.
        with torch.inference_mode(), self._hooks(strength):
            for _ in range(n_new):
                nxt = self.model.bridge(tokens)[:, -1].argmax(-1, keepdim=True)
                tokens = torch.cat([tokens, nxt], dim=1)
        return tokens[:, prompts.shape[1] :]


def _interpolate(lo: float, klo: float, hi: float, khi: float, target: float) -> float:
    """Next strength inside (lo, hi): the log-log secant through the bracket, clamped to its middle 80%."""
    a, b = math.log(lo), math.log(hi)
    if klo > 0 and khi > klo:
        t = (math.log(target) - math.log(klo)) / (math.log(khi) - math.log(klo))
        t = min(max(t, 0.1), 0.9)
    else:
        t = 0.5
    return math.exp(a + t * (b - a))
