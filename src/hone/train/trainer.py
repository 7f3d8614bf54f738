"""TRL's SFTTrainer with hone's loss: logits only on the positions that carry labels.

TRL's own compute_loss builds logits for every position and also computes per-token entropy and
accuracy for its logs; both cost a full vocabulary softmax per token, which dominates a LoRA step of a
small model on CPU. Everything else (data loading, optimizer, schedule, logging, saving) stays TRL's.
"""

from __future__ import annotations

from typing import Any

import torch
from trl import SFTTrainer

from hone.train.loss import label_span, shifted_targets, sum_cross_entropy


class HoneSFTTrainer(SFTTrainer):
    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        inputs["use_cache"] = False
        first = label_span(labels)
        last = labels.size(1) - 1  # the final position predicts nothing
        positions = torch.arange(first, last, device=labels.device)
        outputs = model(**inputs, logits_to_keep=positions)
        total, count = sum_cross_entropy(outputs.logits, shifted_targets(labels, first))
        if num_items_in_batch is not None and self.model_accepts_loss_kwargs:
            # The Trainer then treats the loss as already scaled for gradient accumulation.
            loss = total / num_items_in_batch
            if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
                loss = loss * self.accelerator.num_processes
        else:
            loss = total / count.clamp(min=1)
        return (loss, outputs) if return_outputs else loss
