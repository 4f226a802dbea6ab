"""Text inputs and label inputs (issue 9, section 6).

* One rule for every text input: UTF-8 (a BOM is dropped), nothing else changed; Latin-1,
  UTF-16 and binary files are refused with one line naming the file and the byte offset, and
  nothing is sent to a model.
* ``verify`` shows the verifier the proof file's exact text (CRLF kept), so ``verify`` and
  ``label`` on the same proof make the same request and give the same ids.
* A generator answer ("## Solution" then "## Self Evaluation") is refused unless
  ``--solution-only`` says to verify only its Solution section: nothing is dropped silently.
* ``label``: one id for two different proofs (``1`` and ``"1"`` included) is refused with both
  line numbers; ``label import-human`` takes only the numbers 0, 0.5 and 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scripted_server import ScriptedServer

from proofsmith.cli import app
from proofsmith.errors import UserError
from proofsmith.inputs import jsonl_rows, read_problem, read_problems_file, read_proof, read_rows, read_text, read_text_file
from proofsmith.pipelines.label import import_human, read_proofs_file

VERIFY_OK = ("Here is my evaluation of the solution:\nEvery step holds.\n\n"
             "Based on my evaluation, the final overall score should be: \\boxed{1}")
LATIN1 = "Soit x réel.\n".encode("latin-1")  # 0xe9 at byte offset 8


def one_error_line(r) -> str:
    lines = [x for x in r.stderr.splitlines() if x.startswith("proofsmith: error:")]
    assert len(lines) == 1, (r.stdout, r.stderr)
    return lines[0]


# ----------------------------------------------------------------------------- one text rule


def _json_of(text: str) -> bytes:
    return json.dumps({"id": "a", "problem": text, "proof": text}, ensure_ascii=False).encode("latin-1") + b"\n"


READERS = {
    "problem .md": ("problem.md", LATIN1, lambda p: read_problem(p)),
    "problem .json": ("problem.json", _json_of("réel"), lambda p: read_problem(p)),
    "proof": ("proof.md", LATIN1, lambda p: read_proof(p)),
    "analysis": ("analysis.md", LATIN1, lambda p: read_text_file(p, "analysis")),
    "jsonl rows": ("rows.jsonl", _json_of("réel"), lambda p: list(jsonl_rows(p))),
    "problems .jsonl": ("problems.jsonl", _json_of("réel"), read_problems_file),
    "problems .csv": ("problems.csv", "id,problem\na,réel\n".encode("latin-1"), read_problems_file),
    "problems .json": ("problems.json", b"[" + _json_of("r\xe9el").strip() + b"]", lambda p: read_rows(p)),
    "label proofs": ("proofs.jsonl", _json_of("réel"), read_proofs_file),
}


@pytest.mark.parametrize("name", list(READERS))
def test_latin1_is_refused_with_file_and_offset(tmp_path, name):
    fname, data, reader = READERS[name]
    f = tmp_path / fname
    f.write_bytes(data)
    offset = data.index(b"\xe9")
    with pytest.raises(UserError) as e:
        reader(f)
    msg = str(e.value)
    assert str(f) in msg and "not UTF-8" in msg and f"byte offset {offset}" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("data,needle", [
    ("Prove it.\n".encode("utf-16"), "UTF-16"),
    (b"\x7fELF\x02\x01\x01\x00\x00\x00", "NUL byte at byte offset 7"),
    ("Prove it.".encode("utf-16-le"), "NUL byte at byte offset 1"),  # UTF-16 without a BOM is valid UTF-8
])
def test_utf16_and_binary_are_refused(tmp_path, data, needle):
    f = tmp_path / "x.md"
    f.write_bytes(data)
    for reader in (read_problem, read_proof, lambda p: read_text_file(p, "analysis")):
        with pytest.raises(UserError, match=needle):
            reader(f)


def test_bom_dropped_and_nothing_else_changed(tmp_path):
    f = tmp_path / "proof.md"
    f.write_bytes(b"\xef\xbb\xbfLine 1\r\nLine 2\r\n\tend \xe2\x80\xa8 \x0c\n")
    assert read_text(f) == "Line 1\r\nLine 2\r\n\tend \u2028 \x0c\n"
    assert read_proof(f) == "Line 1\r\nLine 2\r\n\tend \u2028 \x0c\n"


def test_jsonl_lines_split_at_newline_only(tmp_path):
    # json.dumps(ensure_ascii=False) writes U+2028 / U+0085 raw: they are text inside a string
    f = tmp_path / "p.jsonl"
    rows = [{"problem": "P\u2028Q", "proof": "a\u0085b\x0cc", "id": "x"}, {"problem": "R", "proof": "d", "id": "y"}]
    f.write_bytes(("\r\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\r\n").encode())
    got = list(jsonl_rows(f))
    assert [n for n, _ in got] == [1, 2] and [r for _, r in got] == rows
    assert [(i.proof_id, i.proof) for i in read_proofs_file(f)] == [("x", "a\u0085b\x0cc"), ("y", "d")]


def test_csv_quoted_newlines_kept(tmp_path):
    f = tmp_path / "p.csv"
    f.write_bytes(b'id,problem\r\na,"Line 1\r\nLine 2"\r\nb,"x\xe2\x80\xa8y"\r\n')
    probs = read_problems_file(f)
    assert [(p.id, p.statement) for p in probs] == [("a", "Line 1\r\nLine 2"), ("b", "x\u2028y")]


def test_cli_refuses_latin1_and_sends_nothing(tmp_path):
    with ScriptedServer(default=VERIFY_OK) as srv:
        (tmp_path / "problem.md").write_text("Prove that 1 = 1.\n")
        (tmp_path / "proof.md").write_bytes(LATIN1)
        common = ["--model", "m", "--base-url", srv.base_url, "--run-dir", str(tmp_path / "run")]
        r = CliRunner().invoke(app, ["verify", str(tmp_path / "problem.md"), str(tmp_path / "proof.md"), *common])
        assert r.exit_code == 1
        line = one_error_line(r)
        assert "proof.md: not UTF-8 text" in line and "byte offset 8" in line
        (tmp_path / "problems.jsonl").write_bytes(_json_of("réel"))
        r = CliRunner().invoke(app, ["search", "--problems", str(tmp_path / "problems.jsonl"), *common])
        assert r.exit_code == 1 and "problems.jsonl: not UTF-8 text" in one_error_line(r)
        r = CliRunner().invoke(app, ["prove", str(tmp_path / "proof.md"), *common])
        assert r.exit_code == 1 and "not UTF-8 text" in one_error_line(r)
        assert srv.requests == []


def test_a_lone_surrogate_escape_is_refused_with_file_and_line(tmp_path):
    # json.loads turns "\ud800" into a string no UTF-8 request can carry: refused where it is read
    bad = tmp_path / "problems.jsonl"
    bad.write_text('{"id": "a", "problem": "fine"}\n{"id": "b", "problem": "half \\ud800 a character"}\n')
    with pytest.raises(UserError, match=r"problems.jsonl: line 2: .*lone UTF-16 surrogate"):
        list(jsonl_rows(bad))
    whole = tmp_path / "problems.json"
    whole.write_text('[{"id": "b", "problem": "\\udfff"}]')
    with pytest.raises(UserError, match=r"problems.json: .*lone UTF-16 surrogate"):
        read_rows(whole)
    # a pair of escapes is one character, and stays welcome
    ok = tmp_path / "ok.jsonl"
    ok.write_text('{"id": "c", "problem": "smile \\ud83d\\ude00"}\n')
    assert [o["problem"] for _, o in jsonl_rows(ok)] == ["smile \U0001f600"]
    with ScriptedServer(default=VERIFY_OK) as srv:
        r = CliRunner().invoke(app, ["search", "--problems", str(bad), "--model", "m", "--base-url", srv.base_url,
                                     "--run-dir", str(tmp_path / "run")])
        assert r.exit_code == 1 and "lone UTF-16 surrogate" in one_error_line(r)
        assert srv.requests == []


_DEEP = "[" * 100_000 + "]" * 100_000
_LONG_INT = "9" * 5000  # Python refuses int strings over 4300 digits


@pytest.mark.parametrize("name,body,needle", [
    ("problems.jsonl", '{"id": "a", "problem": "x"}\n{"id": ' + _LONG_INT + ', "problem": "y"}\n',
     r"problems.jsonl: line 2: not valid JSON \(a number longer than 4300 digits at column 8\)"),
    ("problems.jsonl", '{"id": "a", "problem": "x", "meta": ' + _DEEP + '}\n',
     r"problems.jsonl: line 1: not valid JSON \(arrays or objects nested \d+ levels deep at column \d+\)"),
    ("problems.json", '[{"id": "a", "problem": "x", "meta": ' + _DEEP + '}]',
     r"problems.json: not valid JSON \(line 1, column \d+\): arrays or objects nested \d+ levels deep"),
    ("proofs.jsonl", '{"id": "a", "problem": "x", "proof": "p", "n": ' + _LONG_INT + '}\n',
     r"proofs.jsonl: line 1: not valid JSON \(a number longer than 4300 digits"),
])
def test_json_too_deep_or_too_long_a_number_is_refused_with_file_and_line(tmp_path, name, body, needle):
    # json.loads fails on these with RecursionError / a bare ValueError, not a JSONDecodeError
    path = tmp_path / name
    path.write_text(body)
    read = read_proofs_file if name.startswith("proofs") else read_rows
    with pytest.raises(UserError, match=needle):
        read(path)


def test_problem_json_file_nested_too_deep_is_one_line(tmp_path):
    path = tmp_path / "problem.json"
    path.write_text('{"problem": "x", "meta": ' + _DEEP + '}')
    with pytest.raises(UserError, match=r"problem.json: not valid JSON .*nested \d+ levels deep"):
        read_problem(path)


# ----------------------------------------------------------------------------- exact proofs


def test_verify_sees_crlf_exactly_and_label_reuses_its_calls(tmp_path):
    proof_text = "Let n = 2k+1.\r\nThen n^2 = 4k(k+1) + 1.\r\n"
    with ScriptedServer(default=VERIFY_OK) as srv:
        (tmp_path / "problem.md").write_text("Prove that odd squares are 1 mod 8.\n")
        (tmp_path / "proof.md").write_bytes(proof_text.encode())
        run = str(tmp_path / "run")
        common = ["--model", "m", "--base-url", srv.base_url, "--run-dir", run, "--json"]
        r = CliRunner().invoke(app, ["verify", str(tmp_path / "problem.md"), str(tmp_path / "proof.md"), "-n", "2", *common])
        assert r.exit_code == 0, r.output
        ver = json.loads(r.stdout)["verifications"]
        assert len(srv.requests) >= 1 and all(proof_text in q.prompt for q in srv.requests)
        sent = len(srv.requests)
        # the same proof (the file's exact text) given to label: same request, same ids, no new call
        rows = tmp_path / "proofs.jsonl"
        rows.write_text(json.dumps({"problem_id": "problem", "problem": "Prove that odd squares are 1 mod 8.",
                                    "proof": proof_text, "id": "odd"}) + "\n")
        r = CliRunner().invoke(app, ["label", str(rows), "--n", "2", "--k", "1", *common])
        assert r.exit_code == 0, r.output
        doc = json.loads(r.stdout[r.stdout.index("{"):])
        assert len(srv.requests) == sent
        assert [a["id"] for a in doc["items"][0]["analyses"]] == [v["id"] for v in ver]
        assert {v["proof_id"] for v in ver} == {v["proof_id"] for v in ver[:1]}


GEN = ("## Solution\nThe proof.\n\n## Self Evaluation\nHidden step: x = 1.\n"
       "Based on my evaluation, the final overall score should be: \\boxed{1}\n")


def test_generator_answer_needs_solution_only(tmp_path):
    f = tmp_path / "answer.md"
    f.write_text(GEN)
    with pytest.raises(UserError, match="answer.md: is a generator answer .*--solution-only"):
        read_proof(f)
    assert read_proof(f, solution_only=True) == "The proof."
    plain = tmp_path / "plain.md"
    plain.write_text("## Solution\nAll of it.\n\n## Remarks\nMore of the proof.\n")
    assert read_proof(plain) == plain.read_text()  # no self-evaluation: nothing is cut
    with pytest.raises(UserError, match="--solution-only needs a generator answer"):
        read_proof(plain, solution_only=True)


def test_cli_generator_answer(tmp_path):
    with ScriptedServer(default=VERIFY_OK) as srv:
        (tmp_path / "problem.md").write_text("Prove it.\n")
        (tmp_path / "answer.md").write_text(GEN)
        args = ["verify", str(tmp_path / "problem.md"), str(tmp_path / "answer.md"), "--model", "m",
                "--base-url", srv.base_url, "--run-dir", str(tmp_path / "run")]
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 1 and "--solution-only" in one_error_line(r)
        assert srv.requests == []
        r = CliRunner().invoke(app, [*args, "--solution-only", "--json"])
        assert r.exit_code == 0, r.output
        assert srv.requests and all("The proof." in q.prompt and "Hidden step" not in q.prompt for q in srv.requests)


# ----------------------------------------------------------------------------- label inputs


def _rows(tmp_path: Path, *rows: object, name: str = "p.jsonl") -> Path:
    f = tmp_path / name
    f.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return f


@pytest.mark.parametrize("id_a,id_b", [("a", "a"), (1, "1"), (7, 7)])
def test_one_id_for_two_proofs_is_refused_with_lines(tmp_path, id_a, id_b):
    f = _rows(tmp_path, {"problem": "S", "proof": "First.", "id": id_a}, {"problem": "S", "proof": "Other.", "id": "z"},
              {"problem": "S", "proof": "Second.", "id": id_b})
    with pytest.raises(UserError, match=rf"p.jsonl: proof id '{id_a}' is used for two different proofs \(line 1 and line 3\)"):
        read_proofs_file(f)


def test_same_proof_twice_is_one_item_and_proof_id_column(tmp_path):
    f = _rows(tmp_path, {"problem": "S", "proof": "P.", "id": 1}, {"problem": "S", "proof": "P.", "proof_id": "1"})
    assert [(i.proof_id, i.proof) for i in read_proofs_file(f)] == [("1", "P.")]
    # a 0 id is an id, not "no id"
    f = _rows(tmp_path, {"problem": "S", "proof": "P.", "id": 0})
    assert [i.proof_id for i in read_proofs_file(f)] == ["0"]


def test_one_proof_for_two_problems_or_two_statements_is_refused(tmp_path):
    f = _rows(tmp_path, {"problem": "S", "problem_id": "q", "proof": "P.", "id": "a"},
              {"problem": "T", "problem_id": "q", "proof": "Q.", "id": "b"})
    with pytest.raises(UserError, match=r"problem id 'q' names two different problem statements \(line 1 and line 2\)"):
        read_proofs_file(f)
    f = _rows(tmp_path, {"problem": "S", "problem_id": "q", "proof": "P.", "id": "a"},
              {"problem": "T", "problem_id": "r", "proof": "P.", "id": "a"})
    with pytest.raises(UserError, match=r"proof id 'a' is used for two different proofs \(line 1 and line 2\)"):
        read_proofs_file(f)


@pytest.mark.parametrize("bad", [True, 1.5, [1], {"x": 1}])
def test_ids_are_text_or_integers(tmp_path, bad):
    f = _rows(tmp_path, {"problem": "S", "proof": "P.", "id": bad})
    with pytest.raises(UserError, match=r"line 1: 'id' must be text or an integer"):
        read_proofs_file(f)


def test_prove_json_duplicates_are_refused(tmp_path):
    doc = {"problems": [
        {"problem": {"id": "q", "statement": "S"}, "proofs": [{"id": "p1", "proof": "A."}]},
        {"problem": {"id": "q", "statement": "S"}, "pool": [{"id": "p1", "proof": "B."}]},
    ]}
    f = tmp_path / "out.json"
    f.write_text(json.dumps(doc))
    with pytest.raises(UserError, match=r"proof id 'p1' is used for two different proofs \(problems\[0\].proofs\[0\] and problems\[1\].pool\[0\]\)"):
        read_proofs_file(f)


def test_cli_label_duplicate_ids_one_line_no_calls(tmp_path):
    with ScriptedServer(default=VERIFY_OK) as srv:
        f = _rows(tmp_path, {"problem": "S", "proof": "First.", "id": 1}, {"problem": "S", "proof": "Second.", "id": "1"})
        r = CliRunner().invoke(app, ["label", str(f), "--model", "m", "--base-url", srv.base_url,
                                     "--run-dir", str(tmp_path / "run")])
        assert r.exit_code == 1
        assert "proof id '1' is used for two different proofs (line 1 and line 2)" in one_error_line(r)
        assert srv.requests == []


def test_label_rerun_with_an_id_of_another_proof_is_refused(tmp_path):
    with ScriptedServer(default=VERIFY_OK) as srv:
        common = ["--model", "m", "--base-url", srv.base_url, "--run-dir", str(tmp_path / "run"), "--n", "1", "--k", "1"]
        f = _rows(tmp_path, {"problem": "S", "proof": "First.", "id": "a"})
        assert CliRunner().invoke(app, ["label", str(f), *common]).exit_code == 0
        g = _rows(tmp_path, {"problem": "S", "proof": "Changed.", "id": "a"}, name="q.jsonl")
        sent = len(srv.requests)
        r = CliRunner().invoke(app, ["label", str(g), *common])
        assert r.exit_code == 1 and "proof id 'a' is already labeled in" in one_error_line(r)
        assert len(srv.requests) == sent


@pytest.fixture
def labeled_run(tmp_path):
    with ScriptedServer(default=VERIFY_OK) as srv:
        f = _rows(tmp_path, {"problem": "S", "proof": "First.", "id": "a"}, {"problem": "S", "proof": "Second.", "id": "b"})
        run = tmp_path / "run"
        r = CliRunner().invoke(app, ["label", str(f), "--model", "m", "--base-url", srv.base_url,
                                     "--run-dir", str(run), "--n", "1", "--k", "1"])
        assert r.exit_code == 0, r.output
    return run


@pytest.mark.parametrize("value", ["true", '"1"', '"0.5"', "NaN", "Infinity", "2", "-0.5", "[1]", '""'])
def test_import_human_takes_only_numbers_0_half_1(labeled_run, tmp_path, value):
    from proofsmith.store import RunStore

    f = tmp_path / "h.jsonl"
    f.write_text(f'{{"proof_id": "b", "label": 1}}\n{{"proof_id": "a", "label": {value}}}\n')
    r = CliRunner().invoke(app, ["label", "import-human", str(f), "--run-dir", str(labeled_run)])
    assert r.exit_code == 1
    assert "h.jsonl: line 2: label must be 0, 0.5 or 1 (a JSON number" in one_error_line(r)
    with RunStore(labeled_run) as store:  # nothing imported
        assert {x["label"]["status"] for x in store.records("LabelItem")} == {"labeled"}


def test_import_human_duplicates_refused_null_skipped(labeled_run, tmp_path):
    from proofsmith.store import RunStore

    f = tmp_path / "h.jsonl"
    f.write_text('{"proof_id": "a", "label": 0}\n{"proof_id": "a", "label": 1}\n')
    with RunStore(labeled_run) as store:
        with pytest.raises(UserError, match="line 2: proof_id 'a' already has a decision at line 1"):
            import_human(store, f)
        f.write_text('{"proof_id": "a", "label": 0}\n{"proof_id": "b", "label": null}\n')
        assert import_human(store, f) == {"imported": 1, "skipped": 1}


def test_training_config_file_follows_the_text_rule(tmp_path):
    from proofsmith.errors import TrainError
    from proofsmith.train.config import load_yaml

    f = tmp_path / "c.yaml"
    f.write_bytes("# réglages\nseed: 1\n".encode("latin-1"))
    with pytest.raises(TrainError, match=r"c.yaml: not UTF-8 text \(byte 0xe9 at byte offset 3"):
        load_yaml(f)


# -------------------------------------------------------- any file: its rows or one UserError
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from proofsmith.evaluate.predictions import load_predictions  # noqa: E402

_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(allow_nan=True, allow_infinity=True),
                  st.text(max_size=20), st.sampled_from(["problem", "1", "", " ", "IMO2025-1", "7"]))
_key = st.sampled_from(["id", "problem", "proof", "problem_id", "statement", "question", "grade", "points",
                        "model_prediction", "problem_idx", "human_rating", "solution", "max_points", "source"])
_doc = st.recursive(_leaf, lambda k: st.lists(k, max_size=3) | st.dictionaries(_key | st.text(max_size=4), k, max_size=5),
                    max_leaves=10)
_FILE_READERS = [("p.jsonl", read_problems_file), ("p.json", read_problems_file), ("p.csv", read_problems_file),
                 ("q.json", read_problem), ("proofs.jsonl", read_proofs_file), ("proofs.json", read_proofs_file),
                 ("pred.jsonl", load_predictions), ("pred.csv", load_predictions)]


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(docs=st.lists(_doc, min_size=1, max_size=3), which=st.sampled_from(range(len(_FILE_READERS))),
       raw=st.one_of(st.none(), st.binary(max_size=60)))
def test_any_input_file_gives_its_rows_or_one_user_error(tmp_path_factory, docs, which, raw):
    name, read = _FILE_READERS[which]
    if raw is not None:
        data = raw
    elif name.endswith(".csv"):
        keys = sorted({k for d in docs if isinstance(d, dict) for k in d}) or ["id"]
        data = "\n".join([",".join(keys)] + [",".join(json.dumps(d.get(k)) if isinstance(d, dict) else "x"
                                                      for k in keys) for d in docs]).encode()
    elif name.endswith(".jsonl"):
        data = "\n".join(json.dumps(d) for d in docs).encode()
    else:
        data = json.dumps(docs[0] if len(docs) == 1 else docs).encode()
    path = tmp_path_factory.mktemp("any") / name
    path.write_bytes(data)
    try:
        read(path)
    except UserError as e:
        assert "\n" not in str(e).strip()
