"""The call counter shown on stderr during long commands."""

from __future__ import annotations

from proofsmith.cli.progress import CallProgress
from proofsmith.records import Usage


def test_call_progress_counts_calls_reuse_retries_and_failovers():
    p = CallProgress("search", enabled=False)
    p.event("call_start", {})
    p.event("call_start", {})
    p.event("call_end", {"usage": Usage(prompt_tokens=10, completion_tokens=5)})
    p.event("cache_hit", {"count": 3})
    p.event("retry", {})
    p.event("failover", {"from": "http://a/v1", "to": "http://b/v1"})
    p.event("something_new", {})  # unknown kinds are ignored
    stats = p._progress.tasks[0].fields["stats"]
    assert stats == "calls 1/2  reused 3  tokens 15  retries 1  failovers 1"
