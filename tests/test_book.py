"""The rendered book in a real browser: headless Chromium, driven by Playwright for Python.

Serves the built HTML (``make html`` / ``make book``: build/book/_build/html, or HAFVT_BOOK_HTML) on a
loopback HTTP server, visits every page of book/_toc.yml, and checks that pages render: a title,
the tables and figures each page should have, the saved widget view on the attention page, no
console errors, no failed or external requests, and working local links. Screenshots go to
build/screenshots/ (HAFVT_SCREENSHOTS overrides).

Chromium: $CHROMIUM, else chromium / chromium-browser / google-chrome on PATH. `make test` installs
Debian's package when it runs as root; otherwise this test fails and says how to install it.
"""
from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest
import yaml
from helpers import SCREENSHOTS

REPO = Path(__file__).resolve().parents[1]
BOOK_SRC = REPO / "book"
DEFAULT_HTML = REPO / "build" / "book" / "_build" / "html"

# what each page must show: (css selector, minimum count, what it is)
EXPECT = {
    "intro": [("table", 1, "table of steps")],
    "notebooks/01_dataset_statistics": [("div.cell_output table", 2, "Table 1 and buckets"), ("div.cell_output img", 2, "figures")],
    "notebooks/02_clip_embedding": [("div.cell_output table", 2, "manifest and checks"), ("div.cell_output img", 2, "figures")],
    "notebooks/03_training": [("div.cell_output table", 3, "settings, metrics, provenance"), ("div.cell_output img", 1, "training curves")],
    "notebooks/04_main_results": [("div.cell_output table", 4, "results tables"), ("div.cell_output img", 1, "ours vs quoted")],
    "notebooks/05_ablation": [("div.cell_output table", 2, "Table 4 and paired test"), ("div.cell_output img", 1, "figures")],
    "notebooks/06_attention": [("div.cell_output img", 2, "attention figures"),
                               (".hafvt-widget-static .hafvt-explorer", 1, "the saved widget view"),
                               (".hafvt-widget-static select option", 2, "the user chooser"),
                               (".hafvt-widget-static .hafvt-target", 1, "the true next item, marked"),
                               (".hafvt-widget-static table.hafvt-attn td", 3, "attention weights"),
                               ("div.cell_output img", 3, "attention figures and the fusion-weight heat maps"),
                               (".hafvt-widget-static input[type=range]", 4, "the fusion-weight sliders")],
    "notebooks/07_real_data": [("div.cell_output table", 2, "rows with intervals, paired tests"),
                               ("div.cell_output img", 2, "seeds, sampled and full ranking")],
    "notebooks/08_verdict": [("div.cell_output table", 1, "the claims' evidence"), ("div.cell_output img", 1, "gains over seeds"),
                             ("div.cell_output pre", 8, "each claim's commands")],
    "decisions": [("table", 1, "decisions table")],
}


def toc_pages(toc_file: Path = BOOK_SRC / "_toc.yml") -> list[str]:
    toc = yaml.safe_load(toc_file.read_text())
    pages = [toc["root"]]

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                pages.append(e["file"])
            walk(e.get("sections"))
            walk(e.get("chapters"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return [p.removesuffix(".md").removesuffix(".ipynb") for p in pages]


@pytest.fixture(scope="module")
def book_html() -> Path:
    html = Path(os.environ.get("HAFVT_BOOK_HTML", DEFAULT_HTML))
    if not html.is_absolute():
        html = REPO / html
    if not (html / "index.html").is_file():
        executed = sorted((BOOK_SRC / "notebooks").glob("*.ipynb"))
        jb = Path(sys.executable).parent / "jupyter-book"
        if not executed or not jb.is_file():
            pytest.skip(f"no built book at {html} and no executed notebooks in book/notebooks/ to build it from: run `make book`")
        # a cheap build: the executed notebooks are rendered, not executed
        out = html.parents[1] if html.name == "html" and html.parent.name == "_build" else REPO / "build" / "book"
        proc = subprocess.run([str(jb), "build", str(BOOK_SRC), "--config", str(REPO / "_config.yml"), "-W", "-n",
                               "--keep-going", "--path-output", str(out)], cwd=REPO, capture_output=True, text=True)
        assert proc.returncode == 0, f"jupyter-book build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        html = out / "_build" / "html"
    return html


@pytest.fixture(scope="module")
def server(book_html):
    handler = functools.partial(_QuietHandler, directory=str(book_html))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_toc_opens_on_the_verdict_then_lists_the_notebooks():
    pages = toc_pages()
    assert [p for p in pages if p.startswith("notebooks/")] == [
        "notebooks/08_verdict", "notebooks/01_dataset_statistics", "notebooks/02_clip_embedding", "notebooks/03_training",
        "notebooks/04_main_results", "notebooks/05_ablation", "notebooks/06_attention", "notebooks/07_real_data"]


@pytest.mark.browser
def test_the_verdict_page_shows_each_claims_commands_in_full(server, browser):
    from hafvt.verdict import CLAIMS

    page = browser.new_page()
    page.goto(urljoin(server, "notebooks/08_verdict.html"), wait_until="load")
    shown = " ".join(" ".join(page.locator("main div.cell_output pre").all_inner_texts()).split())
    page.close()
    missing = [c.claim for c in CLAIMS if " ".join(c.settle.split()) not in shown]
    assert not missing, f"commands not shown in full for: {missing}"


@pytest.mark.browser
def test_every_page_renders(server, browser):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    host = urlparse(server).netloc
    problems, visited, local_links = [], [], set()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    log: list[str] = []
    page.on("console", lambda m: log.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: log.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: log.append(f"request failed: {r.url} ({r.failure})"))
    page.on("response", lambda r: log.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)

    def route(r):  # the book must be readable offline: nothing may leave the loopback server
        if urlparse(r.request.url).netloc == host or r.request.url.startswith("data:"):
            r.continue_()
        else:
            log.append(f"external request: {r.request.url}")
            r.abort()

    page.route("**/*", route)
    for name in toc_pages():
        log.clear()
        url = urljoin(server, f"{name}.html")
        resp = page.goto(url, wait_until="load")
        page.wait_for_timeout(300)  # let the widget script run
        if resp is None or resp.status != 200:
            problems.append(f"{name}: HTTP {resp and resp.status}")
            continue
        title = page.locator("main h1").first
        if not title.count() or not title.inner_text().strip():
            problems.append(f"{name}: no title (h1)")
        for selector, minimum, what in EXPECT.get(name, []):
            n = page.locator(selector).count()
            if n < minimum:
                problems.append(f"{name}: {what}: {n} x '{selector}', expected >= {minimum}")
        broken = page.evaluate("""() => Array.from(document.querySelectorAll('main img'))
            .filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src.slice(0, 80))""")
        if broken:
            problems.append(f"{name}: images that did not load: {broken[:5]}")
        if page.locator("main .output.traceback, main .output.error, main div.cell_output .ansi-red-fg").count():
            problems.append(f"{name}: a cell output shows an error")
        if page.locator("text=shown with a live kernel only").count():
            problems.append(f"{name}: a widget model the static renderer does not draw")
        for href in page.evaluate("() => Array.from(document.querySelectorAll('main a[href]')).map(a => a.href)"):
            if urlparse(href).netloc == host:
                local_links.add(href.split("#")[0])
        problems += [f"{name}: {m}" for m in log]
        shot = SCREENSHOTS / f"{name.replace('/', '_')}.png"
        page.screenshot(path=str(shot), full_page=name != "notebooks/06_attention")
        visited.append(name)
    # the attention page, scrolled to the saved widget view: the screenshot named in the README
    page.goto(urljoin(server, "notebooks/06_attention.html"), wait_until="load")
    page.add_style_tag(content="header, .bd-header, .bd-header-article, .skip-link, .header-article, .bd-sidebar-primary, .bd-sidebar-secondary { display: none !important; }")
    widget = page.locator(".hafvt-widget-static").first
    if widget.count():
        widget.scroll_into_view_if_needed()
        widget.screenshot(path=str(SCREENSHOTS / "widget.png"))
    context.close()
    for link in sorted(local_links):
        try:
            with urllib.request.urlopen(link, timeout=10) as r:
                if r.status != 200:
                    problems.append(f"link {link}: HTTP {r.status}")
        except urllib.error.URLError as e:
            problems.append(f"link {link}: {e}")
    assert visited == toc_pages()
    assert not problems, "\n".join(problems)
