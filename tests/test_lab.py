"""The attention explorer live in JupyterLab, driven by Playwright in headless Chromium.

Starts JupyterLab on a free loopback port with a random token, its root a temporary folder holding a copy of
notebooks/06_attention.ipynb (the committed notebooks are never opened, so never saved), runs every cell with
Lab's "Run All Cells" menu command in smoke mode (HAFVT_SMOKE=1, as the nbval tests run the notebooks), and
checks that the explorer widget shows the default test line, then, after another line is chosen in its
dropdown, that line's history, attention table and top-10 lists, each compared with what
``hafvt.widgets.Explorer`` computes for that line in this process. A disconnected callback fails it: the
view never redraws. The screenshot of the redrawn widget goes to build/screenshots/lab-attention-explorer.png
(HAFVT_SCREENSHOTS overrides the folder).

The notebook's inputs are the smoke mode's, made here under the temporary root (the notebook resolves
its paths from there): the tiny demo with its one-epoch demo encoder (``hafvt.book.prepare_demo``, as
``setup_page`` calls it) and a one-epoch HAF-VT run where the attention page looks for it.
"""
from __future__ import annotations

import importlib.util
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import REPO, SCREENSHOTS

NOTEBOOK = "06_attention.ipynb"
SHOT = "lab-attention-explorer.png"
FAILURE_SHOT = "lab-attention-explorer-failure.png"  # the whole Lab page, written only when the test fails
SERVER_START_S = 90
PAGE_LOAD_MS = 90_000
RUN_ALL_MS = 180_000  # every cell of the page, from a cold kernel (imports torch, pandas, matplotlib)
REDRAW_MS = 30_000  # the callback redraws in well under a second on the tiny demo

pytestmark = [pytest.mark.browser, pytest.mark.slow]


# ------------------------------------------------------------------ inputs: the smoke demo and a HAF-VT run


@pytest.fixture(scope="module")
def lab_root(tmp_path_factory) -> Path:
    """A root folder for JupyterLab: the attention notebook and, under build/smoke/, what it reads in smoke mode."""
    from hafvt import book
    from hafvt.config import load_config
    from hafvt.reproduce import run_dir
    from hafvt.train import run

    root = tmp_path_factory.mktemp("lab")
    shutil.copy2(REPO / "notebooks" / NOTEBOOK, root / NOTEBOOK)
    assert book.repo_root(root) == root, "the temporary root must not sit inside a checkout (the notebook resolves paths from it)"
    # the same call as setup_page's in smoke mode, so the kernel finds every step done
    book.prepare_demo(root / "build" / "smoke" / "demo", size="tiny", encoder_epochs=1, embed_dim=32, log=lambda *a: None)
    cfg = load_config(REPO / "configs" / "hafvt.yaml", ["epochs=1", "q=16", "eval_every=1"])
    run(root / "build" / "smoke" / "demo", cfg, run_dir(root / "build" / "smoke" / "runs" / "tables", "hafvt", 0),
        seed=0, progress=False)
    return root


@pytest.fixture(scope="module")
def explorer(lab_root):
    """What the widget must show, computed in this process from the same scenario and run."""
    from hafvt.reproduce import run_dir
    from hafvt.widgets import Explorer

    return Explorer(lab_root / "build" / "smoke" / "demo", run_dir(lab_root / "build" / "smoke" / "runs" / "tables", "hafvt", 0))


# ------------------------------------------------------------------ JupyterLab


class LabServer:
    def __init__(self, root: Path):
        self.root, self.token, self.port = root, secrets.token_hex(24), _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = root.parent / f"{root.name}-jupyterlab.log"
        self.proc: subprocess.Popen | None = None
        self.log = None

    def start(self) -> None:
        state = self.root.parent / f"{self.root.name}-jupyter"  # config, settings, workspaces: none of the user's
        env = dict(os.environ, HAFVT_SMOKE="1", JUPYTER_CONFIG_DIR=str(state / "config"),
                   JUPYTERLAB_SETTINGS_DIR=str(state / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(state / "workspaces"),
                   JUPYTER_RUNTIME_DIR=str(state / "runtime"),
                   # the kernels import this checkout's hafvt, whatever the virtual environment's editable install points at
                   PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
               f"--ServerApp.root_dir={self.root}", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
               "--ServerApp.allow_root=True"]
        # no news toast over the page (Lab would ask whether to fetch news from the internet)
        notification = state / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        notification.parent.mkdir(parents=True, exist_ok=True)
        notification.write_text('{"fetchNews": "false", "checkForUpdates": false}')
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with code {self.proc.returncode} while starting")
            try:
                with urllib.request.urlopen(urllib.request.Request(
                        f"{self.url}/api/status", headers={"Authorization": f"token {self.token}"}), timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"JupyterLab did not answer on {self.url} within {SERVER_START_S} s")

    def stop(self) -> None:
        """Stop the server (its process group) and the kernels it started, which run in sessions of their own."""
        if self.proc is None:
            if self.log is not None:
                self.log.close()
            return
        try:
            import psutil

            children = psutil.Process(self.proc.pid).children(recursive=True)
        except Exception:  # the server already gone: its process group is still ended below
            children = []
        for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                continue
            if sig == signal.SIGTERM:  # anything left in the group
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            break
        for c in children:  # psutil checks that the pid is still the process it listed
            try:
                c.kill()
            except Exception:
                pass
        self.log.close()

    def log_tail(self, n: int = 8000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError as e:
            return f"(no server log: {e})"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(lab_root):
    if importlib.util.find_spec("jupyterlab") is None:
        pytest.fail("the JupyterLab test needs jupyterlab>=4 (the 'book' extra): pip install -e '.[book,test]' or "
                    "`make install`", pytrace=False)
    server = LabServer(lab_root)
    try:
        try:
            server.start()
        except RuntimeError as e:
            pytest.fail(f"{e}\n--- JupyterLab log ---\n{server.log_tail()}", pytrace=False)
        yield server
    finally:
        server.stop()


# ------------------------------------------------------------------ reading the widget

READ_VIEW = r"""el => {
  const item = c => { const m = c.getAttribute('title').match(/\(item (\d+), domain [XY]\)$/); return m ? +m[1] : null; };
  const rows = Array.from(el.querySelectorAll(':scope > .hafvt-row'));
  const cards = rows.length ? Array.from(rows[0].querySelectorAll('.hafvt-card')) : [];
  return {
    label: (el.querySelector('.hafvt-label') || {}).textContent || '',
    history: cards.filter(c => !c.classList.contains('hafvt-target'))
                  .map(c => [item(c), c.querySelector('.hafvt-title').textContent]),
    target: cards.filter(c => c.classList.contains('hafvt-target')).map(item),
    attention: Array.from(el.querySelectorAll('table.hafvt-attn tbody tr')).map(tr =>
      [tr.querySelector('th').textContent, Array.from(tr.querySelectorAll('td')).map(td => td.textContent)]),
    top: Array.from(el.querySelectorAll('.hafvt-reclabel')).map(l =>
      [l.textContent.split(' — ')[0], Array.from(l.nextElementSibling.querySelectorAll('.hafvt-card')).map(item)]),
  };
}"""


# the notebook's kernel (its kernelspec's, python3) connected and idle: Run All before that asks for a kernel
KERNEL_READY = r"""() => {
  const panel = document.querySelector('.jp-NotebookPanel');
  const name = panel && panel.querySelector('[data-jp-item-name="kernelName"]');
  const status = Array.from(document.querySelectorAll('.jp-StatusBar-TextItem')).map(e => e.textContent);
  return !!name && name.textContent.trim() !== '' && !/No Kernel/.test(name.textContent)
         && status.some(t => /\|\s*Idle\s*$/.test(t));
}"""


def expected_view(ex, line: int) -> dict:
    """The rendered view's content for one line, from Explorer in this process (same shape as READ_VIEW)."""
    from hafvt.widgets import MOD_NAMES, VIEW_NAMES

    e = ex.explain([line])[0]
    return {
        "line": line,
        "history": [[i, ex.title(i)] for i in e.history],
        "target": [e.target],
        "attention": [[f"{VIEW_NAMES[v]} / {MOD_NAMES[m]}", ws] for (v, m), ws in e.attention.items()],
        "top": [["fused (eq. 10)" if k == "fused" else f"{MOD_NAMES[k]} only", [i for i, _ in e.top[k]]]
                for k in [*ex.model.modalities, "fused"]],
    }


def compare(shown: dict, want: dict) -> list[str]:
    """Differences between the rendered view and Explorer's (attention cells as printed: two decimals)."""
    problems = []
    if not re.search(rf"\bline {want['line']},", shown["label"]):
        problems.append(f"label names another line: {shown['label']!r}")
    for key in ("history", "target", "top"):
        if shown[key] != want[key]:
            problems.append(f"{key}: shown {shown[key]}, expected {want[key]}")
    if [r[0] for r in shown["attention"]] != [r[0] for r in want["attention"]]:
        problems.append(f"attention rows: shown {[r[0] for r in shown['attention']]}, expected {[r[0] for r in want['attention']]}")
    for (name, cells), (_, ws) in zip(shown["attention"], want["attention"]):
        ok = len(cells) == len(ws) and all(
            (c == "·") if w != w else (c != "·" and abs(float(c) - w) <= 0.0051) for c, w in zip(cells, ws))
        if not ok:
            problems.append(f"attention {name}: shown {cells}, expected {[round(w, 3) for w in ws]}")
    return problems


def another_line(ex, default: int, lines) -> int:
    """A line of the dropdown whose history, attention and top-10 all differ from the default line's."""
    first = expected_view(ex, default)
    for line in lines:
        if line == default:
            continue
        v = expected_view(ex, line)
        if v["history"] != first["history"] and v["top"] != first["top"] and v["attention"] != first["attention"]:
            return line
    raise AssertionError(f"no dropdown line differs from line {default} in history, attention and top-10")


@contextmanager
def failure_report(server: LabServer, page, notes: list[str]):
    """On failure: a screenshot of the whole Lab page, and the server's log and the browser's messages printed."""
    try:
        yield
    except BaseException:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        try:
            page.screenshot(path=str(SCREENSHOTS / FAILURE_SHOT))
        except Exception as e:  # the page itself may be what failed
            notes.append(f"no failure screenshot: {e}")
        print("--- browser ---", *notes[-50:], "--- JupyterLab log (tail) ---", server.log_tail(), sep="\n")
        raise


# ------------------------------------------------------------------ the test


def test_attention_explorer_redraws_for_the_chosen_line(browser, lab, explorer):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    (SCREENSHOTS / FAILURE_SHOT).unlink(missing_ok=True)
    default = explorer.pick_default()
    # tall enough for the whole widget in one screenshot (Lab scrolls the notebook inside the page)
    context = browser.new_context(viewport={"width": 1280, "height": 2400})
    page = context.new_page()
    notes: list[str] = []
    page.on("pageerror", lambda e: notes.append(f"page error: {e}"))
    page.on("console", lambda m: notes.append(f"console {m.type}: {m.text}") if m.type == "error" else None)

    def route(r):  # offline: nothing may leave the loopback server
        if r.request.url.startswith((lab.url, "data:", "blob:")):
            r.continue_()
        else:
            notes.append(f"external request blocked: {r.request.url}")
            r.abort()

    page.route("**/*", route)
    t0 = time.monotonic()
    try:
        with failure_report(lab, page, notes):
            page.goto(f"{lab.url}/lab/tree/{NOTEBOOK}?token={lab.token}", wait_until="domcontentloaded",
                      timeout=PAGE_LOAD_MS)
            panel = page.locator(".jp-NotebookPanel").filter(has=page.locator(".jp-Cell")).first
            panel.wait_for(state="visible", timeout=PAGE_LOAD_MS)
            page.wait_for_function(KERNEL_READY, timeout=PAGE_LOAD_MS, polling=250)
            # Lab's own command: Run > Run All Cells
            page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
            page.locator("#jp-mainmenu-run .lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
            outcome = page.wait_for_function(
                r"""() => document.querySelector('.jp-NotebookPanel .hafvt-explorer') ? 'explorer' :
                      document.querySelector('.jp-Dialog') ? 'a dialog: ' + document.querySelector('.jp-Dialog').innerText :
                      (Array.from(document.querySelectorAll('.jp-NotebookPanel .jp-OutputArea-output'))
                        .map(o => o.textContent).find(t => /Traceback \(most recent call last\)|^\S*Error\b/m.test(t)) || null)""",
                timeout=RUN_ALL_MS, polling=500).json_value()
            assert outcome == "explorer", f"Run All Cells did not draw the explorer; Lab shows {outcome[-3000:]}"
            t_run = time.monotonic() - t0
            output = page.locator(".jp-NotebookPanel .jp-OutputArea-output").filter(has=page.locator(".hafvt-explorer")).first
            view = output.locator(".hafvt-explorer")
            select = output.locator(".widget-dropdown select")
            assert select.count() == 1, "the explorer's output has no dropdown of test lines"
            options = select.locator("option").all_text_contents()  # ipywidgets writes spaces as no-break spaces
            lines = [int(re.match(r"line (\d+):", o.replace("\xa0", " ")).group(1)) for o in options]
            selected = select.evaluate("s => s.options[s.selectedIndex].textContent").replace("\xa0", " ")
            assert selected.startswith(f"line {default}:"), f"dropdown shows {selected!r}, the default line is {default}"

            before = view.evaluate(READ_VIEW)
            problems = compare(before, expected_view(explorer, default))
            assert not problems, f"the default view (line {default}) differs from Explorer's:\n" + "\n".join(problems)

            line = another_line(explorer, default, lines)
            select.select_option(label=options[lines.index(line)])
            try:
                view.locator(".hafvt-label").filter(has_text=f" line {line},").wait_for(timeout=REDRAW_MS)
            except PlaywrightTimeout:
                pytest.fail(f"chose line {line} in the dropdown; the explorer still shows "
                            f"{view.locator('.hafvt-label').text_content()!r} after {REDRAW_MS / 1000:.0f} s: "
                            f"the dropdown's callback (Dropdown.observe in hafvt/widgets.py) did not redraw the view",
                            pytrace=False)
            after = view.evaluate(READ_VIEW)
            problems = compare(after, expected_view(explorer, line))
            assert not problems, f"after choosing line {line} the view differs from Explorer's:\n" + "\n".join(problems)
            for key in ("history", "attention", "top"):
                assert after[key] != before[key], f"{key} did not change from line {default} to line {line}"

            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            output.scroll_into_view_if_needed()
            output.screenshot(path=str(SCREENSHOTS / SHOT))
            print(f"run all + explorer drawn: {t_run:.0f} s; whole browser part: {time.monotonic() - t0:.0f} s; "
                  f"line {default} -> {line}; screenshot {SCREENSHOTS / SHOT}")
    finally:
        context.close()
