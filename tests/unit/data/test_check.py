from __future__ import annotations

import json
from pathlib import Path

import pytest

from hone.config import TrainConfig
from hone.data.check import planned_epochs, run_data_check
from hone.estimate_report import data_check_estimate

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "support-tickets"


def chat(user: str, reply: str = '{"a": 1}') -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def distinct_rows(count: int, prefix: str = "ticket") -> list[dict]:
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]
    return [
        chat(f"{prefix} {i}: " + " ".join(words[(i + k) % 10] * (k + 1) for k in range(6)))
        for i in range(count)
    ]


def check(tiny_model_dir: Path, splits: dict[str, Path], **train: object):
    return run_data_check(splits, tiny_model_dir, 100, TrainConfig(**train))


def test_clean_example_task_has_no_problems(tiny_model_dir: Path) -> None:
    splits = {name: EXAMPLE / f"{name}.jsonl" for name in ("train", "validation", "test")}
    report = run_data_check(splits, tiny_model_dir, 512, TrainConfig(epochs=2))
    assert report.error_count == 0, report.to_dict()
    assert not [w for w in report.warnings if "possible data poisoning" in w], report.warnings
    train = report.splits[0]
    assert train.examples == 600 and train.format == "chat"
    assert 150 < train.token_lengths["median"] < 250
    assert train.truncation_rate == 0.0
    assert report.estimate == {}  # the time and cost are hone estimate's, added above the data stage
    estimate = data_check_estimate(report, TrainConfig(epochs=2), tiny_model_dir)
    assert estimate["training_tokens"] == int(train.token_lengths["total"] * 2)
    assert estimate["epochs"] == 2 and estimate["seconds"] > 0


def test_leakage_duplicates_pii_and_truncation(tmp_path: Path, tiny_model_dir: Path) -> None:
    rows = distinct_rows(60)
    rows[5] = chat("please refund me, write to jane.doe@example.com " + "long " * 80)
    rows[9] = rows[8]
    train = write(tmp_path / "train.jsonl", rows)
    test = write(tmp_path / "test.jsonl", [rows[3], *distinct_rows(3, prefix="held-out")])
    report = check(tiny_model_dir, {"train": train, "test": test})
    errors = report.errors + [e for s in report.splits for e in s.errors]
    warnings = report.warnings + [w for s in report.splits for w in s.warnings]
    assert any(f"{test} line 1 overlaps {train} line 4" in e and "leakage" in e for e in errors), errors
    assert any("exact duplicates at lines 9, 10" in w for w in warnings), warnings
    assert any("possible email in 1 example(s): lines 6" in w for w in warnings), warnings
    assert any("longer than max_length=100" in w and "lines 6" in w for w in warnings), warnings
    assert report.splits[0].pii == {"email": 1}
    assert report.splits[0].truncation_rate == pytest.approx(1 / 60)


def test_preference_problems_and_too_few_examples(tmp_path: Path, tiny_model_dir: Path) -> None:
    pairs = write(
        tmp_path / "pairs.jsonl",
        [
            {"prompt": "q", "chosen": "same", "rejected": "same"},
            {"prompt": "q2", "chosen": "a", "rejected": "b"},
        ],
    )
    report = check(tiny_model_dir, {"train": pairs}, method="sft")
    errors = report.splits[0].errors
    assert f"{pairs} line 1: chosen: identical to rejected (nothing to learn)" in errors
    assert any("method 'sft' needs chat or prompt/completion examples" in e for e in errors)
    assert any("2 examples; sft needs at least 10" in e for e in errors)


def test_planned_epochs_prefers_max_steps() -> None:
    assert planned_epochs(TrainConfig(epochs=3), 100) == 3
    assert planned_epochs(TrainConfig(max_steps=25, batch_size=8), 100) == pytest.approx(2.0)


@pytest.mark.parametrize("adapter", [{"kind": "lora", "r": 8}, {"kind": "full"}])
def test_estimate_is_hone_estimates_figure(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, adapter: dict
) -> None:
    """`hone data check` and `hone estimate --data` give one time and cost for the same data and settings."""
    from hone import estimate_report
    from hone.estimate_report import EstimateOptions, run_estimate

    # the machine is measured afresh by each call; fix its rates so both see the same machine
    monkeypatch.setattr(estimate_report, "measure_matmul_flops", lambda **_: 2e11)
    monkeypatch.setattr(estimate_report, "measure_bandwidth", lambda **_: 1e10)
    train = write(tmp_path / "train.jsonl", distinct_rows(60))
    config = TrainConfig(epochs=3, batch_size=2, adapter=adapter)
    report = run_data_check({"train": train}, tiny_model_dir, 512, config)
    report.estimate = data_check_estimate(report, config, tiny_model_dir, price_per_hour=2.5)
    method = adapter["kind"]
    options = EstimateOptions(
        model=str(tiny_model_dir),
        methods=(method,),
        data=train,
        epochs=3,
        price_per_hour=2.5,
        batch_size=2,
        lora_r=adapter.get("r", 16),
    )
    expected = run_estimate(options)
    assert report.estimate["method"] == method
    assert report.estimate["training_tokens"] == expected["tokens"]["total"]
    assert report.estimate["seconds"] == pytest.approx(expected["methods"][method]["seconds"], rel=1e-12)
    assert report.estimate["cost"] == pytest.approx(expected["methods"][method]["cost"], rel=1e-12)
    assert report.estimate["seconds"] > 0
