"""Per-role limits and sampling, the models file (proofsmith.toml) and the context-length check
(issue 12 §3). Everything runs against the scripted loopback server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pipeline_server import TEMPLATES, World, start_world
from scripted_server import ScriptedServer
from typer.testing import CliRunner

from proofsmith.cli import app
from proofsmith.cli.options import CommonArgs, parse_per_role
from proofsmith.cli.output import EXIT_PARTIAL
from proofsmith.errors import PromptTooLongError, UserError
from proofsmith.llm.client import Budget, Endpoint, LLMClient
from proofsmith.models_file import load_models_file, parse_models_file
from proofsmith.session import ROLE_ALIASES, ROLES, ModelConfig, open_client

SRC = str(Path(__file__).resolve().parents[1] / "src")

GEN = ("## Solution\nLet n = 2k+1; then n^2 = 4k(k+1) + 1.\n\n## Self Evaluation\nHere is my evaluation of the "
       "solution:\nComplete.\n\nBased on my evaluation, the final overall score should be:\n\\boxed{1}")
VER = ("Here is my evaluation of the solution:\nFine.\n\n"
       "Based on my evaluation, the final overall score should be: \\boxed{1}")


def cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items()
         if k not in ("PROOFSMITH_BASE_URL", "PROOFSMITH_MODEL", "PROOFSMITH_API_KEY", "OPENAI_API_KEY",
                      "PROOFSMITH_CONFIG", "PROOFSMITH_DEBUG")}
    e["PYTHONPATH"] = SRC + os.pathsep + e.get("PYTHONPATH", "")
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "proofsmith.cli", *args], capture_output=True, text=True,
                          timeout=120, env=e, cwd=cwd)


def one_line_error(p: subprocess.CompletedProcess, *needles: str) -> str:
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    lines = [line for line in p.stderr.splitlines() if line.startswith("proofsmith: error:")]
    assert len(lines) == 1, p.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def role_server(**kw) -> ScriptedServer:
    srv = ScriptedServer(default=GEN, **kw)
    srv.route(lambda r: "Let n = 2k+1" in r.prompt, VER)
    return srv.start()


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    problem = tmp_path / "problem.md"
    problem.write_text("Prove that the square of every odd integer is 1 mod 8.\n")
    proof = tmp_path / "proof.md"
    proof.write_text(GEN.split("## Self Evaluation")[0].removeprefix("## Solution\n").strip() + "\n")  # the proof alone
    return {"problem": problem, "proof": proof, "dir": tmp_path}


# ----------------------------------------------------------------------------- per-role values


def test_per_role_parsing():
    assert parse_per_role("64000", "--max-output-tokens", int) == (64000, {})
    assert parse_per_role("generator=128000,verifier=64000", "--max-output-tokens", int) == (
        None, {"generate": 128000, "refine": 128000, "verify": 64000})
    assert parse_per_role("100, generate=7", "--max-output-tokens", int) == (100, {"generate": 7})
    # a role named exactly wins over an alias naming it, in either order
    for text in ("refine=5,generator=9", "generator=9,refine=5"):
        assert parse_per_role(text, "--max-output-tokens", int)[1] == {"generate": 9, "refine": 5}
    assert parse_per_role("meta-verifier=0.5", "--temperature", float) == (None, {"meta_verify": 0.5})


@pytest.mark.parametrize("text,needle", [
    ("writer=5", "unknown role 'writer'"), ("verify=x", "--max-output-tokens"), ("verify=5,7", "only the first"),
    ("verify=5,verify=6", "given twice"), ("", "no value"), ("verify=0", "must be >= 1"),
])
def test_per_role_parsing_errors(text, needle):
    with pytest.raises(UserError) as e:
        CommonArgs(model="m", base_url=["http://127.0.0.1:9/v1"], max_output_tokens=text)._config(None)
    assert needle in str(e.value) and "--max-output-tokens" in str(e.value)


def test_role_names_are_the_client_roles_and_the_method_aliases_those_of_training():
    from proofsmith.train import PROMPT_ROLE

    assert set(ROLES) == {"generate", "verify", "meta_verify", "refine", "grade"}
    for name, role in PROMPT_ROLE.items():  # the training role names mean the same prompt role
        assert role in ROLE_ALIASES[name]


def test_model_config_roles_drive_each_roles_sampling():
    cfg = ModelConfig(model="m", base_urls=["http://127.0.0.1:9/v1"], max_output_tokens=1000, temperature=0.7,
                      roles={"generator": {"max_output_tokens": 128000}, "verify": {"temperature": 0.2}})
    client = open_client(cfg)
    assert client.params_for("generate").max_tokens == 128000
    assert client.params_for("refine").max_tokens == 128000
    assert client.params_for("verify").max_tokens == 1000 and client.params_for("verify").temperature == 0.2
    assert client.params_for("meta_verify").temperature == 0.7
    assert client.params_for("default").max_tokens == 1000


def test_cli_per_role_limits_and_sampling_reach_the_requests(files):
    srv = role_server()
    try:
        common = ["--model", "m", "--base-url", srv.base_url, "--json", "--run-dir", str(files["dir"] / "r"),
                  "--max-output-tokens", "generator=128000,verifier=64000", "--temperature", "0.9,verify=0.3"]
        p = cli("prove", str(files["problem"]), *common, cwd=files["dir"])
        assert p.returncode == 0, p.stderr
        p = cli("verify", str(files["problem"]), str(files["proof"]), *common, cwd=files["dir"])
        assert p.returncode == 0, p.stderr
        gen, ver = srv.requests[0].body, srv.requests[1].body
        assert (gen["max_tokens"], gen["temperature"]) == (128000, 0.9)
        assert (ver["max_tokens"], ver["temperature"]) == (64000, 0.3)
    finally:
        srv.stop()


def test_budget_needs_a_limit_for_every_role(files):
    p = cli("prove", str(files["problem"]), "--model", "m", "--base-url", "http://127.0.0.1:9/v1",
            "--max-tokens", "1000", "--max-output-tokens", "generator=100,verifier=100", cwd=files["dir"])
    one_line_error(p, "--max-output-tokens for every role", "meta_verify", "grade")


async def test_budget_reserves_each_roles_own_worst_case(scripted_server):
    """A token budget that admits two verify requests at once (limit 5) but not two generate
    requests (limit 1000): the per-role limit is what the budget reserves."""
    scripted_server.default = "ok"
    scripted_server.delay = 0.3
    cfg = ModelConfig(model="m", base_urls=[scripted_server.base_url], budget=Budget(max_tokens=600),
                      roles={"verify": {"max_output_tokens": 5}, "generate": {"max_output_tokens": 1000}})
    async with open_client(cfg) as client:
        msgs = [[{"role": "user", "content": f"q{i}"}] for i in range(2)]
        await asyncio.gather(*(client.complete(m, role="verify") for m in msgs))
        assert scripted_server.max_in_flight == 2
        scripted_server.clear_requests()
        await asyncio.gather(*(client.complete(m, role="generate") for m in
                               [[{"role": "user", "content": f"g{i}"}] for i in range(2)]))
        assert scripted_server.max_in_flight == 1
        assert [r.body["max_tokens"] for r in scripted_server.requests] == [1000, 1000]


# ----------------------------------------------------------------------------- the models file


MODELS = """
[models.dsm]
model = "served-name"
base_urls = ["{url}"]
api_key_env = "TEST_DSM_KEY"
context_length = 163840
max_output_tokens = 64000
temperature = 0.8
prices = {{ prompt_per_million = 1.0, completion_per_million = 2.0 }}

[models.dsm.roles]
generator = {{ max_output_tokens = 128000 }}
"""


def test_models_file_gives_everything_from_the_model_name(files):
    with role_server(api_key="sekret", served_model="served-name") as srv:
        (files["dir"] / "proofsmith.toml").write_text(MODELS.format(url=srv.base_url))
        env = {"TEST_DSM_KEY": "sekret"}
        p = cli("prove", str(files["problem"]), "--model", "dsm", "--json", "--run-dir", str(files["dir"] / "r"),
                cwd=files["dir"], env=env)
        assert p.returncode == 0, p.stderr
        body = srv.requests[-1].body
        assert body["model"] == "served-name" and body["max_tokens"] == 128000 and body["temperature"] == 0.8
        assert srv.requests[-1].headers["Authorization"] == "Bearer sekret"
        assert json.loads(p.stdout)["usage"]["cost"] > 0  # the file's prices
        p = cli("verify", str(files["problem"]), str(files["proof"]), "--model", "dsm", "--json",
                "--run-dir", str(files["dir"] / "r"), cwd=files["dir"], env=env)
        assert p.returncode == 0, p.stderr
        assert srv.requests[-1].body["max_tokens"] == 64000
        # command-line options override the file: a plain number sets every role
        p = cli("prove", str(files["problem"]), "--model", "dsm", "--max-output-tokens", "77", "--temperature",
                "0.1", "--run-dir", str(files["dir"] / "r"), cwd=files["dir"], env=env)
        assert p.returncode == 0, p.stderr
        assert (srv.requests[-1].body["max_tokens"], srv.requests[-1].body["temperature"]) == (77, 0.1)
        # the key's variable unset: one line naming the file and the key
        p = cli("prove", str(files["problem"]), "--model", "dsm", cwd=files["dir"])
        one_line_error(p, "proofsmith.toml", "models.dsm.api_key_env", "TEST_DSM_KEY")


def test_config_option_and_models_not_in_the_file(files, tmp_path):
    with role_server() as srv:
        other = tmp_path / "elsewhere" / "models.toml"
        other.parent.mkdir()
        other.write_text(f'[models.local]\nmodel = "m"\nbase_urls = "{srv.base_url}"\n')
        p = cli("prove", str(files["problem"]), "--config", str(other), "--model", "local", "--json",
                "--run-dir", str(files["dir"] / "r"), cwd=files["dir"])
        assert p.returncode == 0, p.stderr
        assert srv.requests[-1].body["model"] == "m"
        # a model the file does not name is used as before (a name at --base-url)
        p = cli("prove", str(files["problem"]), "--config", str(other), "--model", "x", "--base-url", srv.base_url,
                "--json", "--run-dir", str(files["dir"] / "r2"), cwd=files["dir"])
        assert p.returncode == 0, p.stderr
        assert srv.requests[-1].body["model"] == "x"
    one_line_error(cli("prove", str(files["problem"]), "--config", str(tmp_path / "nope.toml"), "--model", "local",
                       cwd=files["dir"]), "nope.toml", "not found")


@pytest.mark.parametrize("text,needles", [
    ("[models.a]\ntemperature = 'hot'\n", ["models.a.temperature"]),
    ("[models.a]\ntempreature = 1.0\n", ["models.a.tempreature", "Extra inputs"]),
    ("[models.a]\napi_key = 'sk-123'\n", ["models.a.api_key", "api_key_env"]),
    ("[models.a]\nbase_urls = ['http://u:p@h/v1']\n", ["models.a.base_urls", "credentials"]),
    ("[models.a]\nbase_urls = ['http://h/v1?api_key=k']\n", ["models.a.base_urls", "credentials"]),
    ("[models.a.roles]\nwriter = { max_output_tokens = 5 }\n", ["models.a.roles", "unknown role 'writer'"]),
    ("[models.a.roles.verify]\nmax_output_tokens = 0\n", ["models.a.roles.verify.max_output_tokens"]),
    ("[models.a]\ncontext_length = -1\n", ["models.a.context_length"]),
    ("[models.a]\nprices = { prompt_per_milion = 1.0 }\n", ["models.a.prices", "unknown price 'prompt_per_milion'"]),
    ("[modls.a]\n", ["modls"]),
    ("[models.a\n", ["not valid TOML"]),
    ("[models.a]\nextra = " + "[" * 100_000 + "]" * 100_000 + "\n", ["not valid TOML", "nested too deep"]),
    ("[models.a]\nmodel = 'embedded'\nbase_urls = ['http://h/v1']\n", ["models.a", "embedded"]),
])
def test_models_file_errors_name_the_file_and_the_key(tmp_path, text, needles):
    path = tmp_path / "proofsmith.toml"
    path.write_text(text)
    with pytest.raises(UserError) as e:
        load_models_file(cwd=tmp_path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg
    for n in needles:
        assert n in msg, msg
    assert "sk-123" not in msg and "u:p" not in msg


def test_models_file_entries_become_model_configs(tmp_path):
    mf = parse_models_file(MODELS.format(url="http://h:1/v1"), tmp_path / "proofsmith.toml")
    os.environ["TEST_DSM_KEY"] = "k"
    try:
        cfg = ModelConfig(**mf.config_for("dsm"))
    finally:
        del os.environ["TEST_DSM_KEY"]
    assert cfg.model == "served-name" and cfg.api_key == "k" and cfg.context_length == 163840
    assert cfg.output_limits() == {"generate": 128000, "refine": 128000, "verify": 64000, "meta_verify": 64000,
                                   "grade": 64000}
    assert mf.config_for("other") is None
    assert load_models_file(cwd=tmp_path) is None  # no file there: none


# ----------------------------------------------------------------------------- context length


async def test_prompt_too_long_is_refused_before_sending_naming_the_item(scripted_server):
    from proofsmith import roles
    from proofsmith.records import Problem

    client = LLMClient(Endpoint(base_url=scripted_server.base_url, model="m"), context_length=1000,
                       role_params={"verify": ModelConfig().role_params("verify", 500)})
    problem = Problem(id="p7", statement="Show it.")
    try:
        with pytest.raises(PromptTooLongError) as e:
            await roles.verify(client, problem, "x " * 1000, n=2)
        msg = str(e.value)
        assert "problem p7, proof p-" in msg and "context length 1000" in msg and "500 max output tokens" in msg
        assert scripted_server.requests == []
        await roles.verify(client, problem, "short proof", n=1)  # one that fits is sent
        assert len(scripted_server.requests) == 1
    finally:
        await client.aclose()


def test_search_over_long_problem_is_a_failed_item_never_sent(tmp_path):
    srv = start_world(World(gen_quality=lambda problem, i: 1.0))
    try:
        probs = tmp_path / "problems.jsonl"
        rows = [("good-1", "Show A."), ("long", "Show " + "x" * 20000), ("good-2", "Show B.")]
        probs.write_text("".join(json.dumps({"id": i, "problem": s}) + "\n" for i, s in rows))
        tpl = TEMPLATES.save(tmp_path / "tpl")
        r = CliRunner().invoke(app, ["search", "--problems", str(probs), "--json", "--model", "m", "--base-url",
                                     srv.base_url, "--run-dir", str(tmp_path / "run"), "--templates", str(tpl),
                                     "--initial-proofs", "2", "--verifications", "2", "--max-iterations", "1",
                                     "--context-length", "3000", "--max-output-tokens", "500"])
        assert r.exit_code == EXIT_PARTIAL, r.output
        doc = json.loads(r.stdout)
        by_id = {p["problem"]["id"]: p for p in doc["problems"]}
        assert by_id["good-1"]["stopped"] == by_id["good-2"]["stopped"] == "passed"
        assert doc["failed"][0]["id"] == "long"
        assert "problem long" in doc["failed"][0]["error"] and "too long" in doc["failed"][0]["error"]
        assert not any("xxxxxxxx" in r.prompt for r in srv.requests)
    finally:
        srv.stop()


def test_limits_larger_than_the_context_are_refused_at_once(files):
    p = cli("prove", str(files["problem"]), "--model", "m", "--base-url", "http://127.0.0.1:9/v1",
            "--context-length", "4096", "--max-output-tokens", "1000,generator=8000", cwd=files["dir"])
    one_line_error(p, "max_output_tokens of generate (8000)", "context length 4096")


# -- the request key with the messages encoded once (the client's fast path) -------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from proofsmith.llm.config import SamplingParams as _SP, encode_messages, request_key  # noqa: E402

_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                     lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(), kids, max_size=3),
                     max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(messages=st.lists(st.dictionaries(st.text(), _json, max_size=4).map(lambda d: {"role": "user", **d}),
                         min_size=1, max_size=3),
       model=st.text(), temperature=st.floats(0, 2), top_p=st.floats(0.01, 1),
       max_tokens=st.none() | st.integers(1, 10**6), extra=st.dictionaries(st.text(), _json, max_size=3))
def test_request_key_is_the_same_with_the_messages_encoded_once(messages, model, temperature, top_p, max_tokens,
                                                                extra):
    params = _SP(temperature=temperature, top_p=top_p, max_tokens=max_tokens, extra=extra)
    encoded = encode_messages(messages)
    assert encoded is not None
    assert request_key(model, messages, params, encoded) == request_key(model, messages, params)


def test_messages_that_are_not_plain_json_keep_the_old_encoding():
    messages = [{"role": "user", "content": object()}]
    assert encode_messages(messages) is None
    assert len(request_key("m", messages, _SP())) == 64  # the key encoder's str() fallback, as before


def test_transport_from_the_models_file_reaches_the_client(tmp_path):
    from proofsmith.models_file import resolve_config
    from proofsmith.session import ModelConfig, open_client

    path = tmp_path / "proofsmith.toml"
    path.write_text('[models.x]\nbase_urls = ["http://127.0.0.1:9/v1"]\ntransport = "aiohttp"\n')
    cfg = resolve_config("x", config_file=path)
    assert cfg.transport == "aiohttp" and open_client(cfg).transport_name == "aiohttp"
    assert open_client(ModelConfig(model="m", base_urls=["http://127.0.0.1:9/v1"])).transport_name == "http1"
    from typing import get_args

    from proofsmith.llm import client as client_module

    assert set(get_args(client_module.TransportName)) == set(client_module._TRANSPORTS)  # one list of names
    path.write_text('[models.x]\nbase_urls = ["http://127.0.0.1:9/v1"]\ntransport = "curl"\n')
    with pytest.raises(Exception, match="transport"):
        resolve_config("x", config_file=path)


@pytest.mark.parametrize("url, why", [
    ("http://127.0.0.1:0/v1", "port 0"), ("http://[::1", "not a URL"), ("ftp://x/v1", "http:// or https://"),
    ("http://", "no host"), ("http://127.0.0.1:99999/v1", "not a URL"), ("http://127.0.0.1:8000/v1\nx", "control"),
])
def test_a_base_url_that_cannot_be_a_server_is_refused_when_given(url, why):
    # found attacking the CLI (stop 19): port 0 went to port 80; the others failed only at the
    # first call ("Invalid IPv6 URL", with no option named) after the run directory was made
    from proofsmith.llm.config import Endpoint

    with pytest.raises(ValueError, match=why):
        Endpoint(base_url=url, model="m")
    Endpoint(base_url="https://user:pw@example.org:8443/v1/", model="m")


def test_a_bad_base_url_is_one_line_naming_the_option_and_makes_no_run(tmp_path):
    from typer.testing import CliRunner

    from proofsmith.cli import app

    (tmp_path / "p.md").write_text("Show that 1 = 1.\n")
    r = CliRunner().invoke(app, ["prove", str(tmp_path / "p.md"), "--base-url", "http://127.0.0.1:0/v1",
                                 "--model", "m", "--run-dir", str(tmp_path / "rd")])
    text = r.output + str(r.exception or "")
    assert r.exit_code != 0 and "--base-url: base URL 'http://127.0.0.1:0/v1' has port 0" in text, text
    assert "validation error" not in text and not (tmp_path / "rd").exists()


# ----------------------------------------------------------------------------- bounds of the counts

@pytest.mark.parametrize("key,value,limit", [
    ("concurrency", 10**9, "MAX_CONCURRENCY"), ("concurrency", 0, None),
    ("max_retries", 10**6, "MAX_RETRIES"), ("max_retries", -1, None),
    ("context_length", 10**23, "MAX_CONTEXT_LENGTH"), ("context_length", 0, None),
])
def test_models_file_counts_are_bounded_in_one_line_naming_the_key_and_the_limit(tmp_path, key, value, limit):
    # concurrency 10**9, max_retries 10**6 or a context length of 10**23 tokens were taken: a
    # mistyped number opened connections until the descriptors ran out, or retried for weeks
    import proofsmith.llm.config as llm_config

    path = tmp_path / "proofsmith.toml"
    path.write_text(f"[models.a]\nbase_urls = ['http://h:1/v1']\n{key} = {value}\n")
    with pytest.raises(UserError) as e:
        load_models_file(cwd=tmp_path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: models.a.{key}: ") and "\n" not in msg, msg
    if limit is not None:
        assert f"{getattr(llm_config, limit)}" in msg, msg


@pytest.mark.parametrize("field,limit", [("concurrency", "MAX_CONCURRENCY"), ("max_retries", "MAX_RETRIES"),
                                         ("context_length", "MAX_CONTEXT_LENGTH")])
def test_model_config_endpoint_and_cli_share_one_bound_per_count(field, limit):
    import proofsmith.llm.config as llm_config
    from proofsmith.cli.options import _COMMON

    top = getattr(llm_config, limit)
    ModelConfig(**{field: top})
    with pytest.raises(ValueError, match=f"{field}[\\s\\S]*{top}"):
        ModelConfig(**{field: top + 1})
    option = {"concurrency": "concurrency", "max_retries": "retries", "context_length": "context_length"}[field]
    info = _COMMON[option][0].__metadata__[0]  # the typer.Option of the CLI's --concurrency, --retries, ...
    assert info.max == top and str(top) in info.help, (info.max, info.help)
    if field == "concurrency":
        Endpoint(base_url="http://h/v1", model="m", max_concurrency=top)
        for bad in (0, -5, top + 1):
            with pytest.raises(ValueError, match="max_concurrency"):
                Endpoint(base_url="http://h/v1", model="m", max_concurrency=bad)


def test_max_output_tokens_is_bounded_everywhere_by_the_largest_context(tmp_path):
    """A completion limit of 10**12 tokens was taken by ModelConfig, a role's settings, the models
    file, SamplingParams and --max-output-tokens, and sent to the server (which answers HTTP 400
    mid-run, per item). Now one bound, MAX_CONTEXT_LENGTH: no request may ask for more output
    than any context holds."""
    from proofsmith.llm.config import MAX_CONTEXT_LENGTH, SamplingParams

    top = MAX_CONTEXT_LENGTH
    ModelConfig(max_output_tokens=top, roles={"verify": {"max_output_tokens": top}})
    SamplingParams(max_tokens=top)
    with pytest.raises(ValueError, match=f"max_output_tokens[\\s\\S]*{top}"):
        ModelConfig(max_output_tokens=top + 1)
    with pytest.raises(ValueError, match=f"max_output_tokens[\\s\\S]*{top}"):
        ModelConfig(roles={"verify": {"max_output_tokens": top + 1}})
    with pytest.raises(ValueError, match=f"max_tokens[\\s\\S]*{top}"):
        SamplingParams(max_tokens=top + 1)
    path = tmp_path / "proofsmith.toml"
    for body in (f"max_output_tokens = {10**12}\n", f"roles.verifier = {{ max_output_tokens = {10**12} }}\n"):
        path.write_text(f"[models.a]\nbase_urls = ['http://h:1/v1']\n{body}")
        with pytest.raises(UserError) as e:
            load_models_file(cwd=tmp_path)
        msg = str(e.value)
        assert msg.startswith(f"{path}: models.a.") and "max_output_tokens" in msg and str(top) in msg, msg
        assert "\n" not in msg, msg
    for value in (str(10**12), f"verify={10**12}"):
        (tmp_path / "p.md").write_text("Show that 1 + 1 = 2.\n")
        r = CliRunner().invoke(app, ["prove", str(tmp_path / "p.md"), "--base-url", "http://127.0.0.1:9/v1",
                                     "--model", "m", "--max-output-tokens", value, "--run-dir", str(tmp_path / "rd")])
        text = r.output + str(r.exception or "")
        assert r.exit_code != 0 and "--max-output-tokens" in text and str(top) in text, text
        assert not (tmp_path / "rd").exists()
