"""The ``proofsmith review`` web app (Starlette + Jinja2, plain JS, bundled KaTeX; offline).

Pages: ``/`` runs and problems, ``/run/{run}/problem/{id}``, ``/run/{run}/proof/{id}``,
``/label`` (the labeling queue), ``/agreement`` (several graders), ``/audit``.
JSON API: ``GET /api/queue``, ``GET /api/item``, ``GET /api/agreement``, ``GET /api/audit``,
``GET /api/history``, ``POST /api/decision``, ``POST /api/undo``, ``POST /api/resolve``,
``POST /api/annotator``; ``GET /export.jsonl`` (rows for ``label import-human``).

Page and GET handlers are plain functions (Starlette runs them in its thread pool) and POST
handlers hand the SQLite work to the pool, so a slow read never blocks the event loop.

Security (everything shown is untrusted model or user text):

* Jinja2 autoescape on every template; no data is ever marked safe; data for scripts travels in
  ``data-*`` attributes or ``<script type="application/json">`` (``tojson``), never as code.
* A Content-Security-Policy without ``unsafe-inline``/``unsafe-eval``: scripts, styles and
  fonts only from this server; math by KaTeX with ``trust: false``.
* Loopback by default, with a Host check (no DNS rebinding); any other ``--host`` needs the
  access token (printed once) on every request: ``?token=`` once (then a cookie), or an
  ``Authorization: Bearer`` header.
* Every POST needs the page's CSRF token in ``X-CSRF-Token``, a JSON body, and (when the
  browser sends one) an ``Origin`` equal to this server.
"""

from __future__ import annotations

import hmac
import json
import urllib.parse
import secrets
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..inputs import LONE_SURROGATE, load_json, lone_surrogate
from ..records import format_number
from .data import FLAGS, ReviewError
from .decisions import validate_annotator
from .render import segments
from .service import QUEUE_SETS, Review

__all__ = ["create_app", "CSP", "LOOPBACK_HOSTS"]

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; font-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
ANNOTATOR_COOKIE = "ps_annotator"
TOKEN_COOKIE = "ps_token"


def _score_class(s: Any) -> str:
    if s is None:
        return "s-none"
    s = float(s)
    return "s-good" if s >= 1 else ("s-mid" if s >= 0.5 else "s-bad")


def _env() -> Environment:
    env = Environment(loader=PackageLoader("proofsmith.review", "templates"),
                      autoescape=select_autoescape(["html"], default=True), trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = format_number
    # an id as one path segment: "/" and everything else but letters, digits and "-._~" escaped
    # (``urlencode`` keeps "/", so an id "a/../../b" made a link the browser resolved elsewhere)
    env.filters["pathseg"] = lambda v: urllib.parse.quote(str(v), safe="")
    env.filters["sclass"] = _score_class
    env.globals["segments"] = segments
    env.globals["FLAGS"] = FLAGS
    env.globals["QUEUE_SETS"] = QUEUE_SETS
    return env


class _Guard:
    """ASGI middleware: host check, access token, CSRF on POST, security headers."""

    def __init__(self, app, *, token: str | None, csrf: str, allowed_hosts: tuple[str, ...] | None):
        self.app, self.token, self.csrf, self.allowed_hosts = app, token, csrf, allowed_hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        denied = self._check(request)
        if isinstance(denied, Response):
            return await self._secured(denied)(scope, receive, send)

        async def send_secured(message):
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"content-security-policy"]
                headers += [(k.encode(), v.encode()) for k, v in self._headers(scope["path"]).items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_secured)

    @staticmethod
    def _headers(path: str) -> dict[str, str]:
        h = {"content-security-policy": CSP, "x-content-type-options": "nosniff", "referrer-policy": "no-referrer",
             "x-frame-options": "DENY", "cross-origin-opener-policy": "same-origin",
             "cross-origin-resource-policy": "same-origin"}
        if not path.startswith("/static/"):
            h["cache-control"] = "no-store"
        return h

    def _secured(self, resp: Response) -> Response:
        for k, v in self._headers("").items():
            resp.headers[k] = v
        return resp

    def _check(self, request: Request) -> Response | None:
        if self.allowed_hosts is not None:
            raw = request.headers.get("host") or ""
            host = raw[: raw.index("]") + 1] if raw.startswith("[") and "]" in raw else raw.split(":")[0]
            if host not in self.allowed_hosts:
                return PlainTextResponse("unknown Host header", status_code=400)
        if self.token is not None:
            given = request.query_params.get("token")
            if given is not None and hmac.compare_digest(given.encode(), self.token.encode()) and request.method == "GET":
                params = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
                url = request.url.path + ("?" + urlencode(params) if params else "")
                resp = RedirectResponse(url, status_code=303)
                resp.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict")
                return resp
            auth = request.headers.get("authorization", "")
            cand = request.cookies.get(TOKEN_COOKIE) or (auth[7:] if auth.lower().startswith("bearer ") else "")
            if not cand or not hmac.compare_digest(cand.encode(), self.token.encode()):
                return PlainTextResponse("access token required: open the URL printed by `proofsmith review`",
                                         status_code=401)
        if request.method not in ("GET", "HEAD"):
            if request.method != "POST":
                return PlainTextResponse("method not allowed", status_code=405)
            origin = request.headers.get("origin")
            if origin is not None:
                expected = f"{request.url.scheme}://{request.headers.get('host', '')}"
                if origin != expected:
                    return JSONResponse({"error": "cross-origin request refused"}, status_code=403)
            if request.headers.get("sec-fetch-site") not in (None, "same-origin", "none"):
                return JSONResponse({"error": "cross-site request refused"}, status_code=403)
            got = request.headers.get("x-csrf-token", "")
            if not got or not hmac.compare_digest(got.encode(), self.csrf.encode()):
                return JSONResponse({"error": "missing or wrong CSRF token; reload the page"}, status_code=403)
            if not (request.headers.get("content-type") or "").startswith("application/json"):
                return JSONResponse({"error": "POST bodies must be JSON"}, status_code=415)
        return None


def create_app(run_dirs: list[str | Path], *, annotator: str | None = None, token: str | None = None,
               allowed_hosts: tuple[str, ...] | None = LOOPBACK_HOSTS, audit_size: int = 20) -> Starlette:
    """The ASGI app over ``run_dirs``. ``annotator``: the default grader name (a browser can
    choose another); ``token``: required on every request when set; ``allowed_hosts``: Host
    header values accepted (None: any, used with a token on a non-loopback address)."""
    review = Review(run_dirs)
    default_annotator = validate_annotator(annotator) if annotator else None
    env = _env()
    csrf = secrets.token_urlsafe(32)

    def who(request: Request) -> str | None:
        name = request.cookies.get(ANNOTATOR_COOKIE)
        if name:
            try:
                return validate_annotator(name)
            except ReviewError:
                return None
        return default_annotator

    def page(request: Request, template: str, status: int = 200, **ctx: Any) -> Response:
        html = env.get_template(template).render(
            request=request, csrf=csrf, annotator=who(request), runs=review.runs, nav=template, **ctx)
        return Response(html, status_code=status, media_type="text/html; charset=utf-8")

    def error_page(request: Request, e: ReviewError, status: int = 404) -> Response:
        return page(request, "error.html", status=status, message=str(e))

    def qp(request: Request) -> dict[str, str]:
        return {k: v for k, v in request.query_params.items() if k != "token"}

    # -- pages ------------------------------------------------------------------------------------

    def index(request: Request) -> Response:
        q = qp(request)
        try:
            res = review.problems(flag=q.get("flag") or None, q=q.get("q"), run=q.get("run"))
        except ReviewError as e:
            return error_page(request, e, 400)
        return page(request, "problems.html", res=res, flag=q.get("flag", ""), q=q.get("q", ""), run=q.get("run", ""))

    def problem(request: Request) -> Response:
        try:
            view = review.problem(request.path_params["run"], request.path_params["pid"])
        except ReviewError as e:
            return error_page(request, e)
        return page(request, "problem.html", v=view)

    def proof(request: Request) -> Response:
        try:
            view = review.proof(request.path_params["run"], request.path_params["proof_id"])
        except ReviewError as e:
            return error_page(request, e)
        return page(request, "proof.html", v=view)

    def _queue_params(q: dict[str, str]) -> dict[str, str]:
        return {k: q[k] for k in ("set", "flag", "q") if q.get(k)}

    def label(request: Request) -> Response:
        q = qp(request)
        me = who(request)
        set_name = q.get("set") or "needs-human"
        try:
            size = int(q.get("n") or audit_size)
            items = review.queue(set_name, q.get("flag") or None, q.get("q"), me, size)
        except (ValueError, ReviewError) as e:
            return error_page(request, ReviewError(str(e)), 400)
        base = _queue_params({**q, "set": set_name})
        if set_name == "audit" and q.get("n"):
            base["n"] = str(size)
        pos = None
        note = ""

        def find(items: list[dict]) -> int | None:
            return next((i for i, x in enumerate(items) if x["proof_id"] == q["proof"]
                         and str(x["run"]) == str(q.get("run", x["run"]))), None)

        if q.get("proof") is not None:
            pos = find(items)
            if pos is None and (set_name != "proofs" or q.get("flag") or q.get("q")):
                # e.g. undo of a decision made in another queue: show it among all proofs
                items = review.queue("proofs", None, None, me, audit_size)
                pos = find(items)
                if pos is not None:
                    note = f"this proof is not in the {set_name} queue; showing it among all proofs"
                    set_name, base = "proofs", {"set": "proofs"}
            if pos is None:
                return error_page(request, ReviewError(f"proof {q['proof']!r} is not in this queue"))
        elif items:
            pos = next((i for i, x in enumerate(items) if x["mine"] is None), 0)
        item = None
        links: dict[str, str | None] = {"prev": None, "next": None}
        if pos is not None:
            cur = items[pos]
            try:
                item = review.item(cur["run"], cur["proof_id"], me)
            except ReviewError as e:
                return error_page(request, e)

            def link(i: int) -> str:
                return "/label?" + urlencode({**base, "run": items[i]["run"], "proof": items[i]["proof_id"]})

            links = {"prev": link(pos - 1) if pos > 0 else None, "next": link(pos + 1) if pos + 1 < len(items) else None,
                     "self": link(pos)}
        marks = [(s["start"], s["end"]) for s in ((item or {}).get("mine") or {}).get("spans", [])]
        done = sum(1 for x in items if x["mine"] is not None)
        return page(request, "label.html", items=items, pos=pos, item=item, links=links, base=base,
                    set_name=set_name, flag=q.get("flag", ""), q=q.get("q", ""), marks=marks, done=done, note=note)

    def agreement_page(request: Request) -> Response:
        return page(request, "agreement.html", a=review.agreement())

    def audit_page(request: Request) -> Response:
        try:
            size = int(qp(request).get("n") or audit_size)
            res = review.audit(size, who(request))
        except (ValueError, ReviewError) as e:
            return error_page(request, ReviewError(str(e)), 400)
        return page(request, "audit.html", a=res, size=size)

    # -- JSON API --------------------------------------------------------------------------------

    def api_error(e: Exception, status: int = 400) -> JSONResponse:
        return JSONResponse({"error": str(e)}, status_code=status)

    async def body(request: Request) -> dict:
        try:
            text = (await request.body()).decode("utf-8") or "{}"
            doc = load_json(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ReviewError(f"request body is not valid JSON ({e})") from None
        if not isinstance(doc, dict):
            raise ReviewError("request body must be a JSON object")
        if lone_surrogate(doc, text):  # (no UTF-8 database or page can hold it)
            raise ReviewError(f"request body: {LONE_SURROGATE}")
        return doc

    def need_annotator(request: Request) -> str:
        me = who(request)
        if not me:
            raise ReviewError("choose your annotator name first")
        return me

    def api_queue(request: Request) -> Response:
        q = qp(request)
        try:
            items = review.queue(q.get("set") or "needs-human", q.get("flag") or None, q.get("q"), who(request),
                                 int(q.get("n") or audit_size))
        except (ValueError, ReviewError) as e:
            return api_error(e)
        return JSONResponse({"items": items})

    def api_item(request: Request) -> Response:
        q = qp(request)
        try:
            it = review.item(q.get("run", "0"), q.get("proof_id", ""), who(request))
        except ReviewError as e:
            return api_error(e, 404)
        keep = ("mine", "others", "final", "final_status", "resolution", "issues", "imported")
        return JSONResponse({"proof_id": it["proof"]["id"], "problem_id": it["proof"]["problem_id"],
                             "proof": it["proof"]["proof"], **{k: it[k] for k in keep}})

    def api_history(request: Request) -> Response:
        q = qp(request)
        try:
            return JSONResponse({"history": review.history(q.get("run", "0"), q.get("proof_id", ""))})
        except ReviewError as e:
            return api_error(e, 404)

    def api_agreement(request: Request) -> Response:
        return JSONResponse(review.agreement())

    def api_audit(request: Request) -> Response:
        try:
            return JSONResponse(review.audit(int(qp(request).get("n") or audit_size), who(request)))
        except (ValueError, ReviewError) as e:
            return api_error(e)

    async def save_decision(request: Request, resolve: bool) -> Response:
        """A grader's decision on a proof (with marked spans), or a resolution of a conflict."""
        try:
            d = await body(request)
            how = (None, "resolve") if resolve else (d.get("spans"),)
            row = await run_in_threadpool(review.decide, d.get("run", 0), str(d.get("proof_id", "")),
                                          need_annotator(request), d.get("score"), d.get("comment", ""), *how)
        except ReviewError as e:
            return api_error(e)
        return JSONResponse({"saved": row})

    async def api_decision(request: Request) -> Response:
        return await save_decision(request, resolve=False)

    async def api_resolve(request: Request) -> Response:
        return await save_decision(request, resolve=True)

    async def api_undo(request: Request) -> Response:
        try:
            await body(request)
            row = await run_in_threadpool(review.undo, need_annotator(request))
        except ReviewError as e:
            return api_error(e)
        return JSONResponse({"undone": row})

    async def api_annotator(request: Request) -> Response:
        try:
            d = await body(request)
            name = validate_annotator(d.get("name"))
        except ReviewError as e:
            return api_error(e)
        resp = JSONResponse({"annotator": name})
        resp.set_cookie(ANNOTATOR_COOKIE, name, httponly=True, samesite="strict", max_age=3600 * 24 * 365)
        return resp

    def export(request: Request) -> Response:
        q = qp(request)
        try:
            rows = review.export_rows(q.get("run", "0"), q.get("annotator") or None, q.get("scope") or "labels")
        except ReviewError as e:
            return api_error(e)
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        headers = {}
        if q.get("download"):
            headers["content-disposition"] = 'attachment; filename="human_decisions.jsonl"'
        return Response(text, media_type="text/plain; charset=utf-8", headers=headers)

    static = resources.files("proofsmith.review").joinpath("static")
    katex = resources.files("proofsmith").joinpath("report", "assets", "katex")
    routes = [
        Route("/", index),
        Route("/run/{run:int}/problem/{pid:path}", problem),
        Route("/run/{run:int}/proof/{proof_id:path}", proof),
        Route("/label", label),
        Route("/agreement", agreement_page),
        Route("/audit", audit_page),
        Route("/export.jsonl", export),
        Route("/api/queue", api_queue),
        Route("/api/item", api_item),
        Route("/api/history", api_history),
        Route("/api/agreement", api_agreement),
        Route("/api/audit", api_audit),
        Route("/api/decision", api_decision, methods=["POST"]),
        Route("/api/resolve", api_resolve, methods=["POST"]),
        Route("/api/undo", api_undo, methods=["POST"]),
        Route("/api/annotator", api_annotator, methods=["POST"]),
        Mount("/static/katex", StaticFiles(directory=str(katex)), name="katex"),
        Mount("/static", StaticFiles(directory=str(static)), name="static"),
    ]
    async def review_error(request: Request, exc: Exception) -> Response:
        # a ReviewError no handler caught (e.g. a damaged run store under /agreement): its one
        # line, as JSON under /api/ and as the error page elsewhere, never a bare 500
        status = 500 if str(exc).startswith("run store damaged") else 400
        if request.url.path.startswith("/api/"):
            return api_error(exc, status)
        return error_page(request, ReviewError(str(exc)), status)

    app = Starlette(routes=routes, exception_handlers={ReviewError: review_error})
    guard = _Guard(app, token=token, csrf=csrf, allowed_hosts=allowed_hosts)
    guard.review = review  # type: ignore[attr-defined]
    return guard  # type: ignore[return-value]
