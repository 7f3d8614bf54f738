from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hone.evaluate.likelihood import encode_pair, reference_loss

PROMPTS = [
    [{"role": "user", "content": "Classify: my card was charged twice"}],
    [
        {"role": "system", "content": "Reply with one JSON object."},
        {
            "role": "user",
            "content": "The sync app crashes on start, please help, this is urgent for our team",
        },
    ],
    [{"role": "user", "content": "hi"}],
]
REFERENCES = [
    '{"category": "billing"}',
    '{"category": "bug", "priority": "urgent"}',
    "Hello! How can I help?",
]


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)


def unbatched_nll(model, tokenizer, prompt, reference) -> float:
    """The plain computation: one sequence, no padding, loss on the reply tokens only."""
    prompt_ids, reply_ids = encode_pair(tokenizer, prompt, reference)
    ids = torch.tensor([prompt_ids + reply_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    predicting_reply = logits[len(prompt_ids) - 1 : -1]
    return float(F.cross_entropy(predicting_reply, torch.tensor(reply_ids), reduction="sum"))


def test_reference_loss_matches_the_unbatched_computation(tiny_model, tokenizer) -> None:
    result = reference_loss(tiny_model, tokenizer, PROMPTS, REFERENCES, batch_size=3)
    for index, (prompt, reference) in enumerate(zip(PROMPTS, REFERENCES, strict=True)):
        assert result.nll_sums[index] == pytest.approx(
            unbatched_nll(tiny_model, tokenizer, prompt, reference), rel=1e-4
        )
        reply_tokens = (
            len(tokenizer(reference, add_special_tokens=False)["input_ids"]) + 1
        )  # + end of sequence
        assert result.token_counts[index] == reply_tokens
    assert result.loss == pytest.approx(sum(result.nll_sums) / sum(result.token_counts))
    assert result.perplexity == pytest.approx(math.exp(result.loss))
    # a random model over a ~49k vocabulary is near-uniform: loss close to log(vocab)
    assert abs(result.loss - math.log(len(tokenizer))) < 1.0


def test_batch_size_does_not_change_the_loss(tiny_model, tokenizer) -> None:
    one = reference_loss(tiny_model, tokenizer, PROMPTS, REFERENCES, batch_size=1)
    two = reference_loss(tiny_model, tokenizer, PROMPTS, REFERENCES, batch_size=2)
    assert two.nll_sums == pytest.approx(one.nll_sums, rel=1e-4)
    assert two.token_counts == one.token_counts


def test_a_logits_budget_splits_batches_without_changing_the_loss(
    tiny_model, tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hone.evaluate.likelihood as likelihood

    whole = reference_loss(tiny_model, tokenizer, PROMPTS, REFERENCES, batch_size=3)
    calls: list[int] = []
    batch_nll = likelihood._batch_nll

    def counted(model: object, pairs: list, *rest: object) -> list[float]:
        calls.append(len(pairs))
        return batch_nll(model, pairs, *rest)

    monkeypatch.setattr(likelihood, "_batch_nll", counted)
    vocabulary = tiny_model.get_output_embeddings().weight.size(0)
    longest = max(len(encode_pair(tokenizer, p, r)[1]) for p, r in zip(PROMPTS, REFERENCES, strict=True))
    monkeypatch.setattr(likelihood, "LOGITS_BUDGET", (longest + 1) * vocabulary)  # one longest reply's
    split = reference_loss(tiny_model, tokenizer, PROMPTS, REFERENCES, batch_size=3)
    assert len(calls) >= 2 and sum(calls) == 3  # batch_size allowed one batch; the budget did not
    assert split.nll_sums == pytest.approx(whole.nll_sums, rel=1e-4)
