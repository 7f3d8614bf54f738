"""python benchmarks/method_steps.py [--steps 6] [--runs sft:lora sft:qlora ...]

Seconds per optimizer step of every training method and adapter on the embedded default model
(SmolLM2-135M-Instruct, fp32 on CPU), through `hone train` with the shipped example config of each
method (configs/quickstart.yaml for SFT, configs/pretrain.yaml, dpo.yaml, reward.yaml, rl.yaml), so the
batch shapes are the ones a user gets. One fresh process per run, so peak memory is that run's own.
The first step (lazy initialisation) is left out; the median of the others is reported.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CONFIGS = {
    "sft": "configs/quickstart.yaml",
    "pretrain": "configs/pretrain.yaml",
    "dpo": "configs/dpo.yaml",
    "reward": "configs/reward.yaml",
    "rl": "configs/rl.yaml",
}
DEFAULT_RUNS = [f"{method}:{adapter}" for method in CONFIGS for adapter in ("lora", "qlora", "full")]

CHILD = """
import json, resource, sys
from rich.console import Console
from hone.config import load_config
from hone.train.pipeline import run_training
run = run_training(load_config(sys.argv[1], sys.argv[2:]), Console(quiet=True))
rows = [json.loads(line) for line in (run.path / "history.jsonl").read_text().splitlines()]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": [r["train_seconds"] for r in rows if "loss" in r], "peak_mib": peak}))
"""


def measure(method: str, adapter: str, steps: int, folder: Path) -> dict[str, float]:
    overrides = [
        f"train.adapter={adapter}",
        f"train.max_steps={steps}",
        "train.logging_steps=1",
        "train.eval_every=null",
        "data.validation=null",
        "track.enabled=false",
        f"run.dir={folder}",
        f"run.name={method}-{adapter}",
    ]
    command = [sys.executable, "-c", CHILD, CONFIGS[method], *overrides]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    result = json.loads(output.strip().splitlines()[-1])
    per_step = [later - earlier for earlier, later in itertools.pairwise(result["seconds"])]
    return {"seconds_per_step": statistics.median(per_step), "peak_mib": result["peak_mib"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--runs", nargs="+", default=DEFAULT_RUNS, help="method:adapter pairs")
    args = parser.parse_args()
    print("| method | adapter | s/step | peak RSS |\n|---|---|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        for pair in args.runs:
            method, adapter = pair.split(":")
            result = measure(method, adapter, args.steps, Path(folder))
            peak = result["peak_mib"] / 1024
            print(f"| {method} | {adapter} | {result['seconds_per_step']:.2f} | {peak:.1f} GiB |", flush=True)


if __name__ == "__main__":
    main()
