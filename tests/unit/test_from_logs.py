"""`hone data from-logs` over a real request log (SQLite in a temp folder) written as the server writes it:
corrections become SFT examples and preference pairs, well-rated answers join with --min-rating, PII is
redacted, duplicates and test-split prompts are left out, the card says where each example came from, and
the version loads with hone's own loader."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from hone.cli import main
from hone.config import ServeFile
from hone.data.load import load_split, require_kind
from hone.data.prepare import canonical_row
from hone.errors import HoneError
from hone.operate.from_logs import VALIDATION_FROM, FromLogs, dataset_from_logs
from hone.serve.log import RequestLog

SYSTEM = "Reply with the ticket's category."


def settings(tmp_path: Path, redact: bool = True) -> ServeFile:
    return ServeFile.model_validate(
        {"serve": {"request_log": f"sqlite:///{tmp_path / 'requests.db'}", "redact_pii": redact}}
    )


def log_of(config: ServeFile) -> RequestLog:
    return RequestLog(config.serve.request_log, config.serve.redact_pii)


def chat(
    log: RequestLog,
    response_id: str,
    prompt: str,
    answer: str,
    *,
    version: str = "support/1",
    system: str | None = SYSTEM,
    **row: Any,
) -> None:
    """A chat request as the server logs it: the trained system prompt in front when the client sent none."""
    messages = [{"role": "user", "content": prompt}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    log.write(id=response_id, endpoint="chat", requested="support", version=version, user="u1", status=200,
              latency_seconds=0.3, prompt_tokens=20, completion_tokens=5, finish_reason="stop",
              request=messages, response=answer, error=None, **row)  # fmt: skip


def rate(
    log: RequestLog, feedback_id: str, response_id: str, rating: str, correction: str | None = None
) -> None:
    score = {"up": 1.0, "down": 0.0}.get(rating) if rating in ("up", "down") else (int(rating) - 1) / 4
    log.add_feedback(
        id=feedback_id, response_id=response_id, rating=rating, score=score, correction=correction
    )


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def conversation(prompt: str, answer: str, system: str | None = None) -> dict[str, Any]:
    turns = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    return {"messages": ([{"role": "system", "content": system}] if system else []) + turns}


def from_logs(config: ServeFile, tmp_path: Path, **options: Any) -> FromLogs:
    return dataset_from_logs(config, tmp_path / "versions", **options)


def test_corrections_become_sft_examples_and_preference_pairs(tmp_path: Path) -> None:
    config = settings(tmp_path)
    log = log_of(config)
    chat(log, "chatcmpl-1", "I was charged twice for March", "shipping")
    chat(log, "chatcmpl-2", "The app crashes on login", "bug")
    chat(log, "chatcmpl-3", "Where is my parcel?", "shipping", system="Be brief.")  # the client's own
    chat(log, "chatcmpl-4", "Cancel my plan", "account")
    log.write(id="chatcmpl-5", endpoint="chat", requested="support", version="support/1", status=500,
              request=[{"role": "user", "content": "x"}], response="", error="boom")  # fmt: skip
    rate(log, "fb-1", "chatcmpl-1", "down", correction="billing")
    rate(log, "fb-2", "chatcmpl-1", "2")  # a second rating of the same answer
    rate(log, "fb-3", "chatcmpl-2", "up", correction="bug")  # the answer was right: no pair
    rate(log, "fb-4", "chatcmpl-3", "down", correction="delivery")
    rate(log, "fb-5", "chatcmpl-4", "up")  # no --min-rating: not taken
    log.close()

    result = from_logs(config, tmp_path)

    assert [e.messages for e in result.train] == [
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "I was charged twice for March"},
         {"role": "assistant", "content": "billing"}],
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "The app crashes on login"},
         {"role": "assistant", "content": "bug"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where is my parcel?"},
         {"role": "assistant", "content": "delivery"}],
    ]  # fmt: skip
    first_pair = result.preferences[0]
    assert first_pair.messages[-1] == {"role": "user", "content": "I was charged twice for March"}
    assert first_pair.chosen == [{"role": "assistant", "content": "billing"}]
    assert first_pair.rejected == [{"role": "assistant", "content": "shipping"}]
    assert len(result.preferences) == 2 and result.validation == []

    card = json.loads((result.folder / "card.json").read_text())
    assert result.folder.name == card["version"][:16] and card["version"] == result.version
    assert sorted(p.name for p in result.folder.iterdir()) == [
        "card.json",
        "preferences.jsonl",
        "train.jsonl",
    ]
    assert card["provenance"]["train"][0] == {
        "origin": "correction", "response_ids": ["chatcmpl-1"], "feedback_ids": ["fb-1", "fb-2"],
        "versions": ["support/1"],
    }  # fmt: skip
    assert [p["response_ids"] for p in card["provenance"]["preferences"]] == [["chatcmpl-1"], ["chatcmpl-3"]]
    counts = card["counts"]
    assert (counts["requests"], counts["ratings"], counts["corrections"]) == (4, 5, 3)
    assert counts["corrections_equal_to_answer"] == 1 and counts["rated_without_correction"] == 1
    assert card["versions"] == {"support/1": 4} and card["preferences"]["file"] == "preferences.jsonl"
    assert card["splits"] == {"train": {"examples": 3, "kinds": {"chat": 3}}}
    assert "none" in card["validation"]

    loaded = load_split(result.folder / "train.jsonl")
    assert [canonical_row(e) for e in loaded] == [canonical_row(e) for e in result.train]
    pairs = load_split(result.folder / "preferences.jsonl")
    require_kind(pairs, "preference", "dpo")
    assert [canonical_row(e) for e in pairs] == [canonical_row(e) for e in result.preferences]


def test_min_rating_takes_well_rated_answers_and_counts_the_poorly_rated(tmp_path: Path) -> None:
    config = settings(tmp_path)
    log = log_of(config)
    for index, answer in enumerate(["billing", "bug", "delivery", "account"]):
        chat(log, f"chatcmpl-{index}", f"ticket number {index}", answer)
    rate(log, "fb-0", "chatcmpl-0", "up")
    rate(log, "fb-1a", "chatcmpl-1", "4")  # 0.75 and 1.0: a mean of 0.875
    rate(log, "fb-1b", "chatcmpl-1", "5")
    rate(log, "fb-2", "chatcmpl-2", "down")
    rate(log, "fb-3", "chatcmpl-3", "3")  # 0.5
    log.close()

    without = pytest.raises(HoneError, match="none with a correction; --min-rating")
    with without:
        from_logs(config, tmp_path)
    result = from_logs(config, tmp_path, min_rating=0.75, include_rated=True)

    assert [e.messages[-1]["content"] for e in result.train] == ["billing", "bug"]
    assert result.preferences == []
    card = result.card
    assert card["counts"]["rated_included"] == 2 and card["counts"]["rated_below_min_rating"] == 2
    assert [p["origin"] for p in card["provenance"]["train"]] == ["rating", "rating"]
    assert card["provenance"]["train"][1]["feedback_ids"] == ["fb-1a", "fb-1b"]
    strict = from_logs(config, tmp_path, min_rating=1.0, include_rated=True)
    assert [e.messages[-1]["content"] for e in strict.train] == ["billing"], "a mean of 0.875 is under 1"
    with pytest.raises(HoneError, match="from 0 to 1"):
        from_logs(config, tmp_path, min_rating=4.0, include_rated=True)


def test_pii_in_an_unredacted_log_is_redacted(tmp_path: Path) -> None:
    config = settings(tmp_path, redact=False)
    log = log_of(config)
    chat(log, "chatcmpl-1", "Refund jane.doe@example.com please", "shipping")
    rate(log, "fb-1", "chatcmpl-1", "down", correction="billing; call +1 415 555 0100 to confirm")
    assert "jane.doe@example.com" in log.rows()[0]["request"], "the log holds the raw text"
    log.close()

    result = from_logs(config, tmp_path)

    written = "".join(p.read_text() for p in result.folder.glob("*.jsonl"))
    assert "jane.doe@example.com" not in written and "555 0100" not in written
    assert "[EMAIL]" in written and "[PHONE]" in written
    assert result.card["counts"]["pii_redacted"] == 4  # the e-mail and the phone, in the example and the pair


def test_duplicates_are_merged_and_the_train_split_is_not_repeated(tmp_path: Path) -> None:
    config = settings(tmp_path)
    log = log_of(config)
    chat(log, "chatcmpl-1", "I was charged twice", "shipping")
    chat(log, "chatcmpl-2", "i was charged TWICE!", "shipping")
    chat(log, "chatcmpl-3", "Reset my password", "bug")
    chat(log, "chatcmpl-4", "Update my card", "bug")
    for index, correction in ((1, "billing"), (2, "Billing."), (3, "account"), (4, "billing")):
        rate(log, f"fb-{index}", f"chatcmpl-{index}", "down", correction=correction)
    log.close()
    # The split was written without the system prompt (data.system_prompt adds it when it is loaded).
    train = write_jsonl(tmp_path / "train.jsonl", [conversation("Reset my password", "account")])

    result = from_logs(config, tmp_path, train=train)

    assert [e.messages[1]["content"] for e in result.train] == ["I was charged twice", "Update my card"]
    provenance = result.card["provenance"]["train"][0]
    assert provenance["response_ids"] == ["chatcmpl-1", "chatcmpl-2"]
    assert provenance["feedback_ids"] == ["fb-1", "fb-2"]
    counts = result.card["counts"]
    assert counts["duplicates_dropped"] == 2  # the second SFT example and the second pair
    assert counts["train_duplicates_dropped"] == 1
    # A pair still teaches what the train split's example does not: which answer is worse.
    prompts = [pair.messages[-1]["content"] for pair in result.preferences]
    assert prompts == ["I was charged twice", "Reset my password", "Update my card"]


def test_prompts_of_the_frozen_test_split_are_left_out(tmp_path: Path) -> None:
    long_prompt = (
        "My invoice for the premium plan shows two charges on the same day and I would like one of them "
        "refunded to the card I used when I signed up last spring"
    )
    config = settings(tmp_path)
    log = log_of(config)
    chat(log, "chatcmpl-1", "my invoice was CHARGED twice.", "shipping")  # the test prompt, normalised
    chat(log, "chatcmpl-2", long_prompt.replace("last spring", "last april"), "shipping")  # nearly
    chat(log, "chatcmpl-3", "The app crashes on login", "billing")
    for index in (1, 2, 3):
        rate(log, f"fb-{index}", f"chatcmpl-{index}", "down", correction="bug" if index == 3 else "billing")
    log.close()
    test = write_jsonl(
        tmp_path / "test.jsonl",
        [
            conversation("My invoice was charged twice", "billing", SYSTEM),
            conversation(long_prompt, "billing"),
        ],
    )

    result = from_logs(config, tmp_path, test=test)

    assert [e.messages[1]["content"] for e in result.train] == ["The app crashes on login"]
    assert [e.messages[1]["content"] for e in result.preferences] == ["The app crashes on login"]
    counts = result.card["counts"]
    assert counts["test_leakage_exact"] == 2 and counts["test_leakage_near"] == 2  # examples and pairs
    assert result.card["source"]["test"] == str(test)


def test_the_same_log_gives_the_same_version(tmp_path: Path) -> None:
    config = settings(tmp_path)
    log = log_of(config)
    for index in range(VALIDATION_FROM + 10):
        chat(log, f"chatcmpl-{index:03d}", f"ticket {index}: my order {index} never came", "billing")
        rate(log, f"fb-{index:03d}", f"chatcmpl-{index:03d}", "down", correction=f"delivery {index}")
    log.close()

    first = dataset_from_logs(config, tmp_path / "one")
    again = dataset_from_logs(config, tmp_path / "one")
    elsewhere = dataset_from_logs(config, tmp_path / "two", now=time.time() + 60)

    assert first.version == again.version == elsewhere.version and first.folder == again.folder
    for name in ("train.jsonl", "validation.jsonl", "preferences.jsonl"):
        assert (first.folder / name).read_bytes() == (elsewhere.folder / name).read_bytes(), name
    assert (len(first.train), len(first.validation), len(first.preferences)) == (54, 6, 60)
    card = first.card
    assert card["splits"]["validation"]["examples"] == 6 and "seeded" in card["validation"]
    held = {p["response_ids"][0] for p in card["provenance"]["validation"]}
    assert {e.messages[-1]["content"] for e in first.validation} == {
        f"delivery {int(response.removeprefix('chatcmpl-'))}" for response in held
    }, "the card's provenance follows each file's lines"
    assert load_split(first.folder / "validation.jsonl")[0].messages == first.validation[0].messages


def test_only_the_version_asked_for(tmp_path: Path) -> None:
    config = settings(tmp_path)
    log = log_of(config)
    chat(log, "chatcmpl-1", "Charged twice", "shipping", version="support/1")
    chat(log, "chatcmpl-2", "Crashes on login", "shipping", version="support/2")
    rate(log, "fb-1", "chatcmpl-1", "down", correction="billing")
    rate(log, "fb-2", "chatcmpl-2", "down", correction="bug")
    log.close()

    result = from_logs(config, tmp_path, version="support/2")

    assert [e.messages[-1]["content"] for e in result.train] == ["bug"]
    assert result.card["versions"] == {"support/2": 1} and result.card["source"]["version"] == "support/2"
    with pytest.raises(HoneError, match=r"support@production: answered no chat .* support/1, support/2"):
        from_logs(config, tmp_path, version="support@production")


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """`hone ARGS` through the real entry point, in this process; the exit code."""
    monkeypatch.setattr(sys, "argv", ["hone", *args])
    with pytest.raises(SystemExit) as exited:
        main()
        raise SystemExit(0)
    return int(exited.value.code or 0)


def test_the_command_writes_a_version_or_says_why_not_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    config_file = tmp_path / "serve.yaml"
    config_file.write_text(
        yaml.safe_dump({"serve": {"request_log": f"sqlite:///{tmp_path / 'requests.db'}"}})
    )
    out = tmp_path / "versions"
    command = ["data", "from-logs", "-c", str(config_file), "--since", "7d", "--out", str(out)]

    assert run_cli(monkeypatch, *command) == 2
    assert "no chat requests in the last 7d" in capsys.readouterr().err
    log = RequestLog(f"sqlite:///{tmp_path / 'requests.db'}")
    chat(log, "chatcmpl-1", "Charged twice", "shipping")
    log.close()
    assert run_cli(monkeypatch, *command) == 2
    assert "1 chat requests in the last 7d, none with feedback" in capsys.readouterr().err
    assert not out.exists(), "nothing is written when nothing is usable"

    log = RequestLog(f"sqlite:///{tmp_path / 'requests.db'}")
    rate(log, "fb-1", "chatcmpl-1", "down", correction="billing")
    log.close()
    assert run_cli(monkeypatch, *command, "--min-rating", "0.75") == 0
    shown = capsys.readouterr().out
    (folder,) = out.iterdir()
    assert str(folder) in shown and "1 corrections" in shown
    assert f"next: hone data check {folder / 'train.jsonl'}" in shown
    assert "not checked against a test split" in shown
