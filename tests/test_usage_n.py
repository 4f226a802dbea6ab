"""What ``prompt_tokens`` means for ``n`` requests (docs/serving.md, "What proofsmith's
accounting shows"): a server reports a request's prompt once for all its choices (vLLM, OpenAI;
the scripted server does the same), and proofsmith counts it once per HTTP request: on the
request's first sample, zeros on the others; the client's usage, the run store's summary and
the records' usage all agree."""

from __future__ import annotations

from proofsmith import roles
from proofsmith.llm import Endpoint, LLMClient
from proofsmith.records import Problem, Usage
from proofsmith.store import RunStore

PROMPT = [{"role": "user", "content": "one two three four five six seven"}]  # 7 prompt tokens
VER = "Here is my evaluation of the solution:\nFine.\n\nBased on my evaluation, the final overall score should be: \\boxed{1}"


async def test_an_n_request_counts_its_prompt_once_on_its_first_sample(scripted_server, tmp_path):
    scripted_server.default = "a b c"  # 3 completion tokens per choice
    store = RunStore(tmp_path)
    async with LLMClient(Endpoint(base_url=scripted_server.base_url, model="m"), store=store) as c:
        out = await c.complete(PROMPT, n=4)
    assert len(scripted_server.requests) == 1 and scripted_server.requests[0].n == 4
    assert [x.usage.prompt_tokens for x in out] == [7, 0, 0, 0]
    assert [x.usage.completion_tokens for x in out] == [12, 0, 0, 0]  # the request's total, once
    assert [x.usage.calls for x in out] == [1, 0, 0, 0]
    assert (c.usage.prompt_tokens, c.usage.completion_tokens, c.usage.calls) == (7, 12, 1)
    assert Usage.total([x.usage for x in out]) == c.usage
    s = store.summary()
    assert (s["prompt_tokens"], s["completion_tokens"], s["calls"], s["completions"]) == (7, 12, 1, 4)
    # read back from the store: the same attribution, nothing paid or counted again
    async with LLMClient(Endpoint(base_url=scripted_server.base_url, model="m"), store=store) as c2:
        again = await c2.complete(PROMPT, n=4)
    assert [x.usage.prompt_tokens for x in again] == [7, 0, 0, 0] and c2.usage == Usage()
    store.close()


async def test_one_request_per_sample_counts_the_prompt_per_sample(scripted_server):
    scripted_server.default = "a b c"
    async with LLMClient(Endpoint(base_url=scripted_server.base_url, model="m", use_n=False)) as c:
        out = await c.complete(PROMPT, n=4)
    assert len(scripted_server.requests) == 4
    assert [x.usage.prompt_tokens for x in out] == [7, 7, 7, 7]
    assert (c.usage.prompt_tokens, c.usage.completion_tokens, c.usage.calls) == (28, 12, 4)


async def test_batches_of_a_prompt_count_it_once_per_batch_and_records_sum_to_the_spend(scripted_server, tmp_path):
    """Verification drawn in batches (the adaptive policy: ``start``): one n=b request per
    batch; the records' usage (``usage_total``) sums to what the client spent."""
    scripted_server.default = VER
    problem = Problem(id="q", statement="Show it.")
    store = RunStore(tmp_path)
    async with LLMClient(Endpoint(base_url=scripted_server.base_url, model="m"), store=store) as c:
        first = await roles.verify(c, problem, "the proof", n=4)
        second = await roles.verify(c, problem, "the proof", n=4, start=4)
    assert [r.n for r in scripted_server.requests] == [4, 4]
    prompt = scripted_server.requests[0].prompt
    words = len(prompt.split())
    assert [v.usage.prompt_tokens for v in first + second] == [words, 0, 0, 0, words, 0, 0, 0]
    assert Usage.total([v.usage for v in first + second]) == c.usage
    assert c.usage.prompt_tokens == store.summary()["prompt_tokens"] == 2 * words
    store.close()
