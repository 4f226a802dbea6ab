"""A small synchronous API for notebooks and scripts.

::

    import proofsmith

    proofs = proofsmith.prove("Prove that every odd square is 1 mod 8.", n=4)           # embedded model
    proofs = proofsmith.prove(problem, n=4, model="deepseek-math-v2")                   # from proofsmith.toml
    verdicts = proofsmith.verify(problem, proofs[0], n=8, model="m", base_url="http://gpu1:8000/v1")
    result = proofsmith.search(problem, preset="small")

Each call opens a session (the embedded model started when it is the model, the run store,
the client), runs, closes it, and returns the same records as the async API and ``--json``
(:mod:`proofsmith.records`, ``SearchResult``, ``RefineResult``). A problem is a
:class:`~proofsmith.records.Problem` or its statement; a proof a
:class:`~proofsmith.records.Proof` or its text.

The model is chosen as on the command line (:func:`proofsmith.models_file.resolve_config`):
``model`` (a name in the models file ``proofsmith.toml``, a name the server at ``base_url``
serves, or ``"embedded"``, the default) or a ready :class:`~proofsmith.session.ModelConfig`;
``config`` a models file; any other keyword a ModelConfig field (``temperature``,
``max_output_tokens``, ``context_length``, ``roles={"verifier": {"max_output_tokens": 64000}}``…).
``run_dir``: the run store (default: a new ``runs/<command>-<time>``); the same ``run_dir``
again reuses every finished call.

The calls block until done and work inside a running event loop too (Jupyter): there they run
on their own loop in a worker thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

from .errors import UserError
from .llm.loop import run as run_coroutine
from .models_file import resolve_config
from .records import MetaVerification, Problem, Proof, Verification, content_id
from .session import ModelConfig, Session, default_run_dir, open_session

__all__ = ["prove", "verify", "meta_verify", "search", "refine", "model_config", "as_problem"]

T = TypeVar("T")


def as_problem(problem: Problem | str) -> Problem:
    """A :class:`Problem` (a statement gets a stable id from its text: ``q-<hash>``)."""
    if isinstance(problem, Problem):
        return problem
    if isinstance(problem, str) and problem.strip():
        return Problem(id=content_id(problem.strip(), prefix="q-"), statement=problem.strip())
    raise UserError("a problem is a proofsmith.records.Problem or a non-empty statement string")


def model_config(model: str | ModelConfig | None = None, *, base_url: str | list[str] | None = None,
                 api_key: str | None = None, config: str | Path | None = None, **settings: Any) -> ModelConfig:
    """The :class:`ModelConfig` the calls of this module use (see the module docstring)."""
    if isinstance(model, ModelConfig):
        if base_url is not None or api_key is not None or config is not None or settings:
            update = {k: v for k, v in settings.items() if v is not None}
            if base_url is not None:
                update["base_urls"] = [base_url] if isinstance(base_url, str) else list(base_url)
            if api_key is not None:
                update["api_key"] = api_key
            return ModelConfig.model_validate({**model.model_dump(), **update})
        return model
    roles = settings.pop("roles", None)
    return resolve_config(model, base_urls=base_url, api_key=api_key, config_file=config, settings=settings,
                          role_settings=roles)


def _run(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to its end from synchronous code: on a new event loop (the CLI's kind:
    :func:`proofsmith.llm.loop.run`), or, when this thread already runs one (a notebook), on a
    new loop in a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run_coroutine(make())  # type: ignore[arg-type]
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="proofsmith") as pool:
        return pool.submit(lambda: run_coroutine(make())).result()  # type: ignore[arg-type]


def _session_call(command: str, model: Any, run_dir: str | Path | None, options: dict[str, Any],
                  work: Callable[[Session], Awaitable[T]]) -> T:
    cfg = model_config(model, **options)
    where = Path(run_dir) if run_dir is not None else default_run_dir(command)

    async def main() -> T:
        async with open_session(cfg, where) as s:
            return await work(s)

    return _run(main)


def _templates(templates: Any) -> Any:
    if templates is None or not isinstance(templates, (str, Path)):
        return templates
    from .prompts import Templates

    return Templates.load(Path(templates))


def prove(problem: Problem | str, n: int = 1, *, model: str | ModelConfig | None = None,
          run_dir: str | Path | None = None, templates: Any = None, **options: Any) -> list[Proof]:
    """``n`` proofs of ``problem``, each with its self-evaluation and self-score."""
    from . import roles

    p, tpl = as_problem(problem), _templates(templates)
    return _session_call("prove", model, run_dir, options,
                         lambda s: roles.generate(s.client, p, n=n, templates=tpl))


def verify(problem: Problem | str, proof: Proof | str, n: int = 1, *, model: str | ModelConfig | None = None,
           run_dir: str | Path | None = None, templates: Any = None, **options: Any) -> list[Verification]:
    """``n`` verifier analyses of ``proof`` (its body only), each with a score in {0, 0.5, 1}
    (None: no valid score, see ``format_error``). A :class:`Proof` without a body (its answer
    was discarded, ``proof.format_error`` says why) cannot be verified: ``ValueError``."""
    from . import roles

    p, tpl = as_problem(problem), _templates(templates)
    roles.proof_text(proof)  # a proof without a body fails here, before a model is started
    return _session_call("verify", model, run_dir, options,
                         lambda s: roles.verify(s.client, p, proof, n=n, templates=tpl))


def meta_verify(problem: Problem | str, proof: Proof | str, verification: Verification | str, n: int = 1, *,
                model: str | ModelConfig | None = None, run_dir: str | Path | None = None, templates: Any = None,
                **options: Any) -> list[MetaVerification]:
    """``n`` meta-verifications of a verifier analysis of ``proof``: do the issues it names
    exist, and do they justify its score?"""
    from . import roles

    p, tpl = as_problem(problem), _templates(templates)
    roles.proof_text(proof)
    return _session_call("meta-verify", model, run_dir, options,
                         lambda s: roles.meta_verify(s.client, p, proof, verification, n=n, templates=tpl))


def search(problem: Problem | str, *, preset: str = "small", model: str | ModelConfig | None = None,
           run_dir: str | Path | None = None, templates: Any = None, policy: Any = None,
           initial_proofs: int | None = None, verifications: int | None = None, refine_top: int | None = None,
           analyses: int | None = None, refinements_per_proof: int | None = None,
           max_iterations: int | None = None, meta_verify: bool | None = None,
           meta_verifications: int | None = None, **options: Any):
    """The pool search on one problem (``preset`` small / paper / release, any of its
    parameters overridden); the ``SearchResult`` (``stopped="failed"`` with the reason in
    ``message`` when its calls fail)."""
    from .pipelines.search import SearchConfig, run_search

    p, tpl = as_problem(problem), _templates(templates)
    cfg = SearchConfig.preset(preset, initial_proofs=initial_proofs, verifications=verifications,
                              refine_top=refine_top, analyses=analyses, refinements_per_proof=refinements_per_proof,
                              max_iterations=max_iterations, meta_verify=meta_verify,
                              meta_verifications=meta_verifications)
    return _session_call("search", model, run_dir, options,
                         lambda s: run_search(s.client, p, cfg, tpl, policy=policy))


def refine(problem: Problem | str, *, threads: int = 4, max_attempts: int = 4, verifications: int = 0,
           model: str | ModelConfig | None = None, run_dir: str | Path | None = None, templates: Any = None,
           **options: Any):
    """Sequential refinement with self-verification on one problem: ``threads`` threads of at
    most ``max_attempts`` answers; ``verifications`` > 0 grades each final proof (pass@1,
    best@K). The ``RefineResult``."""
    from .pipelines.refine import RefineConfig, run_refine

    p, tpl = as_problem(problem), _templates(templates)
    cfg = RefineConfig(threads=threads, max_attempts=max_attempts, verifications=verifications)
    return _session_call("refine", model, run_dir, options, lambda s: run_refine(s.client, p, cfg, tpl))
