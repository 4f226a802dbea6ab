"""How long do the pages of `proofsmith review` take on a large run?

Builds a synthetic label run (problems x proofs, each proof with V verifier analyses of ~2 KB
from one verifier call with n=V, a LabelItem per proof, half of them needs-human) in a temporary directory, then requests each
page through the ASGI app (Starlette's TestClient, no network): the first request (the run is
read and parsed) and the median of 5 later ones (the app re-reads only when the run changed),
a decision save + the next item page (what one key press costs a grader), and the problems
page after a record is put (a run that a pipeline is still writing).

    python benchmarks/review_pages.py [--problems 50 --proofs 20 --verifications 16]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import statistics
import tempfile
import time
from pathlib import Path

from starlette.testclient import TestClient

from proofsmith.pipelines.label import AnalysisEvidence, LabelItem
from proofsmith.records import Label, Problem, Proof, Verification
from proofsmith.review.app import create_app
from proofsmith.store import RunStore


def build(run: Path, problems: int, proofs: int, verifications: int) -> int:
    rng = random.Random(0)
    store = RunStore(run)
    body = "Let $x$ be real; then $x^2 \\ge 0$ since squares are nonnegative. " * 30
    analysis = "The step where $a+b=c$ is claimed is not justified by the lemma. " * 30
    n = 0
    for p in range(problems):
        store.put(Problem(id=f"P{p}", statement="Prove that $x^2 \\ge 0$ for every real $x$. " * 5))
        for i in range(proofs):
            pid = f"p{p}-{i}"
            store.put(Proof(id=pid, problem_id=f"P{p}", proof=body, self_evaluation=analysis, self_score=0.5,
                            iteration=i % 4, parents=[f"p{p}-{i - 1}"] if i else []))
            evidence = []
            # the verifier call behind the analyses (rows as the client writes them)
            cid, key = f"c{p}-{i}", hashlib.sha256(pid.encode()).hexdigest()
            request = {"model": "m", "messages": [{"role": "user", "content": body}], "n": verifications}
            store._db.execute(
                "INSERT INTO calls (id, request_key, role, endpoint, model, request, response, usage,"
                " latency_s, attempt, started_at, finished_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (cid, key, "verify", "http://127.0.0.1:1/v1", "m", json.dumps(request), "{}",
                 json.dumps({"prompt_tokens": 500, "completion_tokens": 600 * verifications}), 1.0, 0, 0.0, 1.0))
            for j in range(verifications):
                store._db.execute("INSERT INTO samples VALUES (?,?,?,?,?)",
                                  (key, j, cid, json.dumps({"text": analysis, "finish_reason": "stop"}), 1.0))
            for j in range(verifications):
                s = rng.choice([0.0, 0.5, 1.0])
                store.put(Verification(id=f"v{p}-{i}-{j}", problem_id=f"P{p}", proof_id=pid, score=s, analysis=analysis,
                                       call_id=cid, sample_index=j))
                evidence.append(AnalysisEvidence(id=f"v{p}-{i}-{j}", score=s, text=analysis,
                                                 status="confirmed" if s < 1 else "no-issue"))
            status = "needs-human" if i % 2 else "labeled"
            store.put(LabelItem(id=pid, problem_id=f"P{p}", problem="Prove it.", proof=body, analyses=evidence,
                                label=Label(proof_id=pid, problem_id=f"P{p}", status=status,
                                            label=None if i % 2 else 0.5)))
            n += 1
    store.close()
    return n


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=50)
    ap.add_argument("--proofs", type=int, default=20)
    ap.add_argument("--verifications", type=int, default=16)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        n = build(run, args.problems, args.proofs, args.verifications)
        size = (run / "run.sqlite").stat().st_size / 1e6
        print(f"run: {args.problems} problems, {n} proofs, {n * args.verifications} analyses, {size:.0f} MB")
        c = TestClient(create_app([run], annotator="bench", allowed_hosts=None))
        pages = {"problems": "/", "problem": "/run/0/problem/P3", "proof": "/run/0/proof/p3-5",
                 "label (needs-human queue)": "/label", "agreement": "/agreement", "audit": "/audit"}
        print(f"{'page':28} {'first ms':>9} {'later ms (median of 5)':>24}")
        for name, url in pages.items():
            first = timed(lambda: c.get(url).raise_for_status())
            later = statistics.median(timed(lambda: c.get(url).raise_for_status()) for _ in range(5))
            print(f"{name:28} {first * 1000:9.0f} {later * 1000:24.0f}")
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', c.get("/").text).group(1)
        keys = []
        for i in range(5):
            pid = f"p{i}-1"

            def press() -> None:
                c.post("/api/decision", json={"run": 0, "proof_id": pid, "score": 1},
                       headers={"X-CSRF-Token": csrf}).raise_for_status()
                c.get(f"/label?set=needs-human&run=0&proof=p{i}-3").raise_for_status()

            keys.append(timed(press))
        print(f"{'key press (save + next item)':28} {'':9} {statistics.median(keys) * 1000:24.0f}")
        # a pipeline still writing the run: one record put, then the problems page (median of 5)
        writes = []
        for i in range(5):
            store = RunStore(run)
            store.put(Problem(id=f"late{i}", statement="Prove it."))
            store.close()
            writes.append(timed(lambda: c.get("/").raise_for_status()))
        print(f"{'problems after one write':28} {'':9} {statistics.median(writes) * 1000:24.0f}")


if __name__ == "__main__":
    main()
