"""python benchmarks/method_steps.py [--steps 6] [--adapters lora qlora full]

Seconds per optimizer step of SFT on the example task with the default model, for each adapter, through
hone's own training path (configs/quickstart.yaml: batch 8, ~200-token chats, fp32 on CPU). The first
step (warm-up, lazy init) is left out; the median of the rest is reported with peak resident memory.
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

CHILD = """
import json, resource, sys
from rich.console import Console
from hone.config import load_config
from hone.quickstart import run_quickstart
run = run_quickstart(load_config("configs/quickstart.yaml", sys.argv[1:]), Console(quiet=True))
rows = [json.loads(line) for line in (run.path / "history.jsonl").read_text().splitlines()]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"runtimes": [r["train_runtime"] for r in rows if "loss" in r], "peak_mib": peak}))
"""


def measure(adapter: str, steps: int, folder: Path) -> dict[str, float]:
    """One fresh process per adapter, so peak memory is that adapter's own."""
    overrides = [
        f"train.adapter={adapter}",
        f"train.max_steps={steps}",
        "train.logging_steps=1",
        "train.eval_every=null",
        "data.validation=null",
        "evaluate.limit=1",
        "evaluate.max_new_tokens=4",
        f"run.dir={folder}",
        f"run.name={adapter}",
    ]
    output = subprocess.run(
        [sys.executable, "-c", CHILD, *overrides], capture_output=True, text=True, check=True
    ).stdout
    result = json.loads(output.strip().splitlines()[-1])
    runtimes = result["runtimes"]
    per_step = [later - earlier for earlier, later in itertools.pairwise(runtimes)]
    return {"seconds_per_step": statistics.median(per_step), "peak_mib": result["peak_mib"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--adapters", nargs="+", default=["lora", "qlora", "full"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for adapter in args.adapters:
            result = measure(adapter, args.steps, Path(folder))
            seconds, peak = result["seconds_per_step"], result["peak_mib"]
            print(f"{adapter:5s} {seconds:6.2f} s/step  peak RSS {peak:7.0f} MiB")


if __name__ == "__main__":
    main()
