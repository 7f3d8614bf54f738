from __future__ import annotations

import torch

from hone.data.packing import collate_packed, pack
from hone.data.tokenize import IGNORE_INDEX, tokenize_text, truncate


def test_best_fit_decreasing_hand_computed() -> None:
    # capacity 10: 7 opens row 0, 6 opens row 1, 4 fits row 1 (space 4), 3 fits row 0, 2 opens row 2
    examples = [{"input_ids": [n] * n, "labels": [n] * n} for n in (3, 7, 2, 6, 4)]
    rows = pack(examples, capacity=10)
    assert [row.input_ids for row in rows] == [[7] * 7 + [3] * 3, [6] * 6 + [4] * 4, [2, 2]]
    assert rows[0].position_ids == [*range(7), *range(3)]
    assert pack([], 10) == []


def test_pack_truncates_long_examples_and_packs_the_whole_set_at_once() -> None:
    [row] = pack([{"input_ids": list(range(12)), "labels": list(range(12))}], capacity=8)
    assert row.input_ids == list(range(8)) and row.position_ids == list(range(8))
    # 1,002 examples of 3 tokens fill 334 rows of 9; packed in TRL's default batches of 1,000 they took 335
    rows = pack([{"input_ids": [1, 2, 3], "labels": [1, 2, 3]}] * 1002, capacity=10)
    assert len(rows) == 334


def test_pack_restarts_positions_and_never_labels_across_examples() -> None:
    examples = [
        {"input_ids": [1, 2, 3], "labels": [IGNORE_INDEX, 2, 3]},
        {"input_ids": [4, 5], "labels": [4, 5]},
    ]
    [row] = pack(examples, capacity=8)
    assert row.input_ids == [1, 2, 3, 4, 5]
    assert row.position_ids == [0, 1, 2, 0, 1]
    assert row.labels == [IGNORE_INDEX, 2, 3, IGNORE_INDEX, 5]


def test_collate_pads_as_a_separate_sequence() -> None:
    batch = collate_packed(
        [
            {"input_ids": [1, 2, 3], "labels": [1, 2, 3], "position_ids": [0, 1, 2]},
            {"input_ids": [4], "labels": [4], "position_ids": [0]},
        ],
        pad_token_id=0,
    )
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2], [0, 0, 1]]
    assert batch["labels"].tolist() == [[1, 2, 3], [4, IGNORE_INDEX, IGNORE_INDEX]]


def test_packed_logits_equal_unpacked_logits(tiny_model_dir) -> None:
    """No cross-contamination: each example sees only itself inside a packed row."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    torch.manual_seed(0)
    first, second = torch.randint(0, 5000, (7,)).tolist(), torch.randint(0, 5000, (5,)).tolist()
    [row] = pack([{"input_ids": first, "labels": first}, {"input_ids": second, "labels": second}], 16)
    batch = collate_packed([row.__dict__], pad_token_id=0)
    with torch.no_grad():
        inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
        packed = model(**inputs, use_cache=False).logits[0]
        alone = [model(input_ids=torch.tensor([ids])).logits[0] for ids in (first, second)]
    assert torch.allclose(packed[:7], alone[0], atol=1e-5)
    assert torch.allclose(packed[7:], alone[1], atol=1e-5)


def test_truncation_policies() -> None:
    ids, labels = [1, 2, 3, 4, 5], [IGNORE_INDEX, IGNORE_INDEX, 3, 4, 5]
    assert truncate(ids, labels, 3, "keep_start").input_ids == [1, 2, 3]
    kept_end = truncate(ids, labels, 3, "keep_end")
    assert kept_end.input_ids == [3, 4, 5] and kept_end.labels == [3, 4, 5] and kept_end.truncated
    dropped = truncate(ids, labels, 3, "drop")
    assert dropped.truncated and dropped.input_ids == ids
    assert not truncate(ids, labels, 5, "keep_start").truncated


def test_text_examples_carry_loss_everywhere_including_eos(tokenizer) -> None:
    tokenized = tokenize_text(tokenizer, "Nimbus Sync keeps folders in step.", 64)
    assert tokenized.labels == tokenized.input_ids
    assert tokenized.input_ids[-1] == tokenizer.eos_token_id
