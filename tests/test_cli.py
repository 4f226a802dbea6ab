"""The CLI contract: JSON shapes, resume on a run directory, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from scripted_server import ScriptedServer

GEN_ANSWER = (
    "## Solution\nLet n = 2k+1. Then n^2 = 4k(k+1) + 1 and k(k+1) is even, so n^2 = 1 mod 8.\n\n"
    "## Self Evaluation\nHere is my evaluation of the solution:\nThe argument is complete.\n\n"
    "Based on my evaluation, the final overall score should be:\n\\boxed{1}"
)
VER_ANSWER = (
    "Here is my evaluation of the solution:\nThe proof is correct but skips why k(k+1) is even.\n\n"
    "Based on my evaluation, the final overall score should be: \\boxed{0.5}"
)
META_ANSWER = (
    'Here is my analysis of the "solution evaluation":\nThe issue named is real and minor.\n\n'
    'Based on my analysis, I will rate the "solution evaluation" as: \\boxed{1}'
)


def cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    for k in ("PROOFSMITH_BASE_URL", "PROOFSMITH_MODEL", "PROOFSMITH_API_KEY", "OPENAI_API_KEY", "PROOFSMITH_DEBUG"):
        e.pop(k, None)
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "proofsmith.cli", *args],
        capture_output=True, text=True, timeout=timeout, env=e,
    )


def assert_one_line_error(p: subprocess.CompletedProcess, *needles: str) -> None:
    assert p.returncode != 0
    assert "Traceback" not in p.stderr, p.stderr
    lines = [line for line in p.stderr.splitlines() if line.startswith("proofsmith: error:")]
    assert len(lines) == 1, p.stderr
    for n in needles:
        assert n.lower() in lines[0].lower(), lines[0]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    problem = tmp_path / "problem.md"
    problem.write_text("Prove that the square of every odd integer is 1 mod 8.\n")
    proof = tmp_path / "proof.md"
    proof.write_text(GEN_ANSWER)  # a full generator answer: verified with --solution-only
    analysis = tmp_path / "analysis.md"
    analysis.write_text(VER_ANSWER)
    empty = tmp_path / "empty.md"
    empty.write_text("  \n")
    return {"problem": problem, "proof": proof, "analysis": analysis, "empty": empty, "dir": tmp_path}


def serve_roles() -> ScriptedServer:
    srv = ScriptedServer(default="unscripted")
    srv.route("solution evaluation", META_ANSWER)  # meta-verify prompt mentions the evaluation
    srv.route(lambda r: "## Self Evaluation" in r.prompt and "Let n = 2k+1" not in r.prompt, GEN_ANSWER)
    srv.route("Let n = 2k+1", VER_ANSWER)
    return srv.start()


def test_prove_verify_meta_verify_json_and_resume(files):
    srv = serve_roles()
    try:
        common = ["--model", "m", "--base-url", srv.base_url, "--json"]
        run = str(files["dir"] / "run")
        p = cli("prove", str(files["problem"]), "--samples", "3", "--run-dir", run, *common)
        assert p.returncode == 0, p.stderr
        doc = json.loads(p.stdout)
        assert len(doc["proofs"]) == 3
        for pr in doc["proofs"]:
            assert pr["self_score"] == 1.0 and pr["format_error"] is None
            assert pr["proof"].startswith("Let n = 2k+1")
            assert "Self Evaluation" not in pr["proof"]
        assert doc["usage"]["completion_tokens"] > 0 and doc["usage"]["calls"] >= 1
        sent = len(srv.requests)

        # same command, same run dir: no new request, same answer
        p2 = cli("prove", str(files["problem"]), "--samples", "3", "--run-dir", run, *common)
        assert p2.returncode == 0, p2.stderr
        assert len(srv.requests) == sent
        assert [x["proof"] for x in json.loads(p2.stdout)["proofs"]] == [x["proof"] for x in doc["proofs"]]
        assert json.loads(p2.stdout)["usage"]["calls"] == 0

        p = cli("verify", str(files["problem"]), str(files["proof"]), "-n", "4", "--solution-only", "--run-dir", run, *common)
        assert p.returncode == 0, p.stderr
        v = json.loads(p.stdout)["verifications"]
        assert [x["score"] for x in v] == [0.5] * 4
        # the verifier saw only the proof body, never the self-evaluation
        ver_prompts = [r.prompt for r in srv.requests if "Let n = 2k+1" in r.prompt and "solution evaluation" not in r.prompt]
        assert ver_prompts and all("final overall score should be:\n\\boxed{1}" not in t for t in ver_prompts)

        p = cli("meta-verify", str(files["problem"]), str(files["proof"]), str(files["analysis"]), "--solution-only", "--run-dir", run, *common)
        assert p.returncode == 0, p.stderr
        m = json.loads(p.stdout)["meta_verifications"]
        assert len(m) == 1 and m[0]["score"] == 1.0

        p = cli("runs", "show", run, "--json")
        assert p.returncode == 0, p.stderr
        summary = json.loads(p.stdout)
        assert summary["calls"] == len(srv.requests)
    finally:
        srv.stop()


def test_format_failure_is_a_record_not_a_crash(files):
    with ScriptedServer(default="I think the proof is fine.") as srv:
        p = cli("verify", str(files["problem"]), str(files["proof"]), "--solution-only", "--model", "m",
                "--base-url", srv.base_url, "--run-dir", str(files["dir"] / "r"), "--json")
        assert p.returncode == 0, p.stderr
        v = json.loads(p.stdout)["verifications"][0]
        assert v["score"] is None and v["format_error"]


def test_markdown_output(files):
    srv = serve_roles()
    try:
        p = cli("prove", str(files["problem"]), "--model", "m", "--base-url", srv.base_url,
                "--run-dir", str(files["dir"] / "r"))
        assert p.returncode == 0, p.stderr
        assert "# Proofs for problem" in p.stdout and "self-score: 1" in p.stdout
    finally:
        srv.stop()


@pytest.mark.parametrize("which", ["missing", "empty"])
def test_bad_problem_file(files, which):
    path = files["empty"] if which == "empty" else files["dir"] / "nope.md"
    p = cli("prove", str(path), "--model", "m", "--base-url", "http://127.0.0.1:9/v1")
    assert_one_line_error(p, "problem file", "empty" if which == "empty" else "not found")


def test_bad_proof_file(files):
    p = cli("verify", str(files["problem"]), str(files["empty"]), "--model", "m", "--base-url", "http://127.0.0.1:9/v1")
    assert_one_line_error(p, "proof file is empty")


def test_unreachable_server(files):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once we leave: nothing listens there
    p = cli("prove", str(files["problem"]), "--model", "m", "--base-url", f"http://127.0.0.1:{port}/v1",
            "--retries", "1", "--run-dir", str(files["dir"] / "r"))
    assert_one_line_error(p, f"127.0.0.1:{port}")


def test_rejected_api_key(files):
    with ScriptedServer(api_key="right") as srv:
        p = cli("prove", str(files["problem"]), "--model", "m", "--base-url", srv.base_url,
                "--api-key", "wrong", "--run-dir", str(files["dir"] / "r"))
        assert_one_line_error(p, "401")
        assert len(srv.requests) == 1  # never retried


@pytest.mark.parametrize("key,where", [
    ("--api-key", "the API key from --api-key"),
    ("PROOFSMITH_API_KEY", "the API key from the environment variable PROOFSMITH_API_KEY"),
    ("OPENAI_API_KEY", "the API key from the environment variable OPENAI_API_KEY"),
    ("MY_KEY", "models.m.api_key_env (the environment variable MY_KEY)"),
])
@pytest.mark.parametrize("bad,why", [("sk-secret-\U0001f642", "(U+1F642) is not Latin-1"),
                                     ("sk-secret-\n", "(U+000A) is a control character")])
def test_an_api_key_http_cannot_carry_is_one_line_naming_its_source(files, key, where, bad, why):
    # was the codec's "'latin-1' codec can't encode character ..." from the HTTP layer
    (files["dir"] / "models.toml").write_text('[models.m]\nbase_urls = ["http://127.0.0.1:9/v1"]\napi_key_env = "MY_KEY"\n')
    args = ["prove", str(files["problem"]), "--model", "m", "--run-dir", str(files["dir"] / "r")]
    if key == "MY_KEY":
        args += ["--config", str(files["dir"] / "models.toml")]
    else:
        args += ["--base-url", "http://127.0.0.1:9/v1"]
    if key == "--api-key":
        args += ["--api-key", bad]
    p = cli(*args, env={} if key == "--api-key" else {key: bad})
    assert_one_line_error(p, where, "cannot be sent in an HTTP header", why)
    assert "secret" not in p.stderr + p.stdout
    assert not (files["dir"] / "r").exists()


def test_unknown_model(files):
    with ScriptedServer(served_model="real-model") as srv:
        p = cli("prove", str(files["problem"]), "--model", "no-such-model", "--base-url", srv.base_url,
                "--run-dir", str(files["dir"] / "r"))
        assert_one_line_error(p, "no-such-model")
        assert len(srv.requests) == 1


def test_model_required_with_base_url(files):
    p = cli("prove", str(files["problem"]), "--base-url", "http://127.0.0.1:9/v1")
    assert_one_line_error(p, "--model is required")


def test_env_configuration(files):
    srv = serve_roles()
    try:
        p = cli("prove", str(files["problem"]), "--json", "--run-dir", str(files["dir"] / "r"),
                env={"PROOFSMITH_BASE_URL": srv.base_url, "PROOFSMITH_MODEL": "m", "PROOFSMITH_API_KEY": "k"})
        assert p.returncode == 0, p.stderr
        assert srv.requests[0].headers.get("Authorization") == "Bearer k"
        assert srv.requests[0].body["model"] == "m"
    finally:
        srv.stop()


def test_runs_show_rejects_non_run_dir(files):
    assert_one_line_error(cli("runs", "show", str(files["dir"])), "not a proofsmith run directory")


def test_help_documents_every_option():
    p = cli("prove", "--help", env={"COLUMNS": "200"})
    assert p.returncode == 0
    for opt in ("--samples", "--model", "--base-url", "--api-key", "--run-dir", "--templates", "--json",
                "--temperature", "--top-p", "--max-output-tokens", "--retries", "--price-prompt"):
        assert opt in p.stdout, opt


def test_templates_import_then_prove_with_them(tmp_path):
    """`templates import` converts a released-style file (never executed) into a --templates dir
    that `prove` then uses."""
    released = Path(__file__).parent / "data" / "released_templates" / "math_templates.py"
    out_dir = tmp_path / "released"
    p = cli("templates", "import", str(released), "--out", str(out_dir))
    assert p.returncode == 0, p.stderr
    assert sorted(f.name for f in out_dir.iterdir()) == ["generate.txt", "meta_verify.txt", "refine.txt", "verify.txt"]
    with ScriptedServer(default=GEN_ANSWER) as srv:
        p = cli("prove", str(tmp_path / "nope.md"), "--templates", str(out_dir))
        assert_one_line_error(p, "not found")
        problem = tmp_path / "q.md"
        problem.write_text("Prove that 1 = 1.")
        p = cli("prove", str(problem), "--templates", str(out_dir), "--model", "m", "--base-url", srv.base_url,
                "--run-dir", str(tmp_path / "r"), "--json")
        assert p.returncode == 0, p.stderr
        expected = (out_dir / "generate.txt").read_text().strip().replace("{problem}", "Prove that 1 = 1.")
        assert srv.requests[0].prompt == expected


def test_templates_import_missing_file(tmp_path):
    assert_one_line_error(cli("templates", "import", str(tmp_path / "math_templates.py")), "math_templates.py")


def test_bad_templates_dir(files):
    p = cli("prove", str(files["problem"]), "--templates", str(files["dir"]), "--model", "m",
            "--base-url", "http://127.0.0.1:9/v1")
    assert_one_line_error(p, "generate.txt")


@pytest.mark.parametrize("cmd,old", [(["refine"], "--grade-samples"), (["label", "run"], "--n")])
def test_old_flag_names_are_hidden_aliases(cmd, old):
    """`refine --grade-samples` and `label --n` are now `--verifications`; the old names still
    parse (hidden, for one release)."""
    from typer.testing import CliRunner

    from proofsmith.cli import app

    help_text = CliRunner().invoke(app, [*cmd, "--help"], env={"COLUMNS": "200"}).output
    assert "--verifications" in help_text and f"{old} " not in help_text
    r = CliRunner().invoke(app, [*cmd, "x.md", old, "-1"])
    assert r.exit_code == 2 and "No such option" not in r.output and old in r.output


# model text that rich would alter: an emoji code, tabs, something that looks like markup
ODD = "Ratio (a:b:c) = (1:2:3), :smile: and [bold]x[/bold]\tcol\t\tend"


@pytest.mark.parametrize("cmd", ["prove", "verify", "meta-verify"])
def test_markdown_output_shows_model_text_verbatim(files, cmd):
    gen = GEN_ANSWER.replace("The argument is complete.", ODD).replace("Then n^2", ODD + "\nThen n^2")
    ver = VER_ANSWER.replace("The proof is correct", ODD + "\nThe proof is correct")
    meta = META_ANSWER.replace("The issue named", ODD + "\nThe issue named")
    srv = ScriptedServer(default="unscripted")
    srv.route("solution evaluation", meta)
    srv.route(lambda r: "## Self Evaluation" in r.prompt and "Let n = 2k+1" not in r.prompt, gen)
    srv.route("Let n = 2k+1", ver)
    srv.start()
    try:
        args = {"prove": [str(files["problem"])],
                "verify": [str(files["problem"]), str(files["proof"]), "--solution-only"],
                "meta-verify": [str(files["problem"]), str(files["proof"]), str(files["analysis"]), "--solution-only"]}[cmd]
        p = cli(cmd, *args, "--model", "m", "--base-url", srv.base_url, "--run-dir", str(files["dir"] / "r"))
        assert p.returncode == 0, p.stderr
        assert ODD in p.stdout, p.stdout
        assert p.stdout.count(ODD) == (2 if cmd == "prove" else 1)
    finally:
        srv.stop()


def test_verify_batch_input_jsonl_isolates_failures(files):
    from scripted_server import Reply

    rows = [
        {"problem": "Prove A.", "proof": "Let n = 2k+1. Proof of A.", "id": "a"},
        {"problem": "Prove B.", "proof": "Let n = 2k+1. Proof of B (too long).", "id": "b"},
        {"problem_id": "C", "problem": "Prove C.", "proof": "Let n = 2k+1. Proof of C."},
    ]
    inp = files["dir"] / "proofs.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    srv = ScriptedServer(default="unscripted")
    srv.route("too long", Reply.err(400, "prompt too long for the context"))
    srv.route("Let n = 2k+1", VER_ANSWER)
    srv.start()
    try:
        out = files["dir"] / "out.jsonl"
        p = cli("verify", "--input", str(inp), "-n", "2", "--model", "m", "--base-url", srv.base_url,
                "--run-dir", str(files["dir"] / "r"), "--output", str(out))
        assert p.returncode == 3, p.stderr
        lines = [json.loads(x) for x in p.stdout.splitlines()]
        assert [r["id"] for r in lines] == ["a", "b", lines[2]["id"]] and lines[2]["problem_id"] == "C"
        assert lines[0]["summary"] == {"valid": 2, "mean_score": 0.5} and len(lines[0]["verifications"]) == 2
        assert "error" in lines[1] and "too long" in lines[1]["error"] and "verifications" not in lines[1]
        assert lines[2]["summary"]["mean_score"] == 0.5
        assert [json.loads(x) for x in out.read_text().splitlines()] == lines
        assert "1 of 3 proofs failed" in p.stderr and "failed: b:" in p.stderr
        # the run directory makes a complete report: every proof's body and statement
        from proofsmith.evaluate.report import load_report_input

        doc = load_report_input(files["dir"] / "r")
        assert sorted(c["proof"] for pr in doc["problems"] for c in pr["proofs"]) == sorted(r["proof"] for r in rows)
        assert sorted(pr["statement"] for pr in doc["problems"]) == ["Prove A.", "Prove B.", "Prove C."]
        # one run: the same run directory resumes, nothing is asked again for the finished ones
        n_before = len(srv.requests)
        p2 = cli("verify", "--input", str(inp), "-n", "2", "--model", "m", "--base-url", srv.base_url,
                 "--run-dir", str(files["dir"] / "r"))
        assert p2.returncode == 3
        assert [json.loads(x) for x in p2.stdout.splitlines()][0]["verifications"] == lines[0]["verifications"]
        assert len(srv.requests) - n_before <= 2  # only the failed proof was asked again (+ a retry at most)
    finally:
        srv.stop()


def test_verify_batch_bad_input_is_one_line(files):
    bad = files["dir"] / "bad.jsonl"
    bad.write_text('{"problem": "x", "proof": "y"}\n{"problem": "x"}\n')
    p = cli("verify", "--input", str(bad), "--model", "m", "--base-url", "http://127.0.0.1:9/v1")
    assert_one_line_error(p, "line 2", "proof")
    p = cli("verify", str(files["problem"]), "--input", str(bad), "--model", "m", "--base-url", "http://127.0.0.1:9/v1")
    assert_one_line_error(p, "not both")
    p = cli("verify", str(files["problem"]), "--model", "m", "--base-url", "http://127.0.0.1:9/v1")
    assert_one_line_error(p, "--input")
