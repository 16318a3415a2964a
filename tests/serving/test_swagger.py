"""Swagger UI at ``/``: pinned local assets, served by the service, nothing from another host.

Checked twice: statically (the page's and its style sheet's URLs, with the Data Docs' check and
test_hardening's, all local and served; the schema it reads is served), and in headless Chromium
(Debian's, installed by ``scripts/ensure_debian_package.sh``), offline (every host but 127.0.0.1
resolves to nothing): the page renders the service's operations, and Chromium's network log lists
no URL on another host.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import requests
from support import Server
from test_hardening import CSS_URL, _Loads, _third_party

from recommender.datadocs import css_urls, external_resources
from recommender.serving import swagger

pytestmark = pytest.mark.slow

OPERATIONS = ("/predict", "/recommend", "/similar_items", "/feedback", "/model_info")
#: Hosts headless Chromium itself calls at start whatever the page (sign-in, update, connectivity
#: checks), none of them a page's load: the resolver rule refuses them offline.
BROWSER_HOSTS = {"www.google.com", "accounts.google.com", "clients2.google.com"}


def test_the_page_and_its_assets_are_local_and_served(server: Server) -> None:
    page = requests.get(server.url + "/", timeout=30)
    assert page.status_code == 200
    assert external_resources(page.text) == []  # the Data Docs' check
    parser = _Loads()
    parser.feed(page.text)
    assert _third_party(page.url, parser.loads) == []  # test_hardening's
    scripts = [u for u in parser.loads if u.endswith(".js")]
    assert scripts == ["swagger-ui/swagger-ui-bundle.js", "swagger-ui/init.js"]
    for url in parser.loads:
        asset = requests.get(urljoin(page.url, url), timeout=30)
        assert asset.status_code == 200, url
        assert urlsplit(asset.url).hostname == "127.0.0.1"
        if url.endswith(".css"):
            assert [u for u in css_urls(asset.text) if not u.startswith("data:")] == []
            assert _third_party(asset.url, [a or b for a, b in CSS_URL.findall(asset.text)]) == []
        if url.endswith("swagger-ui-bundle.js"):
            assert asset.content == (swagger.ASSETS / "swagger-ui-bundle.js").read_bytes()
    init = requests.get(server.url + "/swagger-ui/init.js", timeout=30).text
    assert 'url: "docs.json"' in init and "validatorUrl: null" in init
    spec = requests.get(urljoin(page.url, "docs.json"), timeout=30).json()
    assert set(OPERATIONS) <= set(spec["paths"]) and spec["servers"] == [{"url": "."}]
    assert requests.get(server.url + "/swagger-ui/../service.py", timeout=30).status_code == 404


def test_the_example_names_the_port_served(server: Server) -> None:
    port = urlsplit(server.url).port
    page = requests.get(server.url + "/", timeout=30).text
    assert f"http://127.0.0.1:{port}/recommend" in page
    if port != 3000:
        assert ":3000" not in page
    # A Host header that is not a plain host:port is not echoed; the listening port is used.
    odd = requests.get(server.url + "/", headers={"Host": "<x>"}, timeout=30).text
    assert "<x>" not in odd and f"127.0.0.1:{port}/recommend" in odd


def _chromium(url: str, tmp_path: Path) -> tuple[str, str]:
    """Render ``url`` offline in headless Chromium: the DOM after its scripts ran, and the network
    log (every URL Chromium asked for)."""
    binary = shutil.which("chromium")
    assert binary, (
        "Chromium is missing: run scripts/ensure_debian_package.sh chromium /usr/bin/chromium "
        "(make test does)"
    )
    netlog = tmp_path / "netlog.json"
    args = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-default-apps", "--disable-extensions", "--metrics-recording-only",
        f"--user-data-dir={tmp_path / 'profile'}", f"--log-net-log={netlog}",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--virtual-time-budget=15000", "--dump-dom", url,
    ]  # fmt: skip
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, netlog.read_text()


def test_swagger_ui_renders_offline_in_headless_chromium(server: Server, tmp_path: Path) -> None:
    dom, netlog = _chromium(server.url + "/", tmp_path)
    assert 'class="swagger-ui' in dom  # Swagger UI mounted
    for operation in OPERATIONS:  # and rendered each operation of docs.json
        assert re.search(rf'data-path="{re.escape(operation)}"', dom), operation
    urls = set(re.findall(r'"url":"([^"]+)"', netlog))
    assert any(u.endswith("/swagger-ui/swagger-ui-bundle.js") for u in urls), sorted(urls)
    assert any(u.endswith("/docs.json") for u in urls), sorted(urls)
    # What the page made Chromium load (requests whose initiator is the page's origin); the
    # browser's own background calls (account and update services, initiated by no page) are
    # Chromium's, refused offline by the resolver rule, and not the page's.
    origin = server.url.rstrip("/")
    events = json.loads(netlog)["events"]
    params = [e.get("params") or {} for e in events]
    by_page = {p["url"] for p in params if "url" in p and p.get("initiator") == origin}
    by_page |= {origin + "/"}  # the navigation itself
    assert any(u.endswith("/swagger-ui/swagger-ui.css") for u in by_page), sorted(by_page)
    assert {urlsplit(u).hostname for u in by_page} == {"127.0.0.1"}, sorted(by_page)
    other = {u for u in urls if u.startswith(("http:", "https:", "ws:", "wss:"))} - by_page
    assert {urlsplit(u).hostname for u in other} <= {"127.0.0.1"} | BROWSER_HOSTS, sorted(other)
