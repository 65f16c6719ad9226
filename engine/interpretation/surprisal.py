"""Surprisal scoring: how much an explanation, placed before an example, lowers a base LM's loss on it.

An explanation that describes a latent well should make its activating examples easier to predict than
its non-activating ones, so the score of one explanation is the AUROC of the loss decrease
(baseline loss - loss with the explanation as prefix), activating (label 1) against non-activating (0).

The base model is any llama.cpp GGUF (`GGUFLM`) or the subject model itself through TransformerLens
(`SubjectLM`). Prefix and text are tokenised separately and their ids concatenated, so a text's tokens
are the same with and without the explanation: only the context changes, never what is predicted.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Callable

import numpy as np

from autointerp.store.errors import UserError

# Caps, in tokens. Texts are example windows (~32 tokens) and prefixes a template plus one explanation,
# so the caps only guard against runaway input; they also size llama.cpp's context.
MAX_TEXT_TOKENS = 256  # a longer text keeps its first 256 tokens
MAX_PREFIX_TOKENS = 512  # a longer prefix keeps its LAST 512 tokens (the part that touches the text)
EMPTY_TEXT = "text tokenises to nothing"
NON_FINITE = "non-finite loss"


class SurprisalError(UserError):
    """A base model that cannot be loaded or used, stated in one line."""


def _cap(prefix_ids: list[int], text_ids: list[int]) -> tuple[list[int], list[int]]:
    keep = max(0, len(prefix_ids) - MAX_PREFIX_TOKENS)
    return prefix_ids[keep:], text_ids[:MAX_TEXT_TOKENS]


class BaseLM(abc.ABC):
    """A causal LM that scores texts after a prefix."""

    name: str

    @abc.abstractmethod
    def losses(self, prefix: str, texts: list[str]) -> list[float | None]:
        """Mean negative log-likelihood (nats/token) of each text's tokens given [start] + prefix tokens;
        None for a text with no tokens."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class SubjectLM(BaseLM):
    """The subject model through its TransformerLens bridge."""

    TOKEN_BUDGET = 2048  # tokens per forward pass: logits cost B*T*vocab*4 bytes (~400 MB at 2048 x 49k)

    def __init__(self, model):
        self.model = model
        self.name = f"subject:{model.name}"

    def ids(self, prefix: str, text: str) -> tuple[list[int], list[int]]:
        """(start + prefix ids, text ids), tokenised separately and capped."""
        tok = self.model.tokenizer
        p = tok(prefix, add_special_tokens=False)["input_ids"] if prefix else []
        t = tok(text, add_special_tokens=False)["input_ids"]
        p, t = _cap(p, t)
        return [self.model.start_id, *p], t

    def losses(self, prefix: str, texts: list[str]) -> list[float | None]:
        import torch

        seqs = [self.ids(prefix, t) for t in texts]
        out: list[float | None] = [None] * len(texts)
        todo = [i for i, (_, t) in enumerate(seqs) if t]
        todo.sort(key=lambda i: len(seqs[i][0]) + len(seqs[i][1]))  # similar lengths together: less padding
        batches: list[list[int]] = []
        for i in todo:  # ascending lengths: the newest row is the longest, so it sets the padded width
            n = len(seqs[i][0]) + len(seqs[i][1])
            if batches and (len(batches[-1]) + 1) * n <= self.TOKEN_BUDGET:
                batches[-1].append(i)
            else:
                batches.append([i])
        with torch.inference_mode():
            for batch in batches:
                full = [seqs[i][0] + seqs[i][1] for i in batch]
                width = max(len(r) for r in full)
                # Right padding needs no attention mask for a causal LM: a position never attends to
                # later ones, and positions count from 0 in every row, so the real tokens are untouched.
                ids = torch.tensor([r + [self.model.start_id] * (width - len(r)) for r in full])
                logits = self.model.bridge(ids.to(self.model.device))
                for row, i in enumerate(batch):
                    n_p, text = len(seqs[i][0]), seqs[i][1]
                    # Token n_p + j is predicted at position n_p + j - 1; only those rows get a softmax.
                    pred = logits[row, n_p - 1 : n_p - 1 + len(text)].float()
                    target = torch.tensor(text, device=pred.device)
                    out[i] = float(torch.nn.functional.cross_entropy(pred, target))
        return out


class GGUFLM(BaseLM):
    """Any GGUF through llama.cpp (llama-cpp-python), CPU or GPU offload.

    The prefix is evaluated once; each text is evaluated after it by rewinding llama.cpp to the end of
    the prefix (`n_tokens`), so its KV cache is reused. No batching: on CPU llama.cpp is compute-bound.
    """

    def __init__(self, path: str, n_gpu_layers: int = 0, n_threads: int | None = None):
        try:
            import llama_cpp
        except ImportError as e:  # pragma: no cover - a dependency
            raise SurprisalError(f"llama-cpp-python is not importable ({e})") from None
        from autointerp.engine.interpretation.llm.llamacpp import available_cores, avoid_amx_crash

        p = Path(path).expanduser()
        if not p.is_file():
            raise SurprisalError(f"base model: GGUF file {p} does not exist")
        # Every core by default. On a machine shared with other busy processes, fewer threads can be
        # far faster: llama.cpp's spinning thread barriers stall when a core is taken (measured 8x).
        threads = n_threads or available_cores()
        gpu = n_gpu_layers if llama_cpp.llama_supports_gpu_offload() else 0
        avoid_amx_crash()
        try:
            self.llm = llama_cpp.Llama(
                model_path=str(p),
                logits_all=True,
                n_ctx=1 + MAX_PREFIX_TOKENS + MAX_TEXT_TOKENS,
                n_threads=threads,
                n_threads_batch=threads,
                n_gpu_layers=gpu,
                verbose=False,
            )
        except (ValueError, RuntimeError) as e:
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise SurprisalError(f"base model: cannot load GGUF {p} ({why})") from None
        bos, eos = self.llm.token_bos(), self.llm.token_eos()
        self.start_id = bos if bos >= 0 else eos
        if self.start_id < 0:
            raise SurprisalError(f"base model: GGUF {p} has neither a BOS nor an EOS token")
        self.name = f"gguf:{p.name}"

    def ids(self, prefix: str, text: str) -> tuple[list[int], list[int]]:
        tok = self.llm.tokenize
        p = tok(prefix.encode("utf-8"), add_bos=False, special=False) if prefix else []
        t = tok(text.encode("utf-8"), add_bos=False, special=False) if text else []
        p, t = _cap(p, t)
        return [self.start_id, *p], t

    def losses(self, prefix: str, texts: list[str]) -> list[float | None]:
        llm = self.llm
        head, _ = self.ids(prefix, "")
        llm.reset()
        llm.eval(head)
        out: list[float | None] = []
        for text in texts:
            _, t = self.ids(prefix, text)
            if not t:
                out.append(None)
                continue
            llm.n_tokens = len(head)  # rewind to the end of the prefix; eval drops the KV cache after it
            llm.eval(t)
            # Rows len(head)-1 .. len(head)+len(t)-2 predict the text's tokens.
            rows = np.asarray(llm.scores[len(head) - 1 : len(head) - 1 + len(t)], dtype=np.float64)
            m = rows.max(axis=1, keepdims=True)
            logz = m[:, 0] + np.log(np.exp(rows - m).sum(axis=1))
            out.append(float(np.mean(logz - rows[np.arange(len(t)), t])))
        return out

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.close()  # explicitly: llama-cpp's __del__ at interpreter exit prints a traceback


def load_base_lm(spec: str, subject_loader: Callable[[], object]) -> BaseLM:
    """'subject' -> the subject model; 'embedded' -> the embedded SmolLM2 GGUF; a path ending .gguf -> it."""
    if spec == "subject":
        try:
            return SubjectLM(subject_loader())
        except Exception as e:  # ModelError and whatever a loader raises: one line
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise SurprisalError(f"base model 'subject': {msg}") from None
    if spec == "embedded":
        from autointerp.engine.interpretation.llm.base import LLMConfigError
        from autointerp.engine.interpretation.llm.llamacpp import resolve_gguf

        try:
            return GGUFLM(str(resolve_gguf("embedded")))
        except LLMConfigError as e:
            raise SurprisalError(f"base model 'embedded': {e}") from None
    if spec.endswith(".gguf"):
        return GGUFLM(spec)
    raise SurprisalError(f"unknown base model {spec!r} (use 'subject', 'embedded' or a path to a .gguf file)")
