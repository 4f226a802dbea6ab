"""The verification-policy options shared by ``search``, ``label`` and ``eval``
(``--verification-policy``, ``--delta``, ``--batch``; see docs/pipelines.md "Adaptive verification")."""

from __future__ import annotations

from typing import Annotated

import typer

from ..pipelines.adaptive import VerificationPolicy
from .options import MAX_COUNT, or_fail

PolicyOpt = Annotated[str, typer.Option(
    "--verification-policy",
    help="fixed: every proof gets all its verifier samples (the paper; default). adaptive: samples are "
         "drawn in batches of --batch and a proof stops as soon as its decisions are settled "
         "(search: pass / rank / analyses; label: the label) — see docs/pipelines.md.")]
DeltaOpt = Annotated[float, typer.Option(
    "--delta", min=1e-9, max=0.5,
    help="adaptive: error budget of the probabilistic decisions of one search stage (the ranking); "
         "the pass and label decisions are exact.")]
BatchOpt = Annotated[int, typer.Option(
    "--batch", min=1, max=MAX_COUNT, help="adaptive: verifier samples per request (one n=BATCH request per proof and look).")]
EpsilonOpt = Annotated[float, typer.Option(
    "--epsilon", min=0.0, max=0.99,
    help="adaptive search: indifference zone of the rank decisions; 0 (default) decides exactly as the fixed "
         "policy would; > 0 admits a proof once no more than refine_top - 1 others can beat its mean by more "
         "than EPSILON.")]

RankByOpt = Annotated[str, typer.Option(
    "--rank-by",
    help="search: the score that ranks the pool, decides the stop rule (pass) and selects the final proof: "
         "raw (the paper; every valid analysis counts) or filtered (analyses the meta-verifier rejected are "
         "left out; needs --meta-verify; not with --verification-policy adaptive).")]


def policy_from_options(kind: str, delta: float, batch: int, epsilon: float = 0.0) -> VerificationPolicy:
    """The policy, or a one-line error for a bad value."""
    return or_fail(lambda: VerificationPolicy(kind=kind, delta=delta, batch=batch, epsilon=epsilon))  # type: ignore[arg-type]
