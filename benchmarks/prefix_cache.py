"""Prefix-cache benchmark: the verification pattern against any OpenAI-compatible server.

The pattern: one verification prompt (proofsmith's ``verify`` template with a problem and a
proof of about ``--proof-words`` words) sampled ``--samples`` times (one request with
``n=SAMPLES``, or SAMPLES requests with ``--no-use-n``), and that repeated ``--rounds``
times (as search re-verifies a pool proof). Every sample after the very first could be
served from the prefix cache.

It reports, per round and in total:

* proofsmith's accounting (``Usage`` of the completions: ``prompt_tokens``,
  ``cached_tokens`` = ``usage.prompt_tokens_details.cached_tokens`` of each response) and
  the cached share = cached / prompt tokens, overall and after the first request;
* the server's ``/metrics`` (Prometheus text) when it has one: the deltas of every counter
  whose name mentions a prefix cache / cache hit / prompt tokens (vLLM:
  ``vllm:prefix_cache_queries_total`` / ``vllm:prefix_cache_hits_total``; SGLang:
  ``sglang:cache_hit_rate``; llama.cpp with ``--metrics``: ``llamacpp:prompt_tokens_total``);
* the raw ``usage`` (and llama.cpp's ``timings``) of one response, to show what the server
  itself reports.

Usage::

    python benchmarks/prefix_cache.py                                   # the embedded llama.cpp server
    python benchmarks/prefix_cache.py --base-url http://127.0.0.1:8000/v1 --model deepseek-ai/DeepSeek-Math-V2 \\
        --samples 16 --rounds 3 --max-tokens 64                         # a vLLM / SGLang server
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import httpx  # noqa: E402

from proofsmith.llm.client import Endpoint, LLMClient  # noqa: E402
from proofsmith.prompts import Templates  # noqa: E402
from proofsmith.records import Usage  # noqa: E402

PROBLEM = ("Let $n \\ge 2$ be an integer and $a_1, \\dots, a_n$ positive reals with product 1. "
           "Prove that $\\sum_i a_i \\ge n$.")
_METRIC_RE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEinfNa]+)\s*$")
_INTERESTING = re.compile(r"prefix_cache|cache_hit|cached|prompt_tokens", re.I)


def proof_text(words: int) -> str:
    """A deterministic proof-like text of about ``words`` words."""
    steps = []
    i = 0
    while sum(len(s.split()) for s in steps) < words:
        i += 1
        steps.append(f"Step {i}. By AM-GM applied to $a_{i}$ and $a_{i + 1}$ we get "
                     f"$a_{i} + a_{i + 1} \\ge 2\\sqrt{{a_{i} a_{i + 1}}}$, and summing these bounds "
                     f"over the first {i} indices keeps the inequality.")
    return "\n\n".join(steps)


def scrape(url: str) -> dict[str, float] | None:
    try:
        r = httpx.get(url, timeout=10)
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        return None
    out: dict[str, float] = {}
    for line in r.text.splitlines():
        m = _METRIC_RE.match(line.strip())
        if m and _INTERESTING.search(m.group(1)):
            try:
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
            except ValueError:
                pass
    return out


def raw_usage(base_url: str, model: str, prompt: str, api_key: str | None) -> dict[str, Any]:
    """The usage (and llama.cpp timings) of one plain request, as the server sends them."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    r = httpx.post(f"{base_url}/chat/completions", headers=headers, timeout=600, json={
        "model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 8, "temperature": 1.0})
    doc = r.json()
    return {k: doc.get(k) for k in ("usage", "timings") if k in doc}


async def run(args: argparse.Namespace, base_url: str, model: str) -> dict[str, Any]:
    # a fresh tag in the problem (default): the run starts with a cold cache for this prompt even
    # when the server has served an earlier run (the template's instructions before the problem
    # stay shared, as between the problems of a real run)
    problem = f"{PROBLEM} (run {args.tag})" if args.tag else PROBLEM
    prompt = Templates.load(None).render("verify", problem=problem, proof=proof_text(args.proof_words))
    messages = [{"role": "user", "content": prompt}]
    metrics_url = args.metrics_url or re.sub(r"/v1/?$", "", base_url) + "/metrics"
    before = scrape(metrics_url)
    ep = Endpoint(base_url=base_url, model=model, api_key=args.api_key, use_n=args.use_n,
                  max_concurrency=args.samples)
    rounds = []
    async with LLMClient(ep, max_retries=2) as client:
        for r in range(args.rounds):
            comps = await client.complete(messages, n=args.samples, role="verify",
                                          max_tokens=args.max_tokens, temperature=1.0, seed=r)
            u = Usage.total([c.usage for c in comps])
            rounds.append({"round": r + 1, "requests": u.calls, "prompt_tokens": u.prompt_tokens,
                           "cached_tokens": u.cached_tokens, "per_request": [c.usage.prompt_tokens for c in comps if c.usage.calls],
                           "cached_per_request": [c.usage.cached_tokens for c in comps if c.usage.calls]})
    after = scrape(metrics_url)
    total = Usage.total([Usage(prompt_tokens=x["prompt_tokens"], cached_tokens=x["cached_tokens"], calls=x["requests"]) for x in rounds])
    prompts = [t for x in rounds for t in x["per_request"]]
    cached = [t for x in rounds for t in x["cached_per_request"]]
    first = prompts[0] if prompts else 0
    doc: dict[str, Any] = {
        "base_url": base_url, "model": model, "samples": args.samples, "rounds": args.rounds, "tag": args.tag,
        "use_n": args.use_n, "prompt_tokens_per_request": first,
        "proofsmith": {
            "requests": total.calls, "prompt_tokens": total.prompt_tokens, "cached_tokens": total.cached_tokens,
            "cached_share": round(total.cached_tokens / total.prompt_tokens, 4) if total.prompt_tokens else None,
            "cached_first_request": cached[0] if cached else None,
            # the requests after the first: their cached / their prompt tokens
            "cached_share_after_first_request": (round(sum(cached[1:]) / sum(prompts[1:]), 4)
                                                 if sum(prompts[1:]) else None),
        },
        "rounds_detail": rounds,
        "metrics_url": metrics_url,
        "metrics": None if before is None or after is None else
        {k: after[k] - before.get(k, 0.0) for k in sorted(after) if after[k] != before.get(k, 0.0)},
    }
    if doc["metrics"] is None:
        doc["metrics_note"] = "no /metrics (or not Prometheus text) at " + metrics_url
    doc["raw_usage_of_one_request"] = raw_usage(base_url, model, prompt, args.api_key)
    return doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-url", help="OpenAI-compatible base URL (…/v1); default: start the embedded llama.cpp server")
    ap.add_argument("--model", help="model name (default: the embedded model's)")
    ap.add_argument("--api-key")
    ap.add_argument("--samples", type=int, default=8, help="samples per round (n)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the same prompt")
    ap.add_argument("--proof-words", type=int, default=300, help="length of the proof in the prompt")
    ap.add_argument("--max-tokens", type=int, default=16, help="tokens per answer (the prompt side is measured)")
    ap.add_argument("--use-n", action=argparse.BooleanOptionalAction, default=None,
                    help="one request with n=SAMPLES (default; off for the embedded llama.cpp server, "
                         "whose n>1 answers report one choice's usage)")
    ap.add_argument("--metrics-url", help="default: the base URL without /v1, plus /metrics")
    ap.add_argument("--tag", default=None,
                    help="text put in the problem so that this run's prompt is new to the server's cache "
                         "(default: a random tag; --tag '' for the same prompt as every untagged run)")
    ap.add_argument("--slots", type=int, default=4, help="embedded server: parallel slots")
    args = ap.parse_args()
    if args.tag is None:
        import uuid

        args.tag = uuid.uuid4().hex[:8]
    server = None
    if args.base_url is None:
        from proofsmith.llm.embedded import EmbeddedServer

        server = EmbeddedServer(n_parallel=args.slots, n_ctx_per_slot=4096).start()
        base_url, model = server.base_url, server.model
        if args.use_n is None:
            args.use_n = False
    else:
        if not args.model:
            ap.error("--model is required with --base-url")
        base_url, model = args.base_url, args.model
    if args.use_n is None:
        args.use_n = True
    try:
        doc = asyncio.run(run(args, base_url, model))
    finally:
        if server is not None:
            server.stop()
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
