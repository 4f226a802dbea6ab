"""Inputs a policy or an untrusted proof can write that made the parsers raise or take
super-linear time (found attacking the parser, stop 19). Each case is sized so that the code
before the fix needed from half a minute to hours; the parsers now answer in well under a
second (the timeout only turns a hang into a failure)."""

from __future__ import annotations

import pytest

from proofsmith.parse import (
    VERIFIER_FINAL,
    VERIFIER_START,
    parse_generation,
    parse_meta_verification,
    parse_score,
    parse_verification,
    score_value,
)
from proofsmith.rewards import format_reward, verifier_reward

B = "\\boxed"
VS, VF = VERIFIER_START, VERIFIER_FINAL


def honest(score: str = "0") -> str:
    return f"{VS}\nThe proof skips odd n; incomplete.\n\n{VF} {B}{{{score}}}"


@pytest.mark.parametrize("box", [f"{'1' * 5000}/1", f"\\frac{{{'1' * 5000}}}{{1}}", f"1/{'7' * 5000}"])
def test_a_box_with_thousands_of_digits_is_no_score_not_an_exception(box):
    # Python refuses int() of 4,301 digits or more: every parser and reward raised
    assert score_value(box) is None
    p = parse_verification(f"{VS}\nx\n\n{VF} {B}{{{box}}}")
    assert p.score is None and p.format_error.startswith("score not in")
    assert verifier_reward(f"{VS}\nx\n\n{VF} {B}{{{box}}}", 1.0).value == 0.0
    g = parse_generation(f"## Solution\nP.\n## Self Evaluation\n{VS}\nok\n\n{VF} {B}{{{box}}}")
    assert g.self_score is None
    assert parse_score(f"{B}{{{'0' * 5000}1/2}}") == 0.5  # leading zeros are no digits


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", [
    "header followed by blanks",  # n**4 backtracking of the header pattern
    "blanks at the end of the analysis",  # quadratic trailing-blanks pattern
    "many reasoning ends before the answer",  # every tag's answer structure was computed
    "many unclosed boxes after the verdict",  # each box's brace looked for to the end
    "many unclosed boxes before the answer",
    "untrusted tags on one line",  # a segment per tag, each to the end of the line
    "untrusted phrases then boxes",  # a segment from every phrase to the next box
])
def test_worst_case_inputs_parse_in_linear_time(case):
    if case == "header followed by blanks":
        g = parse_generation("## Solution" + " " * 100_000 + "x\n")
        assert g.format_error == "missing header: ## Solution"
        return
    if case == "blanks at the end of the analysis":
        p = parse_verification(f"{VS}\n" + " " * 200_000 + f"x\n{VF} {B}{{1}}")
        assert (p.score, p.analysis) == (1.0, "x")
        return
    proof = None
    if case == "many reasoning ends before the answer":
        text = "</think>\n" * 50_000 + honest()
    elif case == "many unclosed boxes after the verdict":
        text = honest() + f"{B}{{" * 20_000
    elif case == "many unclosed boxes before the answer":
        text = f"{B}{{x " * 20_000 + honest()
    elif case == "untrusted tags on one line":
        text, proof = honest(), "</think> x " * 20_000
    else:
        text, proof = honest(), f"{VF} x\n" * 5_000 + f"{B}{{1}} y " * 5_000
    p = parse_verification(text, proof=proof)
    assert (p.score, p.format_error) == (0.0, None)
    assert parse_meta_verification(text, proof=proof, analysis=proof).score is None  # no meta phrases
    assert format_reward(text, role="verify", proof=proof).value == 1.0
