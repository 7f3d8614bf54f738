"""python benchmarks/span_loss.py [--model smollm2-135m-instruct] [--steps 5] [--rounds 2]

LoRA training steps with the loss computed two ways on the same model, batch and seed, A/B interleaved:
  full  - the model's own loss: logits for every position (what TRL and transformers do by default)
  span  - hone's loss: logits only for the positions that predict a labelled token (hone.train.loss)
Batches look like the example task: ~200-token chats whose answer (the labelled part) is the last ~20%.
Prints seconds per step, labelled-batch tokens/s, the ratio span/full and the loss of each (equal).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from peft import LoraConfig, get_peft_model

from hone.data.tokenize import IGNORE_INDEX
from hone.models.resolve import load_model, resolve_model
from hone.train.loss import label_span, shifted_targets, sum_cross_entropy


def make_batch(batch: int, length: int, answer: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(100, 40000, (batch, length), generator=generator)
    labels = input_ids.clone()
    labels[:, : length - answer] = IGNORE_INDEX
    return input_ids, labels


def step(model, optimizer, input_ids, labels, mode: str) -> float:
    if mode == "full":
        loss = model(input_ids=input_ids, labels=labels).loss
    else:
        first = label_span(labels)
        logits = model(input_ids=input_ids, logits_to_keep=torch.arange(first, labels.size(1) - 1)).logits
        total, count = sum_cross_entropy(logits, shifted_targets(labels, first))
        loss = total / count
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--answer", type=int, default=40)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = get_peft_model(
        load_model(resolve_model(args.model)),
        LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.0)
    input_ids, labels = make_batch(args.batch, args.length, args.answer, seed=1)
    seconds: dict[str, list[float]] = {"full": [], "span": []}
    losses: dict[str, float] = {}
    for mode in seconds:  # warm-up, not timed
        step(model, optimizer, input_ids, labels, mode)
    for _ in range(args.rounds):
        for mode in seconds:
            began = time.perf_counter()
            for _ in range(args.steps):
                losses[mode] = step(model, optimizer, input_ids, labels, mode)
            seconds[mode].append((time.perf_counter() - began) / args.steps)
    tokens = args.batch * args.length
    shape = f"batch={args.batch}x{args.length} answer={args.answer}"
    print(f"model={args.model} {shape} threads={torch.get_num_threads()}")
    for mode, values in seconds.items():
        per_step = statistics.median(values)
        print(f"{mode:5s} {per_step:6.2f} s/step  {tokens / per_step:7.0f} tokens/s  loss {losses[mode]:.6f}")
    ratio = statistics.median(seconds["full"]) / statistics.median(seconds["span"])
    print(f"span/full speed-up: {ratio:.2f}x")


if __name__ == "__main__":
    main()
