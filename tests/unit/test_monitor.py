"""`hone monitor` over a real request log (SQLite in a temp folder) written as the server writes it: per
version figures, thresholds, the canary rule, input drift with the packaged embedder, Prometheus text,
and the commands' exit codes."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from hone.config import ServeFile
from hone.operate.monitor import monitor, prometheus_text
from hone.operate.report import CANARY_MARGIN, Rate, window_seconds
from hone.serve.log import RequestLog

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "support-tickets"
SCHEMA = EXAMPLE / "schema.json"
GOOD = json.dumps(
    {"category": "billing", "priority": "high", "product": "nimbus-pay", "summary": "Charged twice"}
)


def user_turns(path: Path) -> list[str]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [next(m["content"] for m in reversed(row["messages"]) if m["role"] == "user") for row in rows]


def write_traffic(
    log: RequestLog,
    version: str,
    count: int,
    valid: float,
    *,
    route: str = "support",
    errors: int = 0,
    scores: list[float] = (),
    prompts: list[str] | None = None,
    seed: int = 0,
    latency: float = 0.5,
) -> list[str]:
    """`count` logged requests answered by `version`, `valid` of them with a schema-valid answer."""
    rng = random.Random(seed)
    ids = []
    for index in range(count):
        response_id = f"chatcmpl-{version}-{route}-{index}"
        ok = index >= errors
        answer = GOOD if index < round(valid * count) else "Sorry, I cannot help."
        prompt = prompts[index % len(prompts)] if prompts else "My invoice was charged twice"
        log.write(id=response_id, endpoint="chat", requested=route, version=version, user=f"u{index}",
                  status=200 if ok else 500, latency_seconds=latency * (1 + rng.random()), prompt_tokens=30,
                  completion_tokens=20, finish_reason="stop", request=[{"role": "user", "content": prompt}],
                  response=answer if ok else "", error=None if ok else "boom")  # fmt: skip
        ids.append(response_id)
    for index, score in enumerate(scores):
        rating = "up" if score == 1.0 else "down" if score == 0.0 else str(int(score * 4 + 1))
        log.add_feedback(
            id=f"fb-{version}-{route}-{index}", response_id=ids[index], rating=rating, score=score
        )
    return ids


def settings(tmp_path: Path, **monitor_settings: Any) -> ServeFile:
    return ServeFile.model_validate({
        "serve": {"request_log": f"sqlite:///{tmp_path / 'requests.db'}"},
        "monitor": {"json_schema": str(SCHEMA), "min_requests": 30, **monitor_settings},
    })  # fmt: skip


def log_of(config: ServeFile) -> RequestLog:
    return RequestLog(config.serve.request_log)


def test_versions_thresholds_and_the_canary_rule(tmp_path: Path) -> None:
    config = settings(tmp_path)
    log = log_of(config)
    write_traffic(log, "support/1", 400, valid=0.97, scores=[1.0] * 40 + [0.0] * 5)
    write_traffic(log, "support/2", 120, valid=0.6, seed=1)  # much worse: roll back
    write_traffic(log, "support/3", 400, valid=0.98, route="other", scores=[0.75] * 10)
    write_traffic(log, "support/1", 400, valid=0.97, route="other", seed=2)
    write_traffic(log, "support/4", 10, valid=1.0, route="third")  # too little traffic to judge alone
    write_traffic(log, "support/1", 300, valid=0.96, route="third", errors=2, seed=3)
    log.close()

    result = monitor(config)
    by = {(r.route, r.version): r for r in result.reports}
    assert (
        by["support", "support/1"].requests == 400
        and by["support", "support/1"].checks["schema_valid"].passed == 388
    )
    assert by["support", "support/1"].mean_rating == pytest.approx(40 / 45)
    assert by["third", "support/1"].errors == 2
    canaries = {c.candidate: c for c in result.canaries}
    assert {c.production for c in result.canaries} == {"support/1"}
    assert canaries["support/2"].recommendation == "roll back"
    assert "schema_valid" in canaries["support/2"].reason
    assert canaries["support/3"].recommendation == "promote", canaries["support/3"].reason
    assert all(d.low >= -CANARY_MARGIN for d in canaries["support/3"].differences)
    assert canaries["support/4"].recommendation == "wait" and "10 of the 30" in canaries["support/4"].reason
    breached = {(b.route, b.version, b.figure) for b in result.breaches}
    assert breached == {("support", "support/2", "json_valid"), ("support", "support/2", "schema_valid")}
    assert result.drift is None and "monitor.train_split" in result.drift_note


def test_a_canary_too_close_to_call_keeps_waiting(tmp_path: Path) -> None:
    config = settings(tmp_path)
    log = log_of(config)
    write_traffic(log, "support/1", 60, valid=0.95)
    write_traffic(log, "support/2", 40, valid=0.9, seed=1)
    log.close()
    (canary,) = monitor(config).canaries
    assert canary.recommendation == "wait" and "not ruled out" in canary.reason


def test_the_window_leaves_older_requests_out(tmp_path: Path) -> None:
    config = settings(tmp_path)
    log = log_of(config)
    write_traffic(log, "support/1", 5, valid=1.0)
    log.close()
    assert monitor(config, "1h").reports[0].requests == 5
    assert monitor(config, "1h", now=time.time() + 7200).reports == []
    assert window_seconds("30m") == 1800 and window_seconds("7d") == 7 * 86400
    with pytest.raises(Exception, match="30m, 24h or 7d"):
        window_seconds("yesterday")


def test_wilson_interval_stays_inside_0_and_1() -> None:
    low, high = Rate(0, 20).interval()
    assert low == 0.0 and 0.1 < high < 0.2
    low, high = Rate(20, 20).interval()
    assert high == 1.0 and 0.8 < low < 0.9


def test_input_drift_flags_off_topic_prompts_and_not_held_out_ones(tmp_path: Path) -> None:
    held_out = user_turns(EXAMPLE / "test.jsonl")
    off_topic = [f"{dish} recipe: how long should I {verb} it at {degrees} degrees?"
                 for dish in ("lasagne", "banana bread", "roast chicken", "risotto", "apple pie", "ramen")
                 for verb in ("bake", "simmer", "roast", "rest")
                 for degrees in (180, 200)]  # fmt: skip
    for name, prompts, drifted in (("held-out", held_out[:60], False), ("off-topic", off_topic, True)):
        folder = tmp_path / name
        folder.mkdir()
        config = settings(folder, train_split=str(EXAMPLE / "train.jsonl"))
        log = log_of(config)
        write_traffic(log, "support/1", len(prompts), valid=1.0, prompts=prompts)
        log.close()
        result = monitor(config)
        assert result.drift is not None
        assert any(b.figure == "drift_share" for b in result.breaches) is drifted, (
            name,
            result.drift.to_dict(),
        )
        if drifted:
            assert result.drift.ood_share > 0.9 and result.drift.mmd_p_value < 0.01
            assert result.outlier_prompts[0][0] in off_topic
        else:
            assert result.drift.ood_share < 0.2


def test_prometheus_text_parses(tmp_path: Path) -> None:
    config = settings(tmp_path)
    log = log_of(config)
    write_traffic(log, 'a "quoted"\nversion', 40, valid=0.5, scores=[1.0, 0.0])
    log.close()
    families = {f.name: f for f in text_string_to_metric_families(prometheus_text(monitor(config)))}
    (sample,) = families["hone_monitor_check_pass_rate"].samples[:1]
    assert sample.labels["version"] == 'a "quoted"\nversion' and sample.value == 0.5
    assert families["hone_monitor_mean_rating"].samples[0].value == 0.5
    assert families["hone_monitor_breaches"].samples[0].value == 2.0


def hone(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "from hone.cli import main; main()", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=300)


def test_monitor_and_feedback_commands(tmp_path: Path) -> None:
    config_file = tmp_path / "serve.yaml"
    config_file.write_text(yaml.safe_dump({
        "serve": {"request_log": f"sqlite:///{tmp_path / 'requests.db'}"},
        "monitor": {"json_schema": str(SCHEMA), "min_requests": 10},
    }))  # fmt: skip
    log = RequestLog(f"sqlite:///{tmp_path / 'requests.db'}")
    ids = write_traffic(log, "support/1", 20, valid=1.0)
    log.add_feedback(
        id="fb-1", response_id=ids[3], rating="down", score=0.0, correction='{"x": 1}', comment="no"
    )
    log.close()

    fine = hone(
        "monitor", "-c", str(config_file), "--check", "--json", "--prometheus", "m.prom", cwd=tmp_path
    )
    assert fine.returncode == 0, fine.stderr
    assert json.loads(fine.stdout)["versions"][0]["requests"] == 20
    assert "hone_monitor_requests" in (tmp_path / "m.prom").read_text()

    log = RequestLog(f"sqlite:///{tmp_path / 'requests.db'}")
    write_traffic(log, "support/2", 20, valid=0.2, route="other")
    log.close()
    breached = hone("monitor", "-c", str(config_file), "--check", cwd=tmp_path)
    assert breached.returncode == 1 and "breach" in breached.stdout and "support/2" in breached.stdout

    listed = json.loads(hone("feedback", "list", "-c", str(config_file), "--json", cwd=tmp_path).stdout)
    assert [(row["id"], row["version"], row["rating"]) for row in listed] == [("fb-1", "support/1", "down")]
    shown = hone("feedback", "show", "fb-1", "-c", str(config_file), cwd=tmp_path)
    assert shown.returncode == 0 and ids[3] in shown.stdout and '{"x": 1}' in shown.stdout
    missing = hone("feedback", "show", "fb-404", "-c", str(config_file), cwd=tmp_path)
    assert missing.returncode == 2 and "no feedback fb-404" in missing.stderr + missing.stdout
