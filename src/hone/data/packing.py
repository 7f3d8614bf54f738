"""Packing: several short examples in one row, with no attention across them.

Padding a batch to its longest example wastes the compute of every pad token. Packing fills rows with
whole examples instead (best-fit decreasing), and restarts `position_ids` at 0 for each example. With no
2-D attention mask, transformers turns restarting position ids into a block-diagonal causal mask, so an
example never attends to its neighbour: the logits are the same as if it were alone (tested). The model
must run with `use_cache=False` (as in training): with a KV cache transformers skips the detection. The first
token of every example gets no label, so no loss ever crosses from one example into the next.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

import torch

from hone.data.tokenize import IGNORE_INDEX


@dataclass
class PackedRow:
    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


def best_fit_bins(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices grouped into bins of at most `capacity` tokens: longest first, each into the fullest bin
    it fits. Deterministic; ties keep input order."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    free: list[tuple[int, int]] = []  # (space left, bin number), kept sorted
    bins: list[list[int]] = []
    for index in order:
        size = min(lengths[index], capacity)
        slot = bisect.bisect_left(free, (size, -1))
        if slot == len(free):
            bins.append([index])
            bisect.insort(free, (capacity - size, len(bins) - 1))
            continue
        space, number = free.pop(slot)
        bins[number].append(index)
        bisect.insort(free, (space - size, number))
    return bins


def pack(examples: list[dict[str, list[int]]], capacity: int) -> list[PackedRow]:
    """Pack tokenised examples ({input_ids, labels}, each at most `capacity` long) into rows."""
    rows = []
    for members in best_fit_bins([len(e["input_ids"]) for e in examples], capacity):
        row = PackedRow([], [], [])
        for index in members:
            ids, labels = examples[index]["input_ids"][:capacity], examples[index]["labels"][:capacity]
            row.input_ids.extend(ids)
            row.labels.extend([IGNORE_INDEX, *labels[1:]])
            row.position_ids.extend(range(len(ids)))
        rows.append(row)
    return rows


def collate_packed(rows: list[dict[str, list[int]]], pad_token_id: int) -> dict[str, Any]:
    """Pad packed rows to the longest; the padding is its own 'example' (positions from 0, no labels)."""
    width = max(len(row["input_ids"]) for row in rows)
    batch: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "position_ids": []}
    for row in rows:
        missing = width - len(row["input_ids"])
        batch["input_ids"].append(row["input_ids"] + [pad_token_id] * missing)
        batch["labels"].append(row["labels"] + [IGNORE_INDEX] * missing)
        batch["position_ids"].append(row["position_ids"] + list(range(missing)))
    return {name: torch.tensor(values, dtype=torch.long) for name, values in batch.items()}
