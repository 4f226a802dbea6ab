"""``proofsmith review``: a local web app to read runs and label proofs by hand.

Library parts (no CLI imports): :mod:`.data` (read runs), :mod:`.decisions` (human decisions
in the run store, agreement statistics), :mod:`.service` (queues, audit, export),
:mod:`.render` (text and math pieces), :mod:`.app` (the Starlette app). The typer command is
in :mod:`.command`.
"""

from .data import ReviewError
from .service import Review

__all__ = ["Review", "ReviewError", "create_app"]


def create_app(*args, **kwargs):
    """The ASGI app (see :func:`proofsmith.review.app.create_app`)."""
    from .app import create_app as _create

    return _create(*args, **kwargs)
