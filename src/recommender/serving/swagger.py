"""The service's ``/`` page: Swagger UI from a pinned copy in this package, nothing from elsewhere.

The files are npm's ``swagger-ui-dist`` at the exact version :data:`VERSION` (``swagger_ui/``,
its ``NOTICE.md`` lists them with their sizes and SHA-256); the service serves them itself under
``/swagger-ui/`` (:func:`asset`), with the page's start-up script (:data:`INIT_JS`, a file rather
than an inline script, so the Content-Security-Policy needs no ``'unsafe-inline'`` for scripts).
Swagger UI reads ``docs.json`` (BentoML's OpenAPI schema, whose ``servers`` is ``"."``), so "Try
it out" and its generated ``curl`` lines address the host and port the page was loaded from; the
page's own example does too (:func:`index_html` gets the served origin per request). The online
validator badge (``validator.swagger.io``) is turned off, and :data:`INDEX_CSP` lets the page load
only from this server, so a future Swagger UI that tried to reach another host would be blocked.
"""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path

#: The vendored ``swagger-ui-dist`` version (npm), and where its files are.
VERSION = "5.36.0"
ASSETS = Path(__file__).with_name("swagger_ui") / f"swagger-ui-dist-{VERSION}"
#: URL prefix of the assets, relative to ``/``.
PREFIX = "/swagger-ui/"
#: The files served, and their media types (the licenses too: they travel with the code).
MEDIA_TYPES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "LICENSE": "text/plain; charset=utf-8",
    "NOTICE": "text/plain; charset=utf-8",
    "swagger-ui-bundle.js.LICENSE.txt": "text/plain; charset=utf-8",
}
#: Starts Swagger UI on ``docs.json``, with no online validator and no external links loaded.
INIT_JS = """\
"use strict";
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "docs.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    tryItOutEnabled: false,
  });
});
"""
#: ``/``'s Content-Security-Policy: scripts, styles, fetches and images from this server only
#: (``data:`` images: Swagger UI's icons), inline styles allowed (Swagger UI sets some).
INDEX_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


@cache
def _read(name: str) -> bytes:
    if name == "init.js":
        return INIT_JS.encode()
    return (ASSETS / name).read_bytes()


def asset(path: str) -> tuple[bytes, str] | None:
    """The bytes and media type served at ``path`` (``/swagger-ui/<file>``), None if not ours."""
    if not path.startswith(PREFIX):
        return None
    name = path[len(PREFIX) :]
    if name == "init.js":
        return _read(name), "text/javascript; charset=utf-8"
    if name not in MEDIA_TYPES:
        return None
    return _read(name), MEDIA_TYPES[name]


def index_html(routes: tuple[tuple[str, str], ...], origin: str) -> str:
    """The page: what the service answers (``routes``: route and summary), an example with the
    served ``origin`` (``http://host:port``), then Swagger UI over ``docs.json``."""
    rows = "\n".join(
        f"<li><code>POST {html.escape(route)}</code>: {html.escape(summary)}</li>"
        for route, summary in routes
    )
    example = html.escape(
        f"curl -s -XPOST {origin}/recommend -H 'content-type: application/json' "
        """-d '{"user_id": 1, "k": 5}'"""
    )
    prefix = PREFIX.lstrip("/")
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>recommender</title>
<link rel="stylesheet" href="{prefix}swagger-ui.css">
<style>
.intro {{ font-family: system-ui, sans-serif; max-width: 1460px; margin: 1rem auto;
  padding: 0 20px; }}
.intro code, .intro pre {{ background: #f3f3f3; padding: 0.1rem 0.3rem; }}
</style>
</head>
<body>
<div class="intro">
<h1>recommender</h1>
<p>Ratings, top-K recommendations and similar items from the registry's champion model.
Every endpoint takes and returns JSON.</p>
<ul>
{rows}
</ul>
<pre>{example}</pre>
<p>The OpenAPI schema: <a href="docs.json">/docs.json</a>.
Probes: <a href="healthz">/healthz</a>, <a href="readyz">/readyz</a>.
Prometheus metrics: <a href="metrics">/metrics</a>.</p>
</div>
<div id="swagger-ui"><noscript>Swagger UI needs JavaScript; the schema is at
<a href="docs.json">/docs.json</a>.</noscript></div>
<script src="{prefix}swagger-ui-bundle.js"></script>
<script src="{prefix}init.js"></script>
</body>
</html>
"""
