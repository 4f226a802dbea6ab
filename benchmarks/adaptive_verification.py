"""Adaptive vs fixed verification in the pool search: a simulator and a replay (issue 10).

**Simulator.** Each simulated problem runs the real search code (``run_search`` with the real
``LLMClient``, roles, parsers and a ``RunStore``) twice, once per policy, against a simulated
model answering in-process (an ``LLMClient`` transport: the requests are real
chat-completions bodies, only the HTTP socket is skipped, because CPU is the limit here).

The model (these are assumptions, not measurements of any real verifier):

* every proof has a true distribution of verifier scores over {0, 0.5, 1}; it is one of four
  *kinds*, with a per-proof jitter (a Dirichlet draw of concentration 40 around the kind's mean,
  so two proofs rarely share a mean):
  mostly-wrong (0.85, 0.10, 0.05), borderline (0.35, 0.40, 0.25),
  near-correct (0.05, 0.20, 0.75), correct (0.0, 0.005, 0.995)
  [probabilities of 0, 0.5, 1];
* a problem is *hard*, *medium* or *easy*, which sets the mix of kinds among the initial
  proofs: hard 90/10/0/0, medium 50/35/15/0, easy 20/30/40/10 (percent, kinds in the order
  above); problems cycle hard, medium, easy;
* a refinement of a proof is one kind better with probability 0.04 (hard), 0.12 (medium) or
  0.25 (easy), one kind worse with probability 0.1, else the same kind (jittered anew); it
  depends on the parent and on how often that parent was
  refined before, not on the analyses in the prompt, so both policies get the same children
  when they refine the same parents (the comparison isolates the verification decisions);
* verifier sample i of a proof is drawn from its distribution with a generator seeded by the
  proof text and i (the same samples under both policies: common random numbers); the
  self-score (a tie-breaker) is one draw from the same distribution.

Decisions compared per problem (proofs are matched by their text, identical under both
policies for the same lineage): which proofs are refined in each iteration (top-k
admissions), which proofs pass, why the search stopped, and the selected proof.

**Replay.** ``--replay`` re-decides each *fixed* run adaptively from its recorded samples in
recorded order (``pipelines.adaptive.replay_search``; no calls), with the split of the
adaptive samples over the decisions: the samples needed for (a) alone, (a)+(c), and all three.

Usage::

    python benchmarks/adaptive_verification.py --preset small --problems 200
    python benchmarks/adaptive_verification.py --preset paper --problems 6 --replay
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from proofsmith.llm.client import Endpoint, LLMClient  # noqa: E402
from proofsmith.pipelines.adaptive import VerificationPolicy, replay_search  # noqa: E402
from proofsmith.pipelines.search import SearchConfig, run_search  # noqa: E402
from proofsmith.prompts import Templates  # noqa: E402
from proofsmith.records import Problem  # noqa: E402
from proofsmith.store import RunStore  # noqa: E402

TEMPLATES = Templates(
    generate="ROLE:GENERATE\nPROBLEM:\n{problem}",
    verify="ROLE:VERIFY\nPROBLEM:\n{problem}\nPROOF:\n{proof}\nEND",
    meta_verify="ROLE:META\nPROBLEM:\n{problem}\nPROOF:\n{proof}\nANALYSIS:\n{analysis}\nEND",
    refine="ROLE:REFINE\nPROBLEM:\n{problem}\nPREVIOUS:\n{previous}\nEND",
    source="benchmark",
)

KINDS = {
    "mostly-wrong": (0.85, 0.10, 0.05),
    "borderline": (0.35, 0.40, 0.25),
    "near-correct": (0.05, 0.20, 0.75),
    "correct": (0.0, 0.005, 0.995),
}
KIND_NAMES = list(KINDS)
MIXES = {
    "hard": (0.90, 0.10, 0.0, 0.0),
    "medium": (0.50, 0.35, 0.15, 0.0),
    "easy": (0.20, 0.30, 0.40, 0.10),
}
# labeling: the grade a careful human would give each kind, and the meta-verifier's chance to
# confirm an issue-reporting analysis of score v: 0.9 if v equals the grade, 0.7 if v is above
# it (real issues, not all), 0.2 if below (invented or overstated issues)
TRUE_GRADE = {0: 0.0, 1: 0.5, 2: 0.5, 3: 1.0}
IMPROVE = {"hard": 0.04, "medium": 0.12, "easy": 0.25}
LEVELS = (0.0, 0.5, 1.0)
PROOF_RE = re.compile(r"P\[([0-9a-f]+)\] KIND=(\d) DIST=([0-9]\.[0-9]+),([0-9]\.[0-9]+),([0-9]\.[0-9]+)")


def rng_of(*parts: Any) -> random.Random:
    h = hashlib.sha256("\x00".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(h[:8], "big"))


def jitter(kind: int, rng: random.Random) -> tuple[float, float, float]:
    base = KINDS[KIND_NAMES[kind]]
    g = [rng.gammavariate(40 * b, 1.0) if b > 0 else 0.0 for b in base]
    s = sum(g)
    return tuple(x / s for x in g)  # type: ignore[return-value]


def draw(dist: tuple[float, ...], rng: random.Random) -> float:
    u, acc = rng.random(), 0.0
    for lv, p in zip(LEVELS, dist):
        acc += p
        if u < acc:
            return lv
    return LEVELS[-1]


class SimModel:
    """Answers chat-completions bodies for one problem (state: samples served per prompt, and
    refinements per parent)."""

    def __init__(self, difficulty: str):
        self.mix = MIXES[difficulty]
        self.improve = IMPROVE[difficulty]
        self.served: dict[str, int] = {}
        self.refined: dict[str, int] = {}
        self.verify_samples = 0
        self.meta_samples = 0

    def _proof(self, tok: str, kind: int, rng: random.Random) -> str:
        d = jitter(kind, rng)
        s = draw(d, rng)
        return (f"## Solution\nProof P[{tok}] KIND={kind} DIST={d[0]:.4f},{d[1]:.4f},{d[2]:.4f}.\n\n"
                f"## Self Evaluation\nHere is my evaluation of the solution: fine.\n"
                f"Based on my evaluation, the final overall score should be: \\boxed{{{s:g}}}")

    def answers(self, prompt: str, n: int) -> list[str]:
        role = prompt.split("\n", 1)[0].removeprefix("ROLE:")
        base = self.served.get(prompt, 0)
        self.served[prompt] = base + n
        out = []
        if role == "GENERATE":
            problem = prompt.split("PROBLEM:\n", 1)[1]
            for i in range(base, base + n):
                rng = rng_of("gen", problem, i)
                kind = rng.choices(range(4), weights=self.mix)[0]
                out.append(self._proof(hashlib.sha256(f"{problem}/{i}".encode()).hexdigest()[:12], kind, rng))
        elif role == "REFINE":
            tok, kind = PROOF_RE.search(prompt).group(1, 2)  # type: ignore[union-attr]
            for _ in range(n):
                j = self.refined.get(tok, 0)
                self.refined[tok] = j + 1
                rng = rng_of("refine", tok, j)
                u = rng.random()
                k = int(kind)
                k = min(3, k + 1) if u < self.improve else max(0, k - 1) if u < self.improve + 0.1 else k
                out.append(self._proof(hashlib.sha256(f"{tok}/{j}".encode()).hexdigest()[:12], k, rng))
        elif role == "VERIFY":
            m = PROOF_RE.search(prompt)
            tok = m.group(1)  # type: ignore[union-attr]
            dist = tuple(float(x) for x in m.group(3, 4, 5))  # type: ignore[union-attr]
            for i in range(base, base + n):
                s = draw(dist, rng_of("verify", tok, i))
                out.append(f"Here is my evaluation of the solution: sample {i}.\n"
                           f"Based on my evaluation, the final overall score should be: \\boxed{{{s:g}}}")
            self.verify_samples += n
        elif role == "META":
            m = PROOF_RE.search(prompt)
            tok = m.group(1)  # type: ignore[union-attr]
            grade = TRUE_GRADE[int(m.group(2))]  # type: ignore[union-attr]
            analysis = prompt.split("ANALYSIS:\n", 1)[1]
            v = float(re.findall(r"\\boxed\{([0-9.]+)\}", analysis)[-1])
            p_yes = 0.9 if v == grade else 0.2 if v < grade else 0.7
            for i in range(base, base + n):
                x = 1.0 if rng_of("meta", tok, analysis, i).random() < p_yes else 0.0
                out.append('Here is my analysis of the "solution evaluation": checked.\n'
                           f'Based on my analysis, I will rate the "solution evaluation" as: \\boxed{{{x:g}}}')
            self.meta_samples += n
        else:
            raise ValueError(f"unexpected role {role!r}")
        return out


class SimTransport:
    """An LLMClient transport answering from a SimModel in-process."""

    name = "simulated"

    def __init__(self, model: SimModel):
        self.model = model

    async def post(self, url: str, headers: dict[str, str], body: bytes):
        req = json.loads(body)
        prompt = req["messages"][-1]["content"]
        n = int(req.get("n") or 1)
        texts = self.model.answers(prompt, n)
        resp = {
            "id": "sim", "object": "chat.completion", "model": req.get("model", "sim"),
            "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                        for i, t in enumerate(texts)],
            "usage": {"prompt_tokens": 100, "completion_tokens": 50 * n, "total_tokens": 100 + 50 * n},
        }
        return 200, {}, json.dumps(resp).encode()

    async def aclose(self) -> None:
        return None


async def run_one(problem: Problem, difficulty: str, cfg: SearchConfig, policy: VerificationPolicy,
                  work: Path) -> tuple[dict, int]:
    model = SimModel(difficulty)
    run_dir = work / f"{problem.id}-{policy.kind}"
    store = RunStore(run_dir)
    client = LLMClient(Endpoint(base_url="http://sim.invalid/v1", model="sim", max_concurrency=4096),
                       store=store, transport=lambda timeout, limit: SimTransport(model))
    try:
        res = await run_search(client, problem, cfg, TEMPLATES, policy=policy)
    finally:
        await client.aclose()
        store.close()
        shutil.rmtree(run_dir, ignore_errors=True)
    return res.to_json(), model.verify_samples


def decisions(res: dict) -> dict:
    body = {p["id"]: p["proof"] for p in res["pool"]}
    return {
        "refined": [sorted(body[i] for i in it["refined"]) for it in res["iterations"]],
        "passed": sorted(p["proof"] for p in res["pool"] if p["passed"]),
        "stopped": res["stopped"],
        "selected": res["selected"]["proof"] if res["selected"] else None,
    }


def compare(fixed: dict, ada: dict) -> dict[str, bool]:
    f, a = decisions(fixed), decisions(ada)
    return {
        "refined": f["refined"] == a["refined"],
        "passed": f["passed"] == a["passed"] and f["stopped"] == a["stopped"],
        "selected": f["selected"] == a["selected"],
    }


def true_dist(proof: str) -> tuple[float, float, float]:
    m = PROOF_RE.search(proof)
    return tuple(float(x) for x in m.group(3, 4, 5))  # type: ignore[union-attr,return-value]


def fixed_self_agreement(fixed: dict) -> dict[str, float]:
    """How reproducible the fixed policy's own rank decisions are: for every stage that
    refined (top ``refine_top`` of the pool), draw a fresh set of ``verifications`` samples
    of every pool proof from its true distribution and rank again by the paper's rule; the
    share of stages whose refined set is unchanged (``fixed_vs_fixed``), and the share where
    the recorded set equals the top ``refine_top`` by *true* mean (``fixed_vs_truth``)."""
    cfg = fixed["config"]
    pool, iters = fixed["pool"], fixed["iterations"]
    order = {p["id"]: i for i, p in enumerate(pool)}
    same = truth = stages = 0
    for t in range(len(iters) - 1):
        members = [p for p in pool if p["iteration"] <= t]
        k = cfg["refine_top"]
        if k >= len(members):
            continue
        stages += 1
        rec = set(iters[t + 1]["refined"])

        def fresh(p: dict) -> tuple:
            d = true_dist(p["proof"])
            xs = [draw(d, rng_of("fresh", p["id"], t, i)) for i in range(cfg["verifications"])]
            m = sum(xs) / len(xs)
            return (-m, -(p["self_score"] or 0.0), order[p["id"]])

        def true_key(p: dict) -> tuple:
            d = true_dist(p["proof"])
            return (-(0.5 * d[1] + d[2]), order[p["id"]])

        same += {p["id"] for p in sorted(members, key=fresh)[:k]} == rec
        truth += {p["id"] for p in sorted(members, key=true_key)[:k]} == rec
    return {"rank_stages": stages, "fixed_vs_fixed": same, "fixed_vs_truth": truth}


def split_replay(fixed: dict, policy: VerificationPolicy) -> dict[str, Any]:
    out = {}
    for name, need in (("a", {"pass"}), ("a+c", {"pass", "analyses"}), ("a+b+c", None)):
        out[name] = replay_search(fixed, policy, need=need)
    return out


async def label_benchmark(n_proofs: int, policy: VerificationPolicy) -> dict[str, Any]:
    """Label ``n_proofs`` simulated proofs (kinds in turn) with both policies (n=8, m=3, k=2)."""
    from proofsmith.pipelines.label import LabelConfig, LabelInput, run_label_many

    cfg = LabelConfig()
    work = Path(tempfile.mkdtemp(prefix="adaptive-label-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    prob = Problem(id="label", statement="Simulated labeling problem.")
    items = []
    for i in range(n_proofs):
        kind = i % 4
        text = SimModel("hard")._proof(hashlib.sha256(f"label/{i}".encode()).hexdigest()[:12], kind,
                                       rng_of("label", i))
        body = text.split("## Solution\n", 1)[1].split("\n\n## Self Evaluation", 1)[0]
        items.append(LabelInput(problem=prob, proof_id=f"l{i:04d}", proof=body))
    out: dict[str, Any] = {}
    try:
        for pol in (VerificationPolicy(), policy):
            model = SimModel("hard")
            store = RunStore(work / pol.kind)
            client = LLMClient(Endpoint(base_url="http://sim.invalid/v1", model="sim", max_concurrency=4096),
                               store=store, transport=lambda timeout, limit: SimTransport(model))
            try:
                res = await run_label_many(client, items, cfg, TEMPLATES, policy=pol)
            finally:
                await client.aclose()
                store.close()
            out[pol.kind] = {"labels": {it.id: (it.label.status, it.label.label) for it in res.items},
                             "verify_samples": model.verify_samples, "meta_samples": model.meta_samples}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    f, a = out["fixed"], out["adaptive"]
    return {"proofs": n_proofs, "same_labels": sum(f["labels"][k] == a["labels"][k] for k in f["labels"]) / n_proofs,
            "fixed_verify": f["verify_samples"], "adaptive_verify": a["verify_samples"],
            "fixed_meta": f["meta_samples"], "adaptive_meta": a["meta_samples"],
            "counts": {str(k): sum(1 for v in f["labels"].values() if v == k)
                       for k in sorted(set(f["labels"].values()), key=str)}}


def summarize(rows: list[dict], setting: dict, cpu: float, replay: bool) -> dict:
    """The summary line over per-problem rows (also for rows merged from several runs)."""
    n = len(rows)
    sf, sa = sum(r["fixed_samples"] for r in rows), sum(r["adaptive_samples"] for r in rows)
    summary = {
        **setting, "problems": n,
        "fixed_samples": sf, "adaptive_samples": sa, "ratio": round(sf / sa, 2),
        "same_all": sum(all(r["same"].values()) for r in rows) / n,
        "same_refined": sum(r["same"]["refined"] for r in rows) / n,
        "same_passed": sum(r["same"]["passed"] for r in rows) / n,
        "same_selected": sum(r["same"]["selected"] for r in rows) / n,
        "cpu_s": round(cpu, 1),
    }
    for d in MIXES:
        sub = [r for r in rows if r["difficulty"] == d]
        if sub:
            summary[f"ratio_{d}"] = round(sum(r["fixed_samples"] for r in sub) / sum(r["adaptive_samples"] for r in sub), 2)
    rs = sum(r["self_agreement"]["rank_stages"] for r in rows)
    if rs:
        summary["rank_stages"] = rs
        summary["fixed_vs_fixed_rank"] = round(sum(r["self_agreement"]["fixed_vs_fixed"] for r in rows) / rs, 3)
        summary["fixed_vs_truth_rank"] = round(sum(r["self_agreement"]["fixed_vs_truth"] for r in rows) / rs, 3)
    if replay:
        rf = sum(r["replay_fixed_samples"] for r in rows)
        for k in ("a", "a+c", "a+b+c"):
            s = sum(r["replay"][k]["samples"] for r in rows)
            summary[f"replay_{k}_ratio"] = round(rf / s, 2)
        summary["replay_same"] = sum(r["replay"]["a+b+c"]["same"] for r in rows) / n
    return summary


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="small", help="search preset (small, paper, release)")
    ap.add_argument("--problems", type=int, default=30)
    ap.add_argument("--first", type=int, default=0,
                    help="index of the first simulated problem (split a long run over processes)")
    ap.add_argument("--merge", nargs="+", metavar="JSON",
                    help="instead: summarize the rows of these --json files together")
    ap.add_argument("--delta", type=float, default=0.01)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--epsilon", type=float, default=0.0)
    ap.add_argument("--override", default="", help="preset overrides, e.g. max_iterations=4,refine_top=8")
    ap.add_argument("--replay", action="store_true", help="also replay each fixed run adaptively")
    ap.add_argument("--json", help="write per-problem results here")
    ap.add_argument("--save-fixed", help="directory to keep the fixed runs' JSON (for more replays)")
    ap.add_argument("--label", type=int, default=0, help="instead: label this many simulated proofs")
    args = ap.parse_args()
    if args.label:
        pol = VerificationPolicy(kind="adaptive", delta=args.delta, batch=args.batch)
        print("LABEL " + json.dumps(await label_benchmark(args.label, pol)), flush=True)
        return
    if args.merge:
        data = [json.loads(Path(f).read_text()) for f in args.merge]
        rows = [r for d in data for r in d["rows"]]
        setting = {k: data[0]["summary"][k] for k in ("preset", "override", "delta", "batch", "epsilon")}
        summary = summarize(rows, setting, sum(d["summary"]["cpu_s"] for d in data), "replay" in rows[0])
        print("SUMMARY " + json.dumps(summary), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
        return
    over = {}
    for kv in filter(None, args.override.split(",")):
        k, v = kv.split("=")
        over[k] = int(v)
    cfg = SearchConfig.preset(args.preset, **over)
    policy = VerificationPolicy(kind="adaptive", delta=args.delta, batch=args.batch, epsilon=args.epsilon)
    work = Path(tempfile.mkdtemp(prefix="adaptive-sim-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    rows = []
    t0 = time.process_time()
    diffs = list(MIXES)
    try:
        for i in range(args.first, args.first + args.problems):
            diff = diffs[i % 3]
            prob = Problem(id=f"sim{i:04d}", statement=f"Simulated problem {i} ({diff}).")
            fixed, nf = await run_one(prob, diff, cfg, VerificationPolicy(), work)
            ada, na = await run_one(prob, diff, cfg, policy, work)
            row = {"problem": prob.id, "difficulty": diff, "fixed_samples": nf, "adaptive_samples": na,
                   "same": compare(fixed, ada), "iterations": len(fixed["iterations"]),
                   "stopped": fixed["stopped"]}
            if args.save_fixed:
                Path(args.save_fixed).mkdir(parents=True, exist_ok=True)
                (Path(args.save_fixed) / f"{args.preset}-{prob.id}.json").write_text(json.dumps(fixed))
            row["self_agreement"] = fixed_self_agreement(fixed)
            if args.replay:
                rep = split_replay(fixed, policy)
                row["replay"] = {k: {"samples": r["adaptive_samples"], "same": r["same_decisions"]}
                                 for k, r in rep.items()}
                row["replay_fixed_samples"] = rep["a"]["fixed_samples"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cpu = time.process_time() - t0
    summary = summarize(rows, {"preset": args.preset, "override": over, "delta": args.delta,
                               "batch": args.batch, "epsilon": args.epsilon}, cpu, args.replay)
    print("SUMMARY " + json.dumps(summary), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
