"""How long does parsing a verifier answer take? 64 analyses of each of 20 proofs (each
analysis ~2.5 KB, quoting lines of its ~4 KB proof), through ``parse_verification`` with the
proof as its untrusted text: what a pool search does for every sample, and what a re-run of a
finished run does for every stored sample.

    python benchmarks/parse_speed.py
    PROOFSMITH_SRC=/path/to/other/src python benchmarks/parse_speed.py   # another checkout
"""
import os, random, sys, time
sys.path.insert(0, os.environ.get("PROOFSMITH_SRC", os.path.join(os.path.dirname(__file__), "..", "src")))
from proofsmith.parse import VERIFIER_START, VERIFIER_FINAL, parse_verification
rng = random.Random(0)
words = "let n be an integer then since we have thus the sum of squares is even odd prime divides".split()
def sent(k): return " ".join(rng.choice(words) for _ in range(k)) + f" $a_{rng.randint(1,9)} + b^2 = {rng.randint(1,99)}$."
proofs = ["\n".join(sent(14) for _ in range(40)) for _ in range(20)]
analyses = []
for p in proofs:
    lines = p.split("\n")
    for j in range(64):
        body = "\n".join((f'The proof says "{rng.choice(lines)}" which is fine.' if i % 3 == 0 else sent(16)) for i in range(30))
        analyses.append((p, f"{VERIFIER_START}\n{body}\n{VERIFIER_FINAL} \\boxed{{{rng.choice(['0','0.5','1'])}}}"))
t = time.process_time()
scores = [parse_verification(a, proof=p).score for p, a in analyses]
dt = time.process_time() - t
print(f"{len(analyses)} parses, {dt / len(analyses) * 1e3:.3f} ms each; scores {sorted(set(scores))}")
