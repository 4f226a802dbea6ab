"""Credentials in a base URL (user-info, ``?api_key=``) are used for the request but never
shown or kept: terminal, one-line errors, the run store (calls.endpoint, metadata), ``runs
show`` and reports."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from proofsmith.redact import redact_text, redact_url, redact_value
from scripted_server import ScriptedServer

SECRET = "s3cr3tPW"
GEN_ANSWER = (
    "## Solution\nLet n = 2k+1. Then n^2 = 4k(k+1) + 1.\n\n"
    "## Self Evaluation\nHere is my evaluation of the solution:\nFine.\n\n"
    "Based on my evaluation, the final overall score should be:\n\\boxed{1}"
)


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    for k in ("PROOFSMITH_BASE_URL", "PROOFSMITH_MODEL", "PROOFSMITH_API_KEY", "OPENAI_API_KEY", "PROOFSMITH_DEBUG"):
        env.pop(k, None)
    return subprocess.run([sys.executable, "-m", "proofsmith.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _files_bytes(d: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file())


@pytest.mark.parametrize(
    "url, expected",
    [
        ("http://user:pw@host:8000/v1", "http://***@host:8000/v1"),
        ("https://tok@host/v1", "https://***@host/v1"),
        ("http://host/v1?api_key=abc&x=1", "http://host/v1?api_key=***&x=1"),
        ("http://host/v1?token=a&Signature=b", "http://host/v1?token=***&Signature=***"),
        ("http://host:8000/v1", "http://host:8000/v1"),
        ("http://host/v1?api-version=2024", "http://host/v1?api-version=2024"),
        ("not a url", "not a url"),
    ],
)
def test_redact_url(url, expected):
    assert redact_url(url) == expected


def test_redact_text_and_value():
    t = "cannot reach http://u:p4ss@h:1/v1 (and https://h/v1?key=K9) now"
    assert redact_text(t) == "cannot reach http://***@h:1/v1 (and https://h/v1?key=***) now"
    assert redact_text("400 for /v1/chat/completions?api_key=K9&model=m") == "400 for /v1/chat/completions?api_key=***&model=m"
    assert redact_text("a = b and x?y=1") == "a = b and x?y=1"
    assert redact_value({"a": ["http://u:p@h/v1", "a proof about http://u:p@h/v1"]}) == {
        "a": ["http://***@h/v1", "a proof about http://u:p@h/v1"]}


@pytest.fixture
def problem(tmp_path: Path) -> Path:
    p = tmp_path / "problem.md"
    p.write_text("Prove that the square of every odd integer is 1 mod 8.\n")
    return p


def test_userinfo_is_sent_but_never_shown_or_stored(tmp_path, problem):
    with ScriptedServer(default=GEN_ANSWER) as srv:
        host = srv.base_url.split("://", 1)[1]
        url = f"http://alice:{SECRET}@{host}"
        run = tmp_path / "run"
        p = cli("prove", str(problem), "--model", "m", "--base-url", url, "--run-dir", str(run), "--json")
        assert p.returncode == 0, p.stderr
        # the request itself carried the credentials
        auth = srv.requests[0].headers.get("Authorization", "")
        assert auth == "Basic " + base64.b64encode(f"alice:{SECRET}".encode()).decode()
        assert SECRET not in p.stdout and SECRET not in p.stderr
        # the store (every file of the run dir: database, WAL, exports)
        assert SECRET.encode() not in _files_bytes(run)
        import sqlite3

        eps = {r[0] for r in sqlite3.connect(run / "run.sqlite").execute("SELECT endpoint FROM calls")}
        assert eps == {f"http://***@{host}"}
        for args in (("runs", "show", str(run)), ("runs", "show", str(run), "--json")):
            p = cli(*args)
            assert p.returncode == 0, p.stderr
            assert SECRET not in p.stdout + p.stderr
        p = cli("report", str(run), "-o", str(tmp_path / "r.html"))
        assert p.returncode == 0, p.stderr
        assert SECRET not in (tmp_path / "r.html").read_text() + p.stdout + p.stderr


def test_query_credential_is_sent_but_never_shown_or_stored(tmp_path, problem):
    with ScriptedServer(default=GEN_ANSWER) as srv:
        url = f"{srv.base_url}?api_key={SECRET}"
        run = tmp_path / "run"
        p = cli("prove", str(problem), "--model", "m", "--base-url", url, "--run-dir", str(run), "--json")
        assert p.returncode == 0, p.stderr
        assert srv.requests and srv.requests[0].path.endswith("/chat/completions")
        assert SECRET not in p.stdout + p.stderr
        assert SECRET.encode() not in _files_bytes(run)


def test_errors_do_not_show_credentials(tmp_path, problem):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    p = cli("prove", str(problem), "--model", "m", "--base-url", f"http://bob:{SECRET}@127.0.0.1:{port}/v1",
            "--retries", "1", "--run-dir", str(tmp_path / "r"))
    assert p.returncode != 0 and f"127.0.0.1:{port}" in p.stderr
    assert SECRET not in p.stdout + p.stderr
    assert SECRET.encode() not in _files_bytes(tmp_path / "r")
    # a URL the client refuses is named in the error without its credentials
    p = cli("prove", str(problem), "--model", "m", "--base-url", f"http://bob:{SECRET}@127.0.0.1:{port}",
            "--run-dir", str(tmp_path / "r2"))
    assert p.returncode != 0 and "no API path" in p.stderr
    assert SECRET not in p.stdout + p.stderr
    # credentials in the URL and an API key: refused, named without the credentials
    p = cli("prove", str(problem), "--model", "m", "--base-url", f"http://bob:{SECRET}@127.0.0.1:{port}/v1",
            "--api-key", "k", "--run-dir", str(tmp_path / "r2"))
    assert p.returncode != 0 and "API key" in p.stderr
    assert SECRET not in p.stdout + p.stderr
    # a server answering 401
    with ScriptedServer(api_key="right") as srv:
        host = srv.base_url.split("://", 1)[1]
        p = cli("prove", str(problem), "--model", "m", "--base-url", f"http://bob:{SECRET}@{host}",
                "--run-dir", str(tmp_path / "r3"))
        assert p.returncode != 0 and "401" in p.stderr
        assert SECRET not in p.stdout + p.stderr
        assert SECRET.encode() not in _files_bytes(tmp_path / "r3")


def test_store_metadata_and_old_rows_are_redacted(tmp_path):
    from proofsmith.store import RunStore

    store = RunStore(tmp_path / "run")
    try:
        store.set_meta("pipeline", {"config": {"base_urls": [f"http://u:{SECRET}@h/v1"]},
                                    "proof": f"a text mentioning http://u:{SECRET}@h/v1 is data"})
        meta = store.get_meta("pipeline")
        assert meta["config"]["base_urls"] == ["http://***@h/v1"]
        assert meta["proof"].startswith("a text mentioning http://u:")  # data is kept as it is
        # a row written by an older version (credentials in the endpoint column) is shown masked
        store._db.execute(
            "INSERT INTO calls (id, request_key, role, endpoint, model, request, usage, latency_s, attempt,"
            " started_at, finished_at) VALUES ('c', 'k', 'verify', ?, 'm', '{}', '{}', 0, 1, 0, 0)",
            (f"http://u:{SECRET}@h/v1",))
        assert list(store.summary()["per_endpoint"]) == ["http://***@h/v1"]
    finally:
        store.close()


def test_train_config_file_has_no_credentials():
    from proofsmith.redact import redact_value
    from proofsmith.train.config import RewardSpec, TrainConfig
    from proofsmith.train.judge import JudgeEndpoint

    cfg = TrainConfig(role="generator", reward=RewardSpec(
        verifier=JudgeEndpoint(base_url=[f"http://u:{SECRET}@h/v1"], model="m"),
        meta_verifier=JudgeEndpoint(base_url=f"https://h/v1?api_key={SECRET}", model="m")))
    # what grpo.py / rft.py write as output_dir/config.json
    assert SECRET not in json.dumps(redact_value(cfg.model_dump()), default=str)
