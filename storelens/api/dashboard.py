"""The web dashboard's static files, served by the API app: :func:`mount_dashboard`.

The dashboard (``dashboard/``: Vite + React + TypeScript, built by ``make dashboard``)
is a single-page app: ``index.html`` at ``/``, content-hashed files under ``/assets/``,
and ``index.html`` again for any other non-API path no route matched (the
single-page app's own routes, e.g. ``/counts``). It only reads the API, with the browser's session cookie; the files
themselves hold no data and need no sign-in.

The built files are read from ``$STORELENS_DASHBOARD_DIR``, default the repository's
``dashboard/dist``. When they are missing, ``/`` answers 503 with a page saying how to
build them.

Example:
    >>> from fastapi import FastAPI
    >>> from fastapi.testclient import TestClient
    >>> app = FastAPI()
    >>> mount_dashboard(app, dist_dir="/nonexistent")
    >>> r = TestClient(app).get("/")
    >>> r.status_code, "make dashboard" in r.text
    (503, True)
    >>> TestClient(app).get("/v1/nope").json()
    {'detail': 'Not Found'}
"""
from __future__ import annotations

import os
import pathlib

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

#: Where ``make dashboard`` writes the built files.
DEFAULT_DIST = pathlib.Path(__file__).resolve().parents[2] / "dashboard" / "dist"
#: First path segments that belong to the API, never to the dashboard (an unknown one is a JSON 404).
API_PREFIXES = ("v1", "healthz", "readyz", "metrics", "docs", "redoc", "openapi.json")

NOT_BUILT = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>StoreLens</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto; padding: 0 1em">
<h1>StoreLens dashboard not built</h1>
<p>The dashboard's files were not found in <code>{dist}</code>.</p>
<p>Build them with <code>run make dashboard</code> (or <code>make dashboard</code> in the repository; it needs
Node.js and npm), then reload this page. The API itself works: see <a href="/docs">/docs</a>.</p>
</body></html>"""


def dashboard_dir() -> pathlib.Path:
    """The built dashboard: ``$STORELENS_DASHBOARD_DIR`` or the repository's ``dashboard/dist``."""
    env = os.environ.get("STORELENS_DASHBOARD_DIR")
    return pathlib.Path(env) if env else DEFAULT_DIST


def mount_dashboard(app: FastAPI, dist_dir: str | os.PathLike[str] | None = None) -> None:
    """Serve the built dashboard from ``dist_dir`` (default :func:`dashboard_dir`) on ``app``.

    No route is added: a ``GET``/``HEAD`` that no route of the app matched (a 404 from the
    router) outside the API prefixes (``/v1/...``, ``/docs``...) is answered from the
    dashboard's files, ``index.html`` for any path that is not a file. Every other error
    goes to the app's handler, so the API's 404s and 405s (with ``Allow``) are unchanged
    and nothing appears in the OpenAPI schema. Call it after the app's HTTP error handler
    is registered.
    """
    dist = (pathlib.Path(dist_dir) if dist_dir is not None else dashboard_dir()).resolve()
    api_error = app.exception_handlers.get(StarletteHTTPException, http_exception_handler)

    def index() -> Response:
        page = dist / "index.html"
        if not page.is_file():
            return HTMLResponse(NOT_BUILT.format(dist=dist), status_code=503)
        # the page names the current hashed assets: never cached
        return FileResponse(page, media_type="text/html", headers={"Cache-Control": "no-cache"})

    def static(path: str) -> Response | None:
        """The dashboard's answer to ``GET /<path>``, or None when the path is not the dashboard's."""
        if path.split("/", 1)[0] in API_PREFIXES:
            return None
        target = (dist / path).resolve()
        if path and target.is_file() and target.is_relative_to(dist):
            # content-hashed names under assets/: a changed file gets a new name
            cache = "public, max-age=31536000, immutable" if path.startswith("assets/") else "no-cache"
            return FileResponse(target, headers={"Cache-Control": cache})
        if path.startswith("assets/"):
            return None
        return index()  # "/" or a route of the single-page app

    async def dashboard_or_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404 and request.method in ("GET", "HEAD") and "endpoint" not in request.scope:
            answer = static(request.url.path.lstrip("/"))
            if answer is not None:
                return answer
        return await api_error(request, exc)

    app.add_exception_handler(StarletteHTTPException, dashboard_or_error)
