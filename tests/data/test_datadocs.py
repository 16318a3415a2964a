"""The Data Docs load nothing from a third-party host: every asset is a local file of the site.

Great Expectations writes pages that load Bootstrap, jQuery, Vega, ... from CDNs and a logo beacon
from a GX host; ``recommender.datadocs`` points them at vendored copies. The slow tests run the
real validation with Data Docs and read every file it writes with the standard library's HTML
parser, independently of the code under test.
"""

from __future__ import annotations

import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from test_validation import CFG, NOW, make_dataset

from recommender.core.errors import ValidationFailed
from recommender.core.schema import write_dataset
from recommender.datadocs import ASSETS, LOCAL_COPIES, make_offline
from recommender.validation import run_validate, validate_dataset

BEACON_HOST = "great-expectations-web-assets"
#: Elements whose ``src`` the browser fetches when it renders the page.
SRC_TAGS = {
    "script",
    "img",
    "iframe",
    "frame",
    "source",
    "embed",
    "audio",
    "video",
    "track",
    "input",
}
CSS_URL = re.compile(r"""url\(\s*(["']?)(.*?)\1\s*\)|@import\s+(["'])(.*?)\3""", re.I | re.S)


def css_refs(css: str) -> list[str]:
    return [m.group(2) if m.group(2) is not None else m.group(4) for m in CSS_URL.finditer(css)]


class Loads(HTMLParser):
    """Every URL a page fetches by itself, as ``(what, url)``; ``<a href>`` links are not."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str]] = []
        self.in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v for k, v in attrs if v is not None}
        if tag == "link" and "href" in a:
            self.refs.append((f"<link rel={a.get('rel')}>", a["href"]))
        if tag in SRC_TAGS and "src" in a:
            self.refs.append((f"<{tag} src>", a["src"]))
        if "srcset" in a:
            self.refs += [(f"<{tag} srcset>", u.split()[0]) for u in a["srcset"].split(",") if u]
        if "poster" in a:
            self.refs.append((f"<{tag} poster>", a["poster"]))
        if tag == "object" and "data" in a:
            self.refs.append(("<object data>", a["data"]))
        if "style" in a:
            self.refs += [(f"<{tag} style> url()", u) for u in css_refs(a["style"])]
        self.in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self.in_style = False

    def handle_data(self, data: str) -> None:
        if self.in_style:
            self.refs += [("<style> url()", u) for u in css_refs(data)]


def problems(site: Path) -> list[str]:
    """What in ``site`` loads from another host, points at a missing file, or is the beacon."""
    found = []
    files = sorted(p for p in site.rglob("*") if p.suffix in (".html", ".css"))
    for path in files:
        text = path.read_text(encoding="utf-8")
        where = path.relative_to(site)
        if path.suffix == ".html":
            parser = Loads()
            parser.feed(text)
            parser.close()
            refs = parser.refs
        else:
            refs = [("CSS url()", u) for u in css_refs(text)]
        for what, url in refs:
            url = url.strip()
            parts = urlsplit(url)
            if url.startswith("data:"):
                continue
            if parts.scheme or parts.netloc:
                found.append(f"{where}: {what} loads {url}")
                continue
            if parts.path.startswith("/"):
                found.append(f"{where}: {what} {url} is absolute, not within the site")
                continue
            target = (path.parent / unquote(parts.path)).resolve()
            if site.resolve() not in target.parents:
                found.append(f"{where}: {what} {url} points outside the site")
            elif not target.is_file():
                found.append(f"{where}: {what} {url} is missing")
        if BEACON_HOST in text or "dataContextId" in text:
            found.append(f"{where}: still names the GX beacon ({BEACON_HOST} / dataContextId)")
    return found


def pages(site: Path) -> list[Path]:
    return sorted(site.rglob("*.html"))


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Data Docs of a passing run (``validate_dataset``) and of a failing stage run."""
    root = tmp_path_factory.mktemp("datadocs")
    good = root / "docs"
    assert validate_dataset(make_dataset(), CFG, docs_dir=good, now=NOW).success

    bad = make_dataset()
    bad.ratings.loc[5, "rating"] = 7.0
    write_dataset(bad, root / "interim")
    with pytest.raises(ValidationFailed):
        run_validate(root / "interim", root / "reports/validation", root / "s.json", CFG)
    return {"validation": good, "validation_failed": root / "reports/validation_failed"}


@pytest.mark.slow  # writes Data Docs twice (file-mode GX projects)
@pytest.mark.parametrize("which", ["validation", "validation_failed"])
def test_data_docs_load_nothing_from_other_hosts(sites: dict[str, Path], which: str) -> None:
    site = sites[which]
    html = pages(site)
    # The index, one validation page and one suite page per table.
    assert len(html) == 5, html
    assert len(list((site / "validations").rglob("*.html"))) == 2

    assert problems(site) == []

    index = (site / "index.html").read_text()
    for local in (
        'src="static/vendor/jquery-3.7.1/jquery.min.js"',
        'href="static/vendor/bootstrap-4.3.1/bootstrap.min.css"',
        'src="static/vendor/vega-5.33.1/vega.min.js"',
        'src="static/images/logo-long.png"',
    ):
        assert local in index
    # A page three folders down reaches the same copies.
    (page,) = (site / "validations" / "recommender_ratings").rglob("*.html")
    assert 'src="../../../../static/vendor/jquery-3.7.1/jquery.min.js"' in page.read_text()
    # Subresource integrity cannot be checked for file:// pages; the copies are pinned instead.
    assert all("integrity=" not in p.read_text() for p in html)
    # The user's links to GX's website stay links.
    assert '<a href="https://greatexpectations.io">' in index


@pytest.mark.slow  # writes Data Docs (a file-mode GX project)
def test_the_check_fails_on_what_gx_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("recommender.validation.run.make_offline", lambda site: None)

    validate_dataset(make_dataset(), CFG, docs_dir=tmp_path, now=NOW)

    found = "\n".join(problems(tmp_path))
    for host in (
        "unpkg.com",
        "cdn.jsdelivr.net",
        "cdnjs.cloudflare.com",
        "code.jquery.com",
        "maxcdn.bootstrapcdn.com",
        "stackpath.bootstrapcdn.com",
        "great-expectations-web-assets.s3.us-east-2.amazonaws.com",
    ):
        assert f"loads https://{host}/" in found
    assert "still names the GX beacon" in found


PAGE = """<html><head>
<link rel="stylesheet" href="https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css"/>
<script src="https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js"
  integrity="sha384-JjSmVgyd0p3pXB1rRibZUAYoIIy6OrQ6VrjIEaFf/nJGzIxFDsf4x0xIM+B07jRM"
  crossorigin="anonymous"></script>
<style>.navbar-brand a {
  background: url('https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/full_logo_dark.png')
}</style>
<link rel="shortcut icon" href="../static/images/favicon.ico" type="image/x-icon"/>
</head><body>
<a href="../../index.html"><img class="NO-CACHE"
  src="https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/logo-long.png?d=1&dataContextId=abc"
  alt="Great Expectations" /></a>
<a href="https://greatexpectations.io">GX</a>
</body></html>
"""  # fmt: skip


def fake_site(root: Path, page: str = PAGE) -> Path:
    (root / "static/images").mkdir(parents=True)
    (root / "static/images/logo-long.png").write_bytes(b"png")
    (root / "static/images/favicon.ico").write_bytes(b"ico")
    (root / "a/b").mkdir(parents=True)
    (root / "a/b/page.html").write_text(page)
    return root / "a/b/page.html"


def test_make_offline_rewrites_to_relative_copies(tmp_path: Path) -> None:
    page = fake_site(tmp_path)

    make_offline(tmp_path)

    text = page.read_text()
    assert 'href="../../static/vendor/bootstrap-4.3.1/bootstrap.min.css"' in text
    assert 'src="../../static/vendor/bootstrap-4.3.1/bootstrap.min.js"></script>' in text
    assert "integrity" not in text and "crossorigin" not in text
    assert '<img src="../../static/images/logo-long.png"' in text
    assert "url('../../static/images/logo-long.png')" in text
    assert '<a href="https://greatexpectations.io">GX</a>' in text
    # GX's validation pages climb one folder too few to the favicon.
    assert 'href="../../static/images/favicon.ico"' in text
    assert problems(tmp_path) == []
    assert (tmp_path / "static/vendor/NOTICE.md").is_file()


def test_make_offline_refuses_an_unknown_third_party_asset(tmp_path: Path) -> None:
    fake_site(tmp_path, PAGE.replace("</head>", '<script src="https://cdn.example.com/x.js">'))

    with pytest.raises(RuntimeError, match=r"a/b/page\.html: https://cdn\.example\.com/x\.js"):
        make_offline(tmp_path)


def test_vendored_files_are_the_pinned_ones_with_their_licenses() -> None:
    notice = (ASSETS / "NOTICE.md").read_text()
    listed = re.finditer(r"^([0-9a-f]{64})  (\S+)", notice, re.M)
    pinned = {m.group(2): m.group(1) for m in listed}
    files = {
        p.relative_to(ASSETS).as_posix()
        for p in ASSETS.rglob("*")
        if p.is_file() and p.name not in ("LICENSE", "NOTICE.md")
    }

    assert files == set(pinned)
    for name, digest in pinned.items():
        assert hashlib.sha256((ASSETS / name).read_bytes()).hexdigest() == digest, name
    assert set(LOCAL_COPIES.values()) <= files
    assert all((ASSETS / name.split("/")[0] / "LICENSE").is_file() for name in files)
