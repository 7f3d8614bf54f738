"""Packing: several short examples in one row, with no attention across them.

Padding a batch to its longest example wastes the compute of every pad token. Packing fills rows with
whole examples instead (TRL's best-fit-decreasing `pack_dataset`), and restarts `position_ids` at 0 for each
example. With no
2-D attention mask, transformers turns restarting position ids into a block-diagonal causal mask, so an
example never attends to its neighbour: the logits are the same as if it were alone (tested). The model
must run with `use_cache=False` (as in training): with a KV cache transformers skips the detection. The first
token of every example gets no label, so no loss ever crosses from one example into the next.
"""

from __future__ import annotations

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


def pack(examples: list[dict[str, list[int]]], capacity: int) -> list[PackedRow]:
    """Pack tokenised examples ({input_ids, labels}) into rows of at most `capacity` tokens; an example
    longer than that keeps its first `capacity` tokens.

    The bins are TRL's best-fit decreasing (`trl.data_utils.pack_dataset`, strategy "bfd"), over the whole
    set at once rather than TRL's default batches of 1,000 examples. TRL records each row's example lengths
    but leaves the labels as given, so hone turns the lengths into restarting `position_ids` here and takes
    the label off every example's first token: the one whose loss would otherwise predict it from the end
    of the previous example.
    """
    from datasets import Dataset
    from trl.data_utils import pack_dataset

    if not examples:
        return []
    columns = {name: [example[name] for example in examples] for name in ("input_ids", "labels")}
    packed = pack_dataset(
        Dataset.from_dict(columns), capacity, strategy="bfd", map_kwargs={"batch_size": None}
    )
    rows = []
    for ids, labels, lengths in zip(
        packed["input_ids"], packed["labels"], packed["seq_lengths"], strict=True
    ):
        positions = [position for length in lengths for position in range(length)]
        first_unlabelled = [
            IGNORE_INDEX if at == 0 else label for at, label in zip(positions, labels, strict=True)
        ]
        rows.append(PackedRow(ids, first_unlabelled, positions))
    return rows


def collate_packed(rows: list[dict[str, list[int]]], pad_token_id: int) -> dict[str, Any]:
    """Pad packed rows to the longest; the padding is its own 'example' (positions from 0, no labels).

    Not TRL's `DataCollatorForLanguageModeling`: with `padding_free=True` it joins every row of the batch
    into one row (under eager or SDPA attention that is one block-diagonal mask over batch x width tokens,
    batch times the attention work of separate rows), and without it it adds an attention mask, which stops
    transformers from reading the restarting position ids as example boundaries. hone keeps the rows and
    sends no mask.
    """
    width = max(len(row["input_ids"]) for row in rows)
    batch: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "position_ids": []}
    for row in rows:
        missing = width - len(row["input_ids"])
        batch["input_ids"].append(row["input_ids"] + [pad_token_id] * missing)
        batch["labels"].append(row["labels"] + [IGNORE_INDEX] * missing)
        batch["position_ids"].append(row["position_ids"] + list(range(missing)))
    return {name: torch.tensor(values, dtype=torch.long) for name, values in batch.items()}
