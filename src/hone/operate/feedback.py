"""`hone feedback list|show`: the ratings, corrections and comments clients sent for served answers."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from hone.config import ServeFile
from hone.errors import HoneError
from hone.operate.report import last_user_turn, window_seconds
from hone.serve.log import RequestLog


def request_log(settings: ServeFile) -> RequestLog:
    return RequestLog(settings.serve.request_log, settings.serve.redact_pii)


def list_feedback(settings: ServeFile, since: str | None = None) -> list[dict[str, Any]]:
    began = time.time() - window_seconds(since or settings.monitor.since)
    log = request_log(settings)
    try:
        return log.feedback(since=began)
    finally:
        log.close()


def rated_response(settings: ServeFile, identifier: str) -> dict[str, Any]:
    """The response a feedback id (or a response id) names, with all of its feedback."""
    log = request_log(settings)
    try:
        response_id = identifier
        if identifier.startswith("fb-"):
            rows = [row for row in log.feedback() if row["id"] == identifier]
            if not rows:
                raise HoneError(f"no feedback {identifier} in {log.url}")
            response_id = rows[0]["response_id"]
        request = log.request(response_id)
        if request is None:
            raise HoneError(f"no response {response_id} in {log.url}")
        request["request"] = json.loads(request["request"])
        return {"response": request, "feedback": log.feedback(response_id=response_id)}
    finally:
        log.close()


def when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def print_feedback(rows: list[dict[str, Any]], console: Console) -> None:
    if not rows:
        console.print("No feedback in the window.")
        return
    table = Table(title=f"{len(rows)} ratings")
    for column in ("when", "feedback id", "response id", "version", "rating", "correction", "comment"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            when(row["created"]),
            row["id"],
            row["response_id"],
            row["version"] or "-",
            row["rating"],
            "yes" if row["correction"] else "",
            (row["comment"] or "")[:60],
        )
    console.print(table)


def print_rated(shown: dict[str, Any], console: Console) -> None:
    response = shown["response"]
    console.print(f"[bold]{response['id']}[/] {when(response['created'])}: {response['requested']} -> "
                  f"{response['version']}, status {response['status']}")  # fmt: skip
    console.print("request:", last_user_turn(json.dumps(response["request"])), markup=False, highlight=False)
    console.print("answer: ", response["response"], markup=False, highlight=False)
    for row in shown["feedback"]:
        console.print(f"[bold]{row['rating']}[/] ({row['id']}, {when(row['created'])})")
        if row["correction"]:
            console.print("  correction:", row["correction"], markup=False, highlight=False)
        if row["comment"]:
            console.print("  comment:   ", row["comment"], markup=False, highlight=False)
