"""A scripted "world" for the pipeline tests, served by tests/scripted_server.py over HTTP.

The pipelines run with test templates whose first line names the role (``ROLE:GENERATE``,
``ROLE:VERIFY``, ``ROLE:META``, ``ROLE:REFINE``). Every answer is a pure function of the
request content and the choice index, so a killed-and-resumed run sees the same answers:

* generator, choice i: a proof ``P[<token>] QUALITY=<q>`` (token = hash of prompt and i,
  q = ``world.gen_quality(problem, i)``), and a self-evaluation ``S[<token>] SCORE=<s>``
  with the boxed self-score s = ``world.self_score(q, token, i)`` (None -> no boxed score);
* verifier, choice i of a proof with quality q: an analysis ``A[<token>.<i>] SCORE=<v>``
  with v = ``world.verify_score(q, token, i)`` (None -> an answer without a boxed score);
* meta-verifier: the analysis's score v and the proof's q give
  ``world.meta_score(q, v, analysis_token, i)`` (default: 1 if v == q else 0);
* refiner, choice i: a new proof whose quality is
  ``world.refine_quality(parent_qualities, [(analysis token, score), ...], i)``.

``parse_request(req)`` gives the role and the markers (proof tokens and qualities, analysis
tokens and scores, in prompt order) so tests can check exactly what each prompt contained.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Callable

from scripted_server import Reply, ScriptedRequest, ScriptedServer

from proofsmith.llm.client import Budget, Endpoint, LLMClient
from proofsmith.prompts import Templates
from proofsmith.store import RunStore

TEMPLATES = Templates(
    generate="ROLE:GENERATE\nPROBLEM:\n{problem}",
    verify="ROLE:VERIFY\nPROBLEM:\n{problem}\nPROOF:\n{proof}\nEND",
    meta_verify="ROLE:META\nPROBLEM:\n{problem}\nPROOF:\n{proof}\nANALYSIS:\n{analysis}\nEND",
    refine="ROLE:REFINE\nPROBLEM:\n{problem}\nPREVIOUS:\n{previous}\nEND",
    source="tests",
)

PROOF_RE = re.compile(r"P\[([0-9a-f]+)\] QUALITY=([0-9]+(?:\.[0-9]+)?)")
ANALYSIS_RE = re.compile(r"([AS])\[([0-9a-f]+(?:\.[0-9]+)?)\] SCORE=([0-9]+(?:\.[0-9]+)?|none)")


def token(*parts: object) -> str:
    return hashlib.sha256("\x00".join(map(str, parts)).encode()).hexdigest()[:10]


def fmt(x: float) -> str:
    return f"{x:g}"


def _boxed_verify(score: float | None) -> str:
    if score is None:
        return "I could not decide."
    return f"Based on my evaluation, the final overall score should be: \\boxed{{{fmt(score)}}}"


@dataclass
class Parsed:
    role: str
    proofs: list[tuple[str, float]]  # (token, quality) in prompt order
    analyses: list[tuple[str, str, float | None]]  # (kind A/S, token, score) in prompt order
    problem: str


def parse_request(req: ScriptedRequest) -> Parsed:
    prompt = req.prompt
    role = prompt.split("\n", 1)[0].removeprefix("ROLE:")
    problem = prompt.split("PROBLEM:\n", 1)[1].split("\n", 1)[0] if "PROBLEM:\n" in prompt else ""
    proofs = [(t, float(q)) for t, q in PROOF_RE.findall(prompt)]
    analyses = [(k, t, None if s == "none" else float(s)) for k, t, s in ANALYSIS_RE.findall(prompt)]
    return Parsed(role, proofs, analyses, problem)


def _default_refine(parents: list[float], analyses: list[tuple[str, float | None]], i: int) -> float:
    best = max(parents) if parents else 0.0
    true_issue = any(s is not None and s < 1 and s == best for _, s in analyses)
    return min(1.0, best + 0.5) if true_issue else best


@dataclass
class World:
    gen_quality: Callable[[str, int], float] = lambda problem, i: 0.0
    self_score: Callable[[float, str, int], float | None] = lambda q, tok, i: q
    verify_score: Callable[[float, str, int], float | None] = lambda q, tok, i: q
    meta_score: Callable[[float, float | None, str, int], float | None] = (
        lambda q, v, atok, i: 1.0 if v == q else 0.0
    )
    refine_quality: Callable[[list[float], list[tuple[str, float | None]], int], float] = _default_refine
    delay: float = 0.0  # seconds per answer (for the kill test)
    # fresh_samples: like a real sampling server, a prompt asked again gets new answers (choice
    # index continues after the choices already served for that prompt). Not content-pure, so
    # the resume test keeps it off.
    fresh_samples: bool = False
    qualities: dict[str, float] = field(default_factory=dict)  # proof token -> quality
    served: dict[str, int] = field(default_factory=dict)

    def answer(self, req: ScriptedRequest, i: int) -> str:
        p = parse_request(req)
        if p.role == "GENERATE":
            tok = token(req.prompt, i)
            return self._proof(tok, self.gen_quality(p.problem, i), i)
        if p.role == "REFINE":
            tok = token(req.prompt, i)
            parents = [q for _, q in p.proofs]
            analyses = [(t, s) for _, t, s in p.analyses]
            return self._proof(tok, self.refine_quality(parents, analyses, i), i)
        if p.role == "VERIFY":
            ptok, q = p.proofs[0]
            v = self.verify_score(q, ptok, i)
            return (f"Here is my evaluation of the solution: A[{ptok}.{i}] SCORE={'none' if v is None else fmt(v)} "
                    f"about P[{ptok}].\n{_boxed_verify(v)}")
        if p.role == "META":
            ptok, q = p.proofs[0]
            _, atok, v = next(a for a in p.analyses if a[0] == "A")
            x = self.meta_score(q, v, atok, i)
            tail = (f'Based on my analysis, I will rate the "solution evaluation" as: \\boxed{{{fmt(x)}}}'
                    if x is not None else "No rating.")
            return f'Here is my analysis of the "solution evaluation": checked A[{atok}] M{i}.\n{tail}'
        raise AssertionError(f"unknown role in prompt: {req.prompt[:40]!r}")

    def _proof(self, tok: str, q: float, i: int) -> str:
        if q < 0:  # a quality below 0 scripts an answer without the two sections (discarded)
            return f"I tried P[{tok}] but gave up."
        self.qualities[tok] = q
        s = self.self_score(q, tok, i)
        box = f"Based on my evaluation, the final overall score should be: \\boxed{{{fmt(s)}}}" if s is not None else "No score."
        return (f"## Solution\nProof P[{tok}] QUALITY={fmt(q)}. The argument.\n\n## Self Evaluation\n"
                f"Here is my evaluation of the solution: S[{tok}] SCORE={'none' if s is None else fmt(s)}\n{box}")

    def reply(self, req: ScriptedRequest) -> Reply:
        if not self.fresh_samples:
            return Reply(text=self.answer, delay=self.delay)
        key = req.prompt
        base = self.served.get(key, 0)
        self.served[key] = base + req.n
        return Reply(text=lambda r, i: self.answer(r, base + i), delay=self.delay)


def start_world(world: World, **kwargs) -> ScriptedServer:
    return ScriptedServer(default=world.reply, **kwargs).start()


def client_for(srv: ScriptedServer, run_dir, budget: Budget | None = None, max_concurrency: int = 64) -> LLMClient:
    """A client on ``srv`` with a run store in ``run_dir``, fast backoff and one retry."""
    return LLMClient(Endpoint(base_url=srv.base_url, model="m", max_concurrency=max_concurrency),
                     store=RunStore(run_dir), budget=budget, backoff_base=0.01, max_retries=1)


def requests_by_role(server: ScriptedServer) -> dict[str, list[ScriptedRequest]]:
    out: dict[str, list[ScriptedRequest]] = {}
    for r in server.requests:
        out.setdefault(parse_request(r).role, []).append(r)
    return out
