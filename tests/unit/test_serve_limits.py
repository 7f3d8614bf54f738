"""hone serve's per-client rate limit: a token bucket per API key (or address), at hand-counted times."""

from __future__ import annotations

import pytest

from hone.serve.app import RateLimiter


def test_a_client_gets_its_budget_then_waits_for_the_refill() -> None:
    limiter = RateLimiter(per_minute=3)
    assert [limiter.take("key-a", now=0.0) for _ in range(3)] == [None, None, None]
    assert limiter.take("key-a", now=0.0) == pytest.approx(20.0)  # one request every 20 s
    assert limiter.take("key-b", now=0.0) is None, "another key has its own bucket"
    assert limiter.take("key-a", now=10.0) == pytest.approx(10.0)
    assert limiter.take("key-a", now=20.0) is None
    assert limiter.take("key-a", now=20.0) == pytest.approx(20.0)


def test_an_idle_client_refills_to_its_budget_and_no_further() -> None:
    limiter = RateLimiter(per_minute=2)
    assert limiter.take("k", now=0.0) is None and limiter.take("k", now=0.0) is None
    assert [limiter.take("k", now=3600.0) for _ in range(3)][:2] == [None, None]
    assert limiter.take("k", now=3600.0) is not None, "an hour idle still buys only 2"


def test_no_limit_lets_everything_through() -> None:
    limiter = RateLimiter(per_minute=None)
    assert all(limiter.take("k", now=0.0) is None for _ in range(1000))
