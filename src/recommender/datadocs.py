"""Make a Great Expectations Data Docs site self-contained: no CDN, no beacon, renders offline.

GX 1.24 writes pages that load Bootstrap, jQuery, bootstrap-table, Vega and Font Awesome from
seven CDN hosts (some at floating versions such as ``vega@5``) and show their logo from a GX host
with the data context id and a timestamp in its URL (a tracking beacon). Offline, the index page
is blank. :func:`make_offline` fixes a site in place:

- copies the pinned, vendored libraries of ``datadocs_assets/`` (versions and licenses in its
  ``NOTICE.md``) into the site as ``static/vendor/``;
- rewrites each ``<script src>`` and ``<link href>`` that :data:`LOCAL_COPIES` knows into a
  relative path to that copy (dropping ``integrity``/``crossorigin``, which a ``file://`` page
  cannot satisfy);
- points the validation pages' favicon, which GX misplaces by one folder, at the site's;
- replaces the beacon ``<img>`` by GX's own logo, which the site already has in
  ``static/images/``, and the GX-hosted logo in CSS ``url()``\\ s the same way;
- then checks every page and style sheet: anything still loaded from another host (say after a GX
  upgrade adds a library) raises :class:`RuntimeError` instead of being published.

Plain links (``<a href="https://...">``) stay: the user chooses to follow them.

Usage::

    make_offline(Path("gx/uncommitted/data_docs/local_site"))
"""

from __future__ import annotations

import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

#: The vendored libraries (one folder per package and version) and their NOTICE.md.
ASSETS = Path(__file__).with_name("datadocs_assets")
#: Where, in a site, the copy of :data:`ASSETS` goes.
VENDOR_DIR = "static/vendor"
#: GX's own logo, which GX copies into every site (``static/images/``).
LOGO = "static/images/logo-long.png"
#: The host of GX's logo beacon (``logo-long.png?d=<time>&dataContextId=<id>``) and dark logo.
GX_ASSETS_HOST = "great-expectations-web-assets.s3.us-east-2.amazonaws.com"

_FILTER_CONTROL_CSS = (
    "bootstrap-table-1.19.1/extensions/filter-control/bootstrap-table-filter-control.min.css"
)
#: Every third-party URL GX 1.24.1 writes into a page's ``<script src>`` or ``<link href>``, and
#: the file under :data:`ASSETS` that replaces it (see NOTICE.md for why each version).
LOCAL_COPIES: dict[str, str] = {
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": (
        "bootstrap-4.3.1/bootstrap.min.css"
    ),
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": (
        "bootstrap-4.3.1/bootstrap.min.js"
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": (
        "bootstrap-table-1.19.1/bootstrap-table.min.css"
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": (
        "bootstrap-table-1.19.1/bootstrap-table.min.js"
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/"
    "bootstrap-table-filter-control.min.js": (
        "bootstrap-table-1.19.1/extensions/filter-control/bootstrap-table-filter-control.min.js"
    ),
    # 1.19.0's filter-control CSS (minified or not) is 1.19.1's but for the version comment.
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/"
    "bootstrap-table-filter-control.min.css": _FILTER_CONTROL_CSS,
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/"
    "bootstrap-table-filter-control.css": _FILTER_CONTROL_CSS,
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/"
    "bootstrap-datepicker.min.css": "bootstrap-datepicker-1.9.0/bootstrap-datepicker.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/"
    "bootstrap-datepicker.min.js": "bootstrap-datepicker-1.9.0/bootstrap-datepicker.min.js",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/"
    "bootstrap-prefers-dark.css": "bootstrap-dark-1.1.0/bootstrap-prefers-dark.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": (
        "fontawesome-free-6.6.0/css/all.min.css"
    ),
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery-3.7.1/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": (
        "popper.js-1.12.9/popper.min.js"
    ),
    # Floating versions on jsDelivr, pinned to the newest release of each major.
    "https://cdn.jsdelivr.net/npm/vega@5": "vega-5.33.1/vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega-lite-5.23.0/vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega-embed-6.29.0/vega-embed.min.js",
}

_TAG = re.compile(r"<(?:script|link)\b[^>]*>", re.IGNORECASE)
_URL_ATTR = re.compile(r"""(?<![\w-])(src|href)\s*=\s*(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
_SRI_ATTR = re.compile(r"""\s+(?:integrity|crossorigin)(?:\s*=\s*(["']).*?\1)?""", re.IGNORECASE)
_BEACON = re.compile(
    r"<img\b[^>]*\bsrc\s*=\s*([\"'])https?://" + re.escape(GX_ASSETS_HOST) + r"/[^>]*>",
    re.IGNORECASE | re.DOTALL,
)
_GX_CSS_URL = re.compile(
    r"""url\(\s*(["']?)https?://""" + re.escape(GX_ASSETS_HOST) + r"""/[^)"']*\1\s*\)""",
    re.IGNORECASE,
)
_CSS_URL = re.compile(r"""url\(\s*(["']?)(.*?)\1\s*\)""", re.IGNORECASE | re.DOTALL)
_CSS_IMPORT = re.compile(r"""@import\s+(["'])(.*?)\1""", re.IGNORECASE)


def _relative(site: Path, page: Path, target: str) -> str:
    """``target`` (a path from the site's root) as a URL relative to ``page``'s folder."""
    return Path(os.path.relpath(site / target, page.parent)).as_posix()


def _localize_tag(tag: str, site: Path, page: Path) -> str:
    match = _URL_ATTR.search(tag)
    if match is None:
        return tag
    url = match.group(3)
    if url in LOCAL_COPIES:
        local = _relative(site, page, f"{VENDOR_DIR}/{LOCAL_COPIES[url]}")
    elif _is_local(url) and "static/" in url and not (page.parent / url).exists():
        # GX's validation pages climb one folder too few to their favicon: re-root the path.
        local = _relative(site, page, url[url.index("static/") :])
    else:
        return tag
    quote = match.group(2)
    tag = tag[: match.start()] + f"{match.group(1)}={quote}{local}{quote}" + tag[match.end() :]
    # Subresource integrity needs a CORS fetch, which a file:// page cannot make.
    return _SRI_ATTR.sub("", tag)


def localize_html(html: str, site: Path, page: Path) -> str:
    """``page``'s HTML with known CDN URLs pointing at the vendored copies and no beacon."""
    logo = _relative(site, page, LOGO)
    html = _TAG.sub(lambda m: _localize_tag(m.group(0), site, page), html)
    html = _BEACON.sub(
        f'<img src="{logo}" alt="Great Expectations" style="width: auto; height: 50px" />', html
    )
    return _GX_CSS_URL.sub(f"url('{logo}')", html)


def localize_css(css: str, site: Path, sheet: Path) -> str:
    """A style sheet of the site with GX's hosted logo replaced by the site's own copy."""
    return _GX_CSS_URL.sub(f"url('{_relative(site, sheet, LOGO)}')", css)


def _is_local(url: str) -> bool:
    """A relative path, a fragment or inline data: what a page may load without a network."""
    url = url.strip()
    parts = urlsplit(url)
    return url.startswith("data:") or (not parts.scheme and not parts.netloc)


class _Resources(HTMLParser):
    """Collects the URLs a page loads by itself (not the links a user may follow)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v for k, v in attrs if v is not None}
        for name in ("src", "poster") + (("data",) if tag == "object" else ()):
            if name in values:
                self.urls.append(values[name])
        if "srcset" in values:  # "a.png 1x, b.png 2x"
            self.urls += [u.split()[0] for u in values["srcset"].split(",") if u.strip()]
        if tag == "link" and "href" in values:  # style sheets, icons, preloads
            self.urls.append(values["href"])
        if "style" in values:
            self.urls += css_urls(values["style"])
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.urls += css_urls(data)


def css_urls(css: str) -> list[str]:
    """The URLs a style sheet (or a ``style`` attribute) loads: ``url(...)`` and ``@import``."""
    return [m.group(2) for m in _CSS_URL.finditer(css)] + [
        m.group(2) for m in _CSS_IMPORT.finditer(css)
    ]


def external_resources(html: str) -> list[str]:
    """The URLs a page would load from another host (scripts, styles, images, fonts, frames)."""
    parser = _Resources()
    parser.feed(html)
    parser.close()
    return [u for u in parser.urls if not _is_local(u)]


def make_offline(site: str | Path) -> None:
    """Make the Data Docs site at ``site`` load nothing from a third-party host (in place).

    Raises:
        RuntimeError: A page or style sheet still loads something from another host: a URL
            GX writes that :data:`LOCAL_COPIES` does not know (see ``datadocs_assets/NOTICE.md``).
    """
    site = Path(site)
    vendor = site / VENDOR_DIR
    shutil.copytree(ASSETS, vendor, dirs_exist_ok=True)
    remaining: dict[str, list[str]] = {}
    for path in sorted(site.rglob("*")):
        if path.suffix not in (".html", ".css"):
            continue
        text = original = path.read_text(encoding="utf-8")
        if path.suffix == ".html":
            text = localize_html(text, site, path)
            external = external_resources(text)
        else:
            if vendor not in path.parents:  # the vendored sheets are checked, never changed
                text = localize_css(text, site, path)
            external = [u for u in css_urls(text) if not _is_local(u)]
        if text != original:
            path.write_text(text, encoding="utf-8")
        if external:
            remaining[path.relative_to(site).as_posix()] = sorted(set(external))
    if remaining:
        listing = "\n".join(f"  {page}: {', '.join(urls)}" for page, urls in remaining.items())
        raise RuntimeError(
            "the Data Docs still load from third-party hosts (add a vendored copy to "
            f"recommender/datadocs_assets and to LOCAL_COPIES):\n{listing}"
        )


__all__ = ["LOCAL_COPIES", "css_urls", "external_resources", "make_offline"]
