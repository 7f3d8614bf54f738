"""The request log: every request and its response, and the feedback on them, which the feedback loop
turns into the next dataset.

One row per request in a SQLAlchemy table (SQLite in `.hone/requests.db` by default, any SQLAlchemy URL
such as Postgres by `serve.request_log`): its response id, route, the version that answered, latency,
tokens, user and status. With `serve.redact_pii` (the default) e-mail addresses, phone numbers, card
numbers, API keys and IBANs are replaced by their labels (the data checks' detectors) before anything is
written. API keys sent to the server are never logged.

Feedback (`POST /v1/feedback`) goes in a second table of the same database, one row per rating of a
response: the rating as given (thumbs or 1-5), its score in [0, 1], an optional corrected answer and a
comment, redacted like the requests.
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


FEEDBACK = sa.Table(
    "feedback",
    METADATA,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("response_id", sa.String(64), nullable=False, index=True),
    sa.Column("created", sa.Float, nullable=False, index=True),
    sa.Column("rating", sa.String(8), nullable=False),  # "up", "down", or "1" to "5"
    sa.Column("score", sa.Float, nullable=False),  # the rating on [0, 1]: down 0, up 1, 1 to 5 evenly between
    sa.Column("correction", sa.Text),  # the answer it should have given
    sa.Column("comment", sa.Text),
    sa.Column("user", sa.String(256)),
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

    def rows(self, since: float | None = None) -> list[dict[str, Any]]:
        """The requests, oldest first; only those from `since` (a time.time()) on when given."""
        query = sa.select(REQUESTS).order_by(REQUESTS.c.created)
        if since is not None:
            query = query.where(REQUESTS.c.created >= since)
        with self.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

    def request(self, response_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(REQUESTS).where(REQUESTS.c.id == response_id)).first()
        return dict(row._mapping) if row is not None else None

    def add_feedback(self, **row: Any) -> None:
        row["correction"] = self.clean(row.get("correction"))
        row["comment"] = self.clean(row.get("comment"))
        row.setdefault("created", time.time())
        with self.lock, self.engine.begin() as connection:
            connection.execute(FEEDBACK.insert().values(**row))

    def feedback(self, since: float | None = None, response_id: str | None = None) -> list[dict[str, Any]]:
        """Feedback rows, oldest first, each with the version that gave the rated answer."""
        query = (
            sa.select(FEEDBACK, REQUESTS.c.version, REQUESTS.c.requested)
            .join(REQUESTS, REQUESTS.c.id == FEEDBACK.c.response_id, isouter=True)
            .order_by(FEEDBACK.c.created)
        )
        if since is not None:
            query = query.where(FEEDBACK.c.created >= since)
        if response_id is not None:
            query = query.where(FEEDBACK.c.response_id == response_id)
        with self.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

    def close(self) -> None:
        self.engine.dispose()
