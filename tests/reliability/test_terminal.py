"""Text from data and models shown on a terminal cannot drive it: control characters (ESC
sequences that move the cursor, retitle the window, write the clipboard or hide text; BEL;
a lone CR that overwrites a line) are shown as visible escapes (``\\x1b``) by the CLI's
consoles, its error lines, and model text printed on a terminal. Text written to a pipe or a
file (``print_verbatim`` when stdout is not a terminal, ``--json``) stays exact."""

from __future__ import annotations

import io
import json
import sys

from typer.testing import CliRunner

from scripted_server import Reply, ScriptedServer

from proofsmith.cli import app
from proofsmith.cli.output import print_verbatim, shown

HOSTILE = "a\x1b]0;pwned\x07b\x1b[2Jc\x1b[8mhidden\x9b31md\re"


def test_shown_makes_control_characters_visible_and_keeps_lines():
    assert shown(HOSTILE) == "a\\x1b]0;pwned\\x07b\\x1b[2Jc\\x1b[8mhidden\\x9b31md\\x0de"
    assert shown("line 1\r\nline 2\n\tindented — ünïcode 𝔽") == "line 1\r\nline 2\n\tindented — ünïcode 𝔽"


def test_datasets_show_prints_no_control_characters(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"id": "p" + HOSTILE, "problem": "Show " + HOSTILE, "source": HOSTILE}) + "\n")
    for args in (["datasets", "show", str(f)], ["datasets", "show", str(f), "p" + HOSTILE]):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 0, r.output
        assert "\x1b" not in r.stdout and "\x07" not in r.stdout and "\x9b" not in r.stdout
        assert "\\x1b]0;pwned\\x07" in r.stdout


def test_a_server_error_message_cannot_drive_the_terminal(tmp_path):
    (tmp_path / "problem.md").write_text("Prove it.\n")
    with ScriptedServer(default=Reply.err(400, "context too long " + HOSTILE)) as srv:
        r = CliRunner().invoke(app, ["prove", str(tmp_path / "problem.md"), "--model", "m",
                                     "--base-url", srv.base_url, "--run-dir", str(tmp_path / "run")])
    assert r.exit_code == 1
    assert "context too long" in r.stderr and "\x1b" not in r.stderr and "\x07" not in r.stderr


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_model_text_is_exact_in_a_pipe_and_visible_on_a_terminal(monkeypatch):
    pipe = io.StringIO()
    monkeypatch.setattr(sys, "stdout", pipe)
    print_verbatim("proof " + HOSTILE)
    assert pipe.getvalue() == "proof " + HOSTILE + "\n"  # exact: a file or a pipe gets what the model wrote
    tty = _Tty()
    monkeypatch.setattr(sys, "stdout", tty)
    print_verbatim("proof " + HOSTILE)
    assert tty.getvalue() == shown("proof " + HOSTILE) + "\n"
