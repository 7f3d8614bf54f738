"""Operate: what happens to a model after it is served, and the loop back to a better one.

`report` and `monitor` (the request log per route and version, thresholds, the canary rule), `drift`
(recent prompts against the training split), `feedback` (the ratings clients sent), `from_logs`
(corrections into a dataset version) and `retrain` (production's recipe on the new data, gated into
staging).
"""
