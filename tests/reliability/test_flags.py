"""Numeric options: every bad value (negative, zero where it makes no sense, NaN, infinity) is
refused with one line naming the option, on every command, before any work; the Python
config models (ModelConfig, Prices, SamplingParams, LabelConfig, training configs) refuse
the same values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from proofsmith.cli import app
from proofsmith.llm.config import Prices, SamplingParams
from proofsmith.session import ModelConfig

# command -> its positional arguments (files need not exist: options are checked first)
COMMANDS = {
    "prove": ["problem.md"],
    "verify": ["problem.md", "proof.md"],
    "meta-verify": ["problem.md", "proof.md", "analysis.md"],
    "refine": ["problem.md"],
    "search": ["problem.md"],
    "label": ["proofs.jsonl"],
    "eval": ["imo2025"],
    "eval-verifier": ["graded.jsonl"],
}

BAD = [
    ("--temperature", "-1", "--temperature must be >= 0"),
    ("--temperature", "nan", "--temperature must be a finite number"),
    ("--temperature", "inf", "--temperature must be a finite number"),
    ("--top-p", "5", "--top-p must be <= 1"),
    ("--top-p", "0", "--top-p must be > 0"),
    ("--top-p", "nan", "--top-p must be a finite number"),
    ("--max-output-tokens", "0", "--max-output-tokens must be >= 1"),
    ("--max-output-tokens", "-1", "--max-output-tokens must be >= 1"),
    ("--price-prompt", "-1", "--price-prompt must be >= 0"),
    ("--price-prompt", "nan", "--price-prompt must be a finite number"),
    ("--price-completion", "inf", "--price-completion must be a finite number"),
    ("--price-cached", "-0.5", "--price-cached must be >= 0"),
    ("--price-cached", "nan", "--price-cached must be a finite number"),
]


def one_error_line(r) -> str:
    lines = [x for x in r.stderr.splitlines() if x.startswith("proofsmith: error:")]
    assert len(lines) == 1, (r.stdout, r.stderr)
    return lines[0]


@pytest.mark.parametrize("option,value,message", BAD)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_bad_model_option_is_one_line_on_every_command(tmp_path, command, option, value, message):
    args = [command, *COMMANDS[command], "--model", "m", "--base-url", "http://127.0.0.1:9/v1",
            "--run-dir", str(tmp_path / "run"), option, value]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 1, r.output
    assert message in one_error_line(r)
    assert not (tmp_path / "run").exists()  # nothing was started


@pytest.mark.parametrize("option,value", [("--concurrency", "0"), ("--retries", "-1"), ("-n", "0")])
def test_integer_ranges_are_enforced_by_the_parser(option, value):
    r = CliRunner().invoke(app, ["prove", "problem.md", option, value])
    assert r.exit_code == 2 and "Invalid value" in r.output


def test_good_values_pass_the_check(tmp_path):
    # top_p = 1, temperature = 0 and zero prices are valid: the command gets past the check
    # and fails only on the missing problem file
    r = CliRunner().invoke(app, ["prove", str(tmp_path / "missing.md"), "--temperature", "0", "--top-p", "1",
                                 "--price-prompt", "0", "--max-output-tokens", "1"])
    assert r.exit_code == 1
    assert "problem file not found" in one_error_line(r)


@pytest.mark.parametrize("field,value", [
    ("temperature", -1.0), ("temperature", math.nan), ("temperature", math.inf),
    ("top_p", 5.0), ("top_p", 0.0), ("top_p", math.nan),
    ("max_output_tokens", 0), ("max_output_tokens", -1),
    ("concurrency", 0), ("max_retries", -1),
])
def test_model_config_refuses(field, value):
    with pytest.raises(ValidationError, match=field):
        ModelConfig(**{field: value})


@pytest.mark.parametrize("field", ["prompt_per_million", "completion_per_million", "cached_prompt_per_million"])
@pytest.mark.parametrize("value", [-1.0, math.nan, math.inf])
def test_prices_refuse(field, value):
    with pytest.raises(ValidationError, match=field):
        Prices(**{field: value})


@pytest.mark.parametrize("kw", [{"temperature": math.nan}, {"top_p": 1.5}, {"max_tokens": 0}])
def test_sampling_params_refuse(kw):
    with pytest.raises(ValidationError):
        SamplingParams(**kw)
    with pytest.raises(ValidationError):  # per-call overrides too
        SamplingParams().merged(**kw)


def _predictions(tmp_path: Path) -> Path:
    f = tmp_path / "preds.jsonl"
    f.write_text(json.dumps({"problem_id": "IMO2025-1", "proof": "P.", "grade": 7}) + "\n")
    return f


@pytest.mark.parametrize("value", ["inf", "nan", "0", "-7"])
def test_points_per_problem_must_be_positive_and_finite(tmp_path, value):
    preds = _predictions(tmp_path)
    r = CliRunner().invoke(app, ["eval", "--predictions", str(preds), "--points-per-problem", value])
    assert r.exit_code == 1, r.output
    assert "--points-per-problem must be a positive finite number" in one_error_line(r)
    r = CliRunner().invoke(app, ["eval", "--predictions", str(preds), "--points-per-problem", "7", "--json"])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("option,value", [("--grade-source", "grade"), ("--rating-scale", "contest"),
                                          ("--points-per-problem", "10")])
def test_eval_totalling_options_are_refused_with_a_dataset(tmp_path, option, value):
    # they total the grades of a --predictions file; a dataset run grades its own proofs (they
    # were accepted and ignored)
    r = CliRunner().invoke(app, ["eval", "imo2025", "--model", "m", "--base-url", "http://127.0.0.1:9/v1",
                                 "--retries", "0", "--run-dir", str(tmp_path / "run"), option, value])
    assert r.exit_code == 1, r.output
    assert f"{option} applies to --predictions" in one_error_line(r)
    assert not (tmp_path / "run").exists()
    r = CliRunner().invoke(app, ["eval", "--predictions", str(_predictions(tmp_path)), option, value, "--json"])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("value", ["nan", "inf", "0", "1.5"])
def test_eval_verifier_threshold(tmp_path, value):
    r = CliRunner().invoke(app, ["eval-verifier", str(tmp_path / "x.jsonl"), "--threshold", value])
    assert r.exit_code == 1 and "--threshold" in one_error_line(r)


@pytest.mark.parametrize("value", ["-1", "65536"])
def test_serve_port_range(value):
    r = CliRunner().invoke(app, ["serve", "--port", value])
    assert r.exit_code == 2 and "Invalid value" in r.output


@pytest.mark.parametrize("option,value", [("--slots", "257"), ("--slots", str(10**30)), ("--ctx-per-slot", "8193"),
                                          ("--ctx-per-slot", str(10**21))])
def test_serve_slots_and_context_are_bounded_by_the_parser(option, value):
    # were "OverflowError: Python int too large to convert to C long" or "Resource temporarily
    # unavailable" from the server's start-up; 8192 is the model's context length
    r = CliRunner().invoke(app, ["serve", "--port", "0", option, value], env={"COLUMNS": "300"})
    assert r.exit_code == 2 and "Invalid value" in r.output and "less than or equal to" in r.output


@pytest.mark.parametrize("slots,ctx,hint", [(256, 8192, True), (8, 4096, False)])
def test_serve_start_up_failure_of_a_large_context_says_why(monkeypatch, slots, ctx, hint):
    # llama.cpp says only "Failed to init server, please check the input params" when it cannot
    # allocate the KV cache of slots x ctx-per-slot tokens
    from proofsmith.llm import embedded

    def start(self):
        raise embedded.EmbeddedModelError("the embedded model server exited during start-up: RuntimeError: "
                                          "Failed to init server, please check the input params.")

    monkeypatch.setattr(embedded.EmbeddedServer, "start", start)
    r = CliRunner().invoke(app, ["serve", "--port", "0", "--slots", str(slots), "--ctx-per-slot", str(ctx)])
    assert r.exit_code == 1
    line = one_error_line(r)
    assert ("--slots 256 x --ctx-per-slot 8192 = a context of 2,097,152 tokens" in line) == hint, line


@pytest.mark.parametrize("column_value", ["inf", "nan", "0", "-1"])
def test_dataset_max_points_must_be_positive_and_finite(tmp_path, column_value):
    from proofsmith.errors import UserError
    from proofsmith.inputs import read_problems_file

    f = tmp_path / "p.csv"
    f.write_text(f"id,problem,max_points\na,Prove it.,{column_value}\n")
    with pytest.raises(UserError, match=r"p.csv: row 1: column 'max_points': must be a positive finite number"):
        read_problems_file(f)


def test_label_config_meta_threshold():
    from proofsmith.pipelines.label import LabelConfig

    for bad in (math.nan, -0.1, 1.5):
        with pytest.raises(ValueError, match="meta_threshold"):
            LabelConfig(meta_threshold=bad)


@pytest.mark.parametrize("text", ["learning_rate: .nan", "learning_rate: .inf", "temperature: -.inf"])
def test_training_config_refuses_nan_and_inf(text):
    from proofsmith.errors import TrainError
    from proofsmith.train.config import GRPOSpec, from_dict
    import yaml

    key, _ = text.split(":")
    with pytest.raises(TrainError, match=f"grpo.{key}: expected a finite number"):
        from_dict(GRPOSpec, yaml.safe_load(text), "grpo")


# ----------------------------------------------------------------------------- parser checks
def _commands():
    """(command words, click command) of every command of the app."""
    import typer

    def walk(cmd, words):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                yield from walk(sub, [*words, name])
        else:
            yield words, cmd

    return list(walk(typer.main.get_command(app), []))


def _path_params():
    for words, cmd in _commands():
        for p in cmd.params:
            ann = getattr(getattr(p, "type_descriptor", None), "annotation", None)
            if Path in (ann, *getattr(ann, "__args__", ())):
                yield pytest.param(words, cmd, p, id=" ".join(words) + " " + (p.opts[0] if p.opts else p.name))


def _argv(words, cmd, param, value: str = "") -> list[str]:
    """The command's positional arguments and required options ('x', or ``value`` for
    ``param``), then ``param`` given ``value`` when it is an option."""
    args = [(value if p is param else "x") for p in cmd.params if p.param_type_name == "argument"]
    for p in cmd.params:
        if p.param_type_name == "option" and (p is param or p.required):
            args += [p.opts[0], value if p is param else "x"]
    return [*words, *args]


@pytest.mark.parametrize("words,cmd,param", list(_path_params()))
def test_an_empty_path_is_refused_by_the_parser(tmp_path, monkeypatch, words, cmd, param):
    # '' would be Path('.'): a run directory, output or input file silently in the working directory
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, _argv(words, cmd, param))
    assert r.exit_code == 2, r.output
    assert "Invalid value for" in r.output and "empty path" in r.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [
    ["prove", "p.md", "--run-dir", "a", "--run-dir", "b"],
    ["prove", "p.md", "-n", "1", "--samples", "2"],
    ["prove", "p.md", "--api-key", "secret-1", "--api-key", "secret-2"],
    ["prove", "p.md", "--json", "--json"],
    ["eval", "imo2025", "--limit", "1", "--limit", "2"],
    ["label", "proofs.jsonl", "--verifications", "3", "--verifications", "4"],
    ["report", "results.json", "--title", "a", "--title", "b"],
])
def test_an_option_of_one_value_given_twice_is_refused(tmp_path, monkeypatch, args):
    # the parser would keep the last value silently (another run directory, sample count, key...)
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, r.output
    assert "Invalid value for" in r.output and "times; give it once" in r.output
    assert "secret" not in r.output
    assert list(tmp_path.iterdir()) == []


def test_repeatable_options_still_repeat(tmp_path):
    # --base-url, --id, --column and --threshold take several values: the parser accepts them
    # (the commands then fail on the missing files, after parsing)
    for args in (["prove", str(tmp_path / "p.md"), "--model", "m", "--base-url", "http://127.0.0.1:9/v1",
                  "--base-url", "http://127.0.0.1:10/v1"],
                 ["eval", str(tmp_path / "d.jsonl"), "--id", "a", "--id", "b", "--column", "problem=q", "--column", "id=i"],
                 ["eval-verifier", str(tmp_path / "g.jsonl"), "--threshold", "0.5", "--threshold", "1"]):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 1, r.output
        one_error_line(r)


# integer options where a huge number means "no limit" and works as such
UNBOUNDED = {"--limit", "--concurrency", "--retries", "--context-length", "--max-tokens"}


def _int_options():
    for words, cmd in _commands():
        for p in cmd.params:
            ann = getattr(getattr(p, "type_descriptor", None), "annotation", None)
            if ann is int and p.param_type_name == "option" and p.opts[0] not in UNBOUNDED:
                yield pytest.param(words, cmd, p, id=" ".join(words) + " " + p.opts[0])


@pytest.mark.parametrize("words,cmd,param", list(_int_options()))
def test_a_huge_count_is_refused_by_the_parser(tmp_path, monkeypatch, words, cmd, param):
    # -n 10**30 passed the parser and hung queuing calls; every count has an upper bound that
    # --help shows ([1<=x<=10000]: far above any real run)
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, _argv(words, cmd, param, str(10**30)), env={"COLUMNS": "300"})
    assert r.exit_code == 2, r.output
    assert "Invalid value for" in r.output and "less than or equal to" in r.output
    help_text = CliRunner().invoke(app, [*words, "--help"], env={"COLUMNS": "300"}).output
    assert param.opts[0] in help_text and f"<={param.max}]" in help_text or param.hidden
