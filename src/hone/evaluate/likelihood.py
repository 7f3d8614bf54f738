"""How likely a model finds the reference replies: the loss and perplexity of each one given its prompt.

Unlike generated-text metrics this needs no decoding and moves smoothly, so it shows a fine-tune learning
the task before exact match does. Each prompt is rendered as generation sees it (`generate_chat`: the chat
template with the generation prompt), followed by the reference reply and the end-of-sequence token, the
tokens a model would have to emit to answer exactly the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from hone.evaluate.generate import budgeted_batches
from hone.evaluate.metrics import mean_loss_and_perplexity

# Logits of one scoring batch (fp32: 512 MiB), whatever evaluate.batch_size allows.
LOGITS_BUDGET = 1 << 27


@dataclass
class ReferenceLoss:
    nll_sums: list[float]  # per example: summed negative log-likelihood of the reply tokens (nats)
    token_counts: list[int]  # per example: reply tokens scored, end-of-sequence included
    loss: float  # token-weighted mean over the set
    perplexity: float


def encode_pair(tokenizer: Any, prompt: list[dict[str, str]], reference: str) -> tuple[list[int], list[int]]:
    """(prompt ids, reply ids), the reply ending with the end-of-sequence token."""
    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    reply_ids = tokenizer(reference, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return list(prompt_ids), list(reply_ids)


def reference_loss(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[list[dict[str, str]]],
    references: Sequence[str],
    batch_size: int = 16,
) -> ReferenceLoss:
    """Summed NLL and token count of each reference reply given its chat prompt, batched, without gradients.

    Batches are left-padded with explicit position ids, so every reply ends at the last column and only
    the last (longest reply + 1) positions need logits; a batch holds at most LOGITS_BUDGET of them (long
    replies and large vocabularies get fewer rows).
    """
    if len(prompts) != len(references):
        raise ValueError(f"{len(prompts)} prompts for {len(references)} references")
    pairs = [encode_pair(tokenizer, p, r) for p, r in zip(prompts, references, strict=True)]
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    nll_sums = [0.0] * len(pairs)
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.eval()
    vocabulary = model.get_output_embeddings().weight.size(0)

    def logits(batch: list[int]) -> int:  # the fp32 logits a batch holds: rows x (longest reply + 1) x V
        return len(batch) * (max(len(pairs[i][1]) for i in batch) + 1) * vocabulary

    for batch in budgeted_batches(order, logits, batch_size, LOGITS_BUDGET):
        sums = _batch_nll(model, [pairs[i] for i in batch], pad_id, device)
        for index, value in zip(batch, sums, strict=True):
            nll_sums[index] = value
    token_counts = [len(reply) for _, reply in pairs]
    loss, perplexity = mean_loss_and_perplexity(nll_sums, token_counts) if pairs else (0.0, 1.0)
    return ReferenceLoss(nll_sums, token_counts, loss, perplexity)


def _batch_nll(
    model: Any, pairs: list[tuple[list[int], list[int]]], pad_id: int, device: torch.device
) -> list[float]:
    width = max(len(prompt) + len(reply) for prompt, reply in pairs)
    longest_reply = max(len(reply) for _, reply in pairs)
    input_ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(pairs), width), dtype=torch.long)
    targets = torch.full((len(pairs), longest_reply), -100, dtype=torch.long)
    for row, (prompt, reply) in enumerate(pairs):
        ids = prompt + reply
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        attention_mask[row, width - len(ids) :] = 1
        targets[row, longest_reply - len(reply) :] = torch.tensor(reply)
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    with torch.inference_mode():
        output = model(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            position_ids=position_ids.to(device),
            logits_to_keep=longest_reply + 1,
            use_cache=False,
        )
    # The logit at position t predicts token t+1: drop the last one, which predicts past the end.
    logits = output.logits[:, -(longest_reply + 1) : -1, :].float()
    targets = targets.to(logits.device)
    nll = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100, reduction="none")
    return [float(value) for value in nll.sum(dim=1).cpu()]
