"""The ``proofsmith review`` command (typer); the app itself is :mod:`proofsmith.review.app`."""

from __future__ import annotations

import ipaddress
import secrets
from pathlib import Path
from typing import Annotated, Optional

import typer

from .options import MAX_COUNT
from .output import fail, print_json


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def review(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories (each with a run.sqlite) to read and label.", show_default=False)],
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on (0: a free port).")] = 8765,
    host: Annotated[str, typer.Option("--host", help="Address to bind. Anything but loopback requires the access token printed at start on every request.")] = "127.0.0.1",
    annotator: Annotated[Optional[str], typer.Option("--annotator", help="Default grader name for decisions (each browser can set its own in the page).", show_default=False)] = None,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the app in a web browser.")] = False,
    audit_size: Annotated[int, typer.Option("--audit-size", min=1, max=MAX_COUNT, help="Automatic labels in the audit sample (most uncertain first).")] = 20,
    export: Annotated[Optional[Path], typer.Option("--export", help="Do not serve: write the human decisions of the (single) run directory as JSONL for `label import-human`, then exit.", show_default=False)] = None,
    export_annotator: Annotated[Optional[str], typer.Option("--export-annotator", help="With --export: that grader's own decisions instead of the final labels (resolutions, or scores all graders agree on).", show_default=False)] = None,
) -> None:
    """Web app to read runs (problems, proof pools, analyses, calls) and label proofs by hand.

    Decisions are saved at once in each run's run.sqlite (per annotator), survive restarts, and
    export in the format `proofsmith label import-human` reads."""
    from ..review.data import ReviewError

    if export_annotator is not None and export is None:
        fail("--export-annotator needs --export FILE")
    if export is not None:
        if len(run_dirs) != 1:
            fail("--export takes exactly one run directory")
        from ..review.service import Review

        try:
            res = Review(run_dirs).export_file(0, export, annotator=export_annotator)
        except (ReviewError, OSError) as e:
            fail(str(e))
        print_json(res)
        return
    import uvicorn

    from ..review.app import LOOPBACK_HOSTS, create_app

    loopback = _is_loopback(host)
    token = None if loopback else secrets.token_urlsafe(24)
    try:
        app = create_app(run_dirs, annotator=annotator, token=token,
                         allowed_hosts=LOOPBACK_HOSTS if loopback else None, audit_size=audit_size)
    except ReviewError as e:
        fail(str(e))
    import socket

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as e:
        fail(f"cannot listen on {host}:{port}: {e.strerror or e}")
    bound = sock.getsockname()[1]
    shown = host if ":" not in host else f"[{host}]"
    url = f"http://{shown}:{bound}/" + (f"?token={token}" if token else "")
    print(url, flush=True)  # the socket listens already: the URL works from now on
    if token:
        typer.echo("the access token in this URL is printed only once; share it only with your graders", err=True)
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()


def register(app: typer.Typer) -> None:
    app.command("review")(review)
