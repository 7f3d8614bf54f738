"""TRL's SFTTrainer with hone's loss: the language-model head only where labels are.

TRL's own compute_loss builds logits for every position and also computes per-token entropy and
accuracy for its logs; both cost a full vocabulary softmax per token, which dominates a LoRA step of a
small model on CPU. hone runs the model with its output head replaced by the identity, so the forward
pass ends at the final norm, then applies the head and the cross-entropy to exactly the labelled
positions, a chunk of rows at a time (hone.train.loss.linear_cross_entropy). Models whose head is not a
plain linear layer, or whose logits are rescaled after it (soft-capping, logit scales), get the logits
from the first labelled position on from the model itself instead. Under bf16 autocast the LoRA input is
no longer copied to fp32 for adapters whose weights are fp32 (autocast runs their matmuls in bf16 anyway).
Everything else (data loading, optimizer, schedule, logging, saving) stays TRL's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn
from trl import SFTTrainer

from hone.train.loss import label_span, linear_cross_entropy, shifted_targets, sum_cross_entropy

# Config fields of models that transform the logits after the head; those keep the model's own head.
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def plain_head(model: Any) -> nn.Linear | None:
    """The model's output head when it is a bias-free linear layer whose output is the logits."""
    head = model.get_output_embeddings()
    if type(head) is not nn.Linear or head.bias is not None:
        return None
    config = getattr(model, "config", None)
    if any(getattr(config, name, None) not in (None, 1, 1.0) for name in LOGIT_TRANSFORMS):
        return None
    return head


@contextmanager
def head_removed(model: Any, head: nn.Linear) -> Iterator[None]:
    """The model returns its final hidden states where it would return logits."""
    model.set_output_embeddings(nn.Identity())
    try:
        yield
    finally:
        model.set_output_embeddings(head)


def labelled_loss(
    model: Any,
    inputs: dict[str, Any],
    labels: torch.Tensor,
    unwrapped: Any = None,
    mixed_precision: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """(summed cross-entropy over the labelled tokens, their number, the model's outputs).

    With the head removed, the outputs' `logits` are the final hidden states of the scored positions.

    `unwrapped` is the model itself when `model` is a distributed wrapper around it; `mixed_precision`
    says that the forward runs under autocast, so PEFT need not copy the adapters' input to fp32.
    """
    unwrapped = model if unwrapped is None else unwrapped
    first = label_span(labels)
    positions = torch.arange(first, labels.size(1) - 1, device=labels.device)  # the last predicts nothing
    targets = shifted_targets(labels, first)
    head = plain_head(unwrapped)
    with ExitStack() as stack:
        if mixed_precision:
            from peft.helpers import disable_input_dtype_casting

            stack.enter_context(disable_input_dtype_casting(unwrapped))
        if head is not None:
            stack.enter_context(head_removed(unwrapped, head))
        outputs = model(**inputs, use_cache=False, logits_to_keep=positions)
    if head is None:
        return (*sum_cross_entropy(outputs.logits, targets), outputs)
    return (*linear_cross_entropy(outputs.logits, head.weight, targets), outputs)


class HoneSFTTrainer(SFTTrainer):
    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        unwrapped = self.accelerator.unwrap_model(model)
        mixed = self.args.bf16 or self.args.fp16
        total, count, outputs = labelled_loss(model, inputs, labels, unwrapped, mixed)
        if num_items_in_batch is not None and self.model_accepts_loss_kwargs:
            # The Trainer then treats the loss as already scaled for gradient accumulation.
            loss = total / num_items_in_batch
            if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
                loss = loss * self.accelerator.num_processes
        else:
            loss = total / count.clamp(min=1)
        return (loss, outputs) if return_outputs else loss
