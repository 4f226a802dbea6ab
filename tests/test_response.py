"""The pure response parser of the LLM client (no server needed)."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proofsmith.errors import AuthenticationError, BadRequestError, LLMError, NotFoundError, ProofsmithError
from proofsmith.llm.config import Endpoint, Prices
from proofsmith.llm.response import Retryable, parse_response

EP = Endpoint(base_url="http://127.0.0.1:9/v1", model="m")


def parse(status: int, doc, headers=None, indices=(0,), **kw):
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return parse_response(status, headers or {}, data, EP, list(indices), "call-1", "key-1", **kw)


def test_choices_in_index_order_with_usage_cost_and_reasoning():
    doc = {
        "model": "served-name",
        "choices": [
            {"index": 1, "message": {"content": "second"}, "finish_reason": "length"},
            {"index": 0, "message": {"content": "<think>hmm</think>first", "reasoning_content": "field"},
             "finish_reason": "stop"},
        ],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "prompt_tokens_details": {"cached_tokens": 400}},
    }
    prices = Prices(prompt_per_million=1.0, completion_per_million=2.0, cached_prompt_per_million=0.5)
    comps, usage, resp = parse(200, doc, indices=(3, 4), prices=prices)
    # content kept as sent (the role parsers split inline reasoning); reasoning = the field only
    assert [c.text for c in comps] == ["<think>hmm</think>first", "second"]
    assert [c.sample_index for c in comps] == [3, 4]
    assert comps[0].reasoning == "field" and comps[1].reasoning is None
    assert [c.truncated for c in comps] == [False, True]
    assert comps[0].model == "served-name" and comps[0].call_id == "call-1" and comps[0].request_key == "key-1"
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (1000, 500, 400)
    assert usage.cost == pytest.approx((600 * 1.0 + 400 * 0.5 + 500 * 2.0) / 1e6)
    assert comps[0].usage == usage and comps[1].usage.prompt_tokens == 0  # usage on the first only
    assert resp == doc  # the document as received (not slimmed without a store)


def test_slim_response_keeps_lengths_not_texts():
    doc = {"choices": [{"message": {"content": "abc", "reasoning": "de"}}]}
    _, _, resp = parse(200, doc, slim=True)
    assert resp["choices"][0]["message"] == {"content_chars": 3, "reasoning_chars": 2}


def test_content_parts_and_bad_usage_fields():
    doc = {"choices": [{"message": {"content": [{"text": "a"}, {"text": "b"}, "junk"]}}],
           "usage": {"prompt_tokens": "x", "completion_tokens": -3}}
    comps, usage, _ = parse(200, doc)
    assert comps[0].text == "ab"
    assert (usage.prompt_tokens, usage.completion_tokens) == (0, 0)


@pytest.mark.parametrize("status,retry_after", [(429, 7.0), (503, 7.0), (500, None), (408, None)])
def test_retryable_statuses(status, retry_after):
    with pytest.raises(Retryable) as e:
        parse(status, {"error": {"message": "slow down"}}, headers={"Retry-After": "7"})
    assert e.value.retry_after == retry_after
    assert f"HTTP {status}" in str(e.value) and "slow down" in str(e.value)
    assert e.value.response["http_status"] == status


@pytest.mark.parametrize("status,cls,needle", [
    (401, AuthenticationError, "--api-key"), (403, AuthenticationError, "authentication failed"),
    (404, NotFoundError, "'m' not found"), (400, BadRequestError, "bad request"), (422, BadRequestError, "HTTP 422"),
])
def test_fatal_statuses_are_typed_one_line_errors(status, cls, needle):
    with pytest.raises(cls) as e:
        parse(status, {"error": {"message": "nope\nsecond line"}})
    assert isinstance(e.value, LLMError) and isinstance(e.value, ProofsmithError)
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert e.value.response["http_status"] == status


@pytest.mark.parametrize("body", [b"not json", json.dumps({"choices": []}).encode(),
                                  json.dumps({"choices": ["x"]}).encode(), json.dumps([1]).encode()])
def test_malformed_bodies_are_retryable(body):
    with pytest.raises(Retryable):
        parse(200, body)


@pytest.mark.parametrize("body", [
    b"[" * 100_000 + b"]" * 100_000,  # nested past any recursion limit (json.loads: RecursionError)
    b'{"choices": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
    b'{"choices": [{"message": {"content": ' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"}}]}",
])
def test_a_body_nested_too_deep_is_invalid_json_not_a_crash(body):
    with pytest.raises(Retryable, match=r"invalid JSON in response from http://127\.0\.0\.1:9/v1"):
        parse(200, body)


_DEEP = b"[" * 900 + b'"\\ud800"' + b"]" * 900  # within json.loads' limit, past pydantic-core's


@pytest.mark.parametrize("body", [
    b'{"choices": [{"message": {"content": "ok"}}], "extra": ' + _DEEP + b"}",
    b'{"choices": [{"message": {"content": "ok"}}], "extra": ' + _DEEP.replace(b"\\ud800", b"1") + b"}",
])
def test_an_answer_with_a_field_nested_too_deep_is_invalid_json(body):
    """(The surrogate repair recursed, and the store's JSON writer refused such a document.)"""
    with pytest.raises(Retryable, match="invalid JSON"):
        parse(200, body)


def test_an_answer_nested_as_deep_as_allowed_is_kept_in_the_store(tmp_path):
    from proofsmith.store import RunStore

    deep = b"[" * 198 + b'"\\ud800"' + b"]" * 198
    comps, usage, resp = parse(200, b'{"choices": [{"message": {"content": "ok"}}], "extra": ' + deep + b"}", slim=True)
    with RunStore(tmp_path) as store:
        store.record_call(call_id="c", request_key="k", role="r", endpoint=EP.base_url, model="m", request={},
                          response=resp, completions=comps, usage=usage, latency_s=0.1, attempt=1, error=None)
        assert store.calls()[0]["response"]["extra"] == resp["extra"]


@pytest.mark.parametrize("status", [400, 500])
@pytest.mark.parametrize("body", [b"[" * 100_000 + b"]" * 100_000, b'{"error": {"message": ' + _DEEP + b"}}"])
def test_an_error_body_nested_too_deep_is_one_line(status, body):
    with pytest.raises(LLMError if status == 400 else Retryable) as e:
        parse(status, body)
    assert f"HTTP {status}" in str(e.value) and "\n" not in str(e.value) and len(str(e.value)) < 400


@pytest.mark.parametrize("body", [
    '{"choices": [{"message": {"content": "x"}}]}'.encode("utf-16"),  # json.loads reads UTF-16/32
    b'\xef\xbb\xbf{"choices": [{"message": {"content": "x"}}]}',  # and a UTF-8 byte order mark
    b'{"choices": [{"message": {"content": "x\\ud800"}}], "model": "\\udfff"}',  # lone halves
])
def test_bodies_the_fast_reader_refuses_are_read_as_before(body):
    comps, _, _ = parse(200, body)
    assert comps[0].text in ("x", "x\ufffd")


@pytest.mark.parametrize("body", [b'{"choices": [{"message": {"content": "a\nb"}}]}',  # raw control character
                                  b'{"choices": [{"message": {"content": "x"}}],}', b'{"choices": 1} x',
                                  b"\xff\xfe\xfd", b"", b"   "])
def test_invalid_json_stays_invalid(body):
    with pytest.raises(Retryable, match="invalid JSON"):
        parse(200, body)


_json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**80, 2**80), st.floats(allow_nan=False, allow_infinity=False),
              st.text(), st.sampled_from(["\ud800", "a\udfffb", "\ud83d\ude00", "\x00\x1f", "</think>"])),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=30)


@settings(max_examples=400, deadline=None)
@given(doc=_json_values, ascii_escapes=st.booleans(), indent=st.sampled_from([None, 1]))
def test_the_fast_reader_reads_every_document_as_json_loads_does(doc, ascii_escapes, indent):
    """Whatever a body holds, response._read_json returns what json.loads returns (floats to
    the bit, big integers, escapes, key order), or fails where it fails."""
    from proofsmith.llm.response import _read_json

    data = json.dumps(doc, ensure_ascii=ascii_escapes, indent=indent).encode("utf-8", "surrogatepass")
    try:
        want = json.loads(data)
    except ValueError:
        with pytest.raises(ValueError):
            _read_json(data)
        return
    got = _read_json(data)
    assert json.dumps(got, ensure_ascii=True) == json.dumps(want, ensure_ascii=True)
    assert repr(got) == repr(want)


# text with lone UTF-16 halves mixed in (hypothesis' text() never makes them)
_ANY_CHAR = st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr))


def _text(max_size: int):
    return st.lists(_ANY_CHAR, max_size=max_size).map("".join)


@settings(max_examples=300, deadline=None)
@given(content=_text(40), reasoning=_text(20), model=_text(10), ascii_escapes=st.booleans())
def test_any_answer_text_becomes_valid_utf8_text(content, reasoning, model, ascii_escapes):
    """Whatever a server escapes (lone UTF-16 halves included), the completions, usage and
    the response document (slimmed for the store, or whole) encode as UTF-8 and as JSON; only
    lone surrogates change (into U+FFFD)."""
    doc = {"model": model, "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"content": content, "reasoning_content": reasoning}}]}
    data = json.dumps(doc, ensure_ascii=ascii_escapes).encode("utf-8", "surrogatepass")
    if not ascii_escapes and any("\ud800" <= ch <= "\udfff" for ch in content + reasoning + model):
        return  # raw (unescaped) surrogate bytes are not UTF-8: invalid JSON, retried elsewhere
    for slim in (False, True):
        comps, _, resp = parse(200, data, slim=slim)
        comps[0].model_dump_json()
        json.dumps(resp, ensure_ascii=False).encode("utf-8")
        # JSON joins an escaped high + low half into one character; each other half is U+FFFD
        decoded = json.loads(json.dumps(content))
        fixed = "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in decoded)
        assert comps[0].text == fixed


# -- any 200 body: a usable answer or a Retryable, never another exception ---------------------
_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                  st.text(max_size=10), st.sampled_from(["stop", "length", "assistant"]))
_text = st.one_of(st.text(max_size=30), st.sampled_from(["<think>a</think>b", "</think>", "x\ud800", "\udfff\ud800"]))
_part = st.one_of(_text, _leaf, st.fixed_dictionaries({"type": st.sampled_from(["text", "image", 3]),
                                                       "text": st.one_of(_text, _leaf)}))
_message_ok = st.fixed_dictionaries(
    {"content": st.one_of(_text, _leaf, st.lists(_part, max_size=3))},
    optional={"reasoning_content": st.one_of(_text, _leaf), "reasoning": st.one_of(_text, _leaf), "role": _leaf})
_usage = st.one_of(_leaf, st.fixed_dictionaries({}, optional={
    "prompt_tokens": _leaf, "completion_tokens": _leaf,
    "prompt_tokens_details": st.one_of(_leaf, st.fixed_dictionaries({}, optional={"cached_tokens": _leaf}))}))


def _mostly(draw, good, bad, odds: int = 6):
    """``good`` most of the time (so the parser's deep paths run), else ``bad``."""
    return draw(good) if draw(st.sampled_from([True] * odds + [False])) else draw(bad)


@st.composite
def _choice(draw):
    c = {"message": _mostly(draw, _message_ok, _leaf)}
    if draw(st.booleans()):
        c["index"] = _mostly(draw, st.integers(-3, 5), _leaf, 3)
    if draw(st.booleans()):
        c["finish_reason"] = _mostly(draw, st.sampled_from(["stop", "length"]), _leaf)
    return _mostly(draw, st.just(c), _leaf, 8)


@st.composite
def _body(draw):
    doc = draw(st.fixed_dictionaries({}, optional={"usage": _usage, "model": _leaf, "id": _leaf}))
    doc["choices"] = _mostly(draw, st.lists(_choice(), min_size=1, max_size=4), _leaf, 8)
    return _mostly(draw, st.just(doc), _leaf, 12)


@settings(max_examples=400, deadline=None)
@given(doc=_body(), n=st.integers(1, 3), slim=st.booleans())
def test_any_200_body_is_an_answer_that_can_be_stored_or_a_retry(doc, n, slim):
    """Found by this property: a choice index that is not a number, usage counts that are
    infinite or past 2**63, lone surrogates (each raised a raw error, some after the call was
    paid)."""
    data = json.dumps(doc).encode()
    try:
        comps, usage, resp = parse(200, data, indices=range(n), slim=slim,
                                   prices=Prices(prompt_per_million=1.0, completion_per_million=2.0))
    except Retryable:
        return
    assert 1 <= len(comps) <= n
    for c in comps:
        c.model_dump_json()  # what the store writes
    assert 0 <= usage.prompt_tokens < 2**53 and 0 <= usage.completion_tokens < 2**53
    usage.model_dump_json()
    json.dumps(resp, ensure_ascii=False).encode("utf-8")
