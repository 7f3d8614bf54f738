"""The request log: every request and its response, what the feedback loop turns into the next dataset.

One row per request in a SQLAlchemy table (SQLite in `.hone/requests.db` by default, any SQLAlchemy URL
such as Postgres by `serve.request_log`): its response id, route, the version that answered, latency,
tokens, user and status. With `serve.redact_pii` (the default) e-mail addresses, phone numbers, card
numbers, API keys and IBANs are replaced by their labels (the data checks' detectors) before anything is
written. API keys sent to the server are never logged.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from hone.data.pii import redact_pii

METADATA = sa.MetaData()
REQUESTS = sa.Table(
    "requests",
    METADATA,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("created", sa.Float, nullable=False, index=True),
    sa.Column("endpoint", sa.String(64), nullable=False),
    sa.Column("requested", sa.String(512), nullable=False),  # the request's `model`: a route, alias, ...
    sa.Column("version", sa.String(512)),  # what answered
    sa.Column("user", sa.String(256), index=True),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("latency_seconds", sa.Float),
    sa.Column("prompt_tokens", sa.Integer),
    sa.Column("completion_tokens", sa.Integer),
    sa.Column("finish_reason", sa.String(32)),
    sa.Column("request", sa.Text, nullable=False),  # the messages or prompt, as JSON
    sa.Column("response", sa.Text),
    sa.Column("error", sa.Text),
)


def default_url() -> str:
    folder = Path.cwd() / ".hone"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder.resolve() / 'requests.db'}"


class RequestLog:
    def __init__(self, url: str | None = None, redact: bool = True) -> None:
        self.url = url or default_url()
        self.redact = redact
        self.engine = sa.create_engine(self.url)
        METADATA.create_all(self.engine)
        self.lock = threading.Lock()  # SQLite takes one writer at a time

    def clean(self, text: str | None) -> str | None:
        return redact_pii(text) if (text is not None and self.redact) else text

    def write(self, **row: Any) -> None:
        row["request"] = self.clean(json.dumps(row["request"], ensure_ascii=False))
        row["response"] = self.clean(row.get("response"))
        row.setdefault("created", time.time())
        with self.lock, self.engine.begin() as connection:
            connection.execute(REQUESTS.insert().values(**row))

    def rows(self) -> list[dict[str, Any]]:
        with self.engine.connect() as connection:
            result = connection.execute(sa.select(REQUESTS).order_by(REQUESTS.c.created))
            return [dict(row._mapping) for row in result]

    def close(self) -> None:
        self.engine.dispose()
