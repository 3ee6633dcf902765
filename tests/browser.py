"""Drive a real JupyterLab in headless Chromium (Debian's `chromium`, no browser download).

`jupyter_lab(root)` starts a fresh JupyterLab server on localhost with a token and its own
config/data/runtime folders; `run_notebook_in_browser(lab, relpath, shot)` opens a notebook, runs
all cells through JupyterLab's own command, waits for the kernel to finish and reports what the
page shows (widgets, plotly plots, error outputs), saving a screenshot.
"""
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]


def browser_unavailable_reason():
    "None when Chromium and Playwright are usable, else the reason (printed by skipping tests)."
    if not Path(CHROMIUM).exists():
        return f"Chromium not found at {CHROMIUM} (install Debian's chromium package; CI does)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as e:
        return f"playwright (Python) not importable: {e}"
    return None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Lab:
    url: str
    token: str
    proc: subprocess.Popen
    log: Path


@contextlib.contextmanager
def jupyter_lab(root, workdir, timeout=120):
    "Start a fresh JupyterLab server serving `root`; state lives in `workdir`."
    workdir = Path(workdir)
    env = dict(os.environ)
    for var, sub in [("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                     ("IPYTHONDIR", "ipython")]:
        (workdir / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(workdir / sub)
    # user settings of this server only: no "get notified about Jupyter news?" toast over the screenshots
    settings = workdir / "settings"
    news = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True, exist_ok=True)
    news.write_text('{"fetchNews": "false", "checkForUpdates": false}')
    env["JUPYTERLAB_SETTINGS_DIR"] = str(settings)
    env["JUPYTERLAB_WORKSPACES_DIR"] = str(workdir / "workspaces")
    token, port = secrets.token_hex(16), _free_port()
    log = workdir / "jupyterlab.log"
    exe = Path(sys.executable).parent / "jupyter"
    cmd = [str(exe), "lab", "--no-browser", "--allow-root", f"--port={port}", "--ip=127.0.0.1",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--LabApp.expose_app_in_browser=True", "--ServerApp.disable_check_xsrf=False",
           "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    with open(log, "wb") as lf:
        proc = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, env=env, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.time()
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited early:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200: break
            except OSError:
                pass
            if time.time() - t0 > timeout:
                raise RuntimeError(f"JupyterLab did not start in {timeout}s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield Lab(url, token, proc, log)
    finally:
        proc.terminate()
        try: proc.wait(20)
        except subprocess.TimeoutExpired: proc.kill()


@dataclass
class PageReport:
    cells: int = 0
    executed: int = 0
    errors: list = field(default_factory=list)
    widgets: int = 0
    plotly: int = 0
    plotly_3d: int = 0
    screenshot: Path = None
    counts: dict = field(default_factory=dict)       # name -> elements matching the caller's `selectors`
    output_shots: list = field(default_factory=list)  # screenshots of the outputs that hold widgets
    console: list = field(default_factory=list)       # the page's console errors and page errors
    actions: dict = field(default_factory=dict)       # what the caller's `actions(page)` returned


_JS_ROOT = "((window.jupyterapp && window.jupyterapp.shell.currentWidget && window.jupyterapp.shell.currentWidget.node) || document)"

_JS_STATE = """() => {
  const root = _JS_ROOT_;
  const cells = [...root.querySelectorAll('.jp-Notebook .jp-CodeCell')];
  const prompts = cells.map(c => (c.querySelector('.jp-InputPrompt')||{}).textContent || '');
  return {
    cells: cells.length,
    executed: prompts.filter(p => /\\[\\d+\\]/.test(p)).length,
    busy: prompts.filter(p => p.includes('*')).length,
    errors: [...root.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"], .jp-RenderedText[data-mime-type="application/vnd.jupyter.error"]')]
              .map(e => e.textContent.slice(0, 400)).filter(t => /Error|Traceback/.test(t)),
    widgets: root.querySelectorAll('.jp-OutputArea-output .jupyter-widgets').length,
    plotly: root.querySelectorAll('.js-plotly-plot').length,
    plotly3d: root.querySelectorAll('.js-plotly-plot .gl-container, .js-plotly-plot canvas').length,
  };
}""".replace("_JS_ROOT_", _JS_ROOT)


_JS_COUNT = ("(sels) => { const root = " + _JS_ROOT + "; "
             "return Object.fromEntries(Object.entries(sels).map(([k, s]) => [k, root.querySelectorAll(s).length])); }")


def run_notebook_in_browser(lab, relpath, screenshot, timeout=300, selectors=None, min_counts=None, settle=30,
                            output_screenshots=False, shutdown_kernel=True, actions=None):
    """Open `relpath` (relative to the lab root) in Chromium, run all cells, report what rendered.
    `selectors` {name: CSS selector} are counted into `report.counts`; with `min_counts` {name: n} the page is
    given up to `settle` seconds after the run for those counts to be reached (widgets and WebGL draw late).
    `output_screenshots`: also save one screenshot per output area holding widgets (`<stem>_out<k>.png`).
    `shutdown_kernel`: shut the notebook's kernel down afterwards (several notebooks on one server).
    `actions(page) -> dict`: user interactions after the run (clicks), their findings in `report.actions`."""
    from playwright.sync_api import sync_playwright
    rep = PageReport()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            console = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"[:500]) if m.type == "error" else None)
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"[:500]))
            # a fresh workspace per notebook: JupyterLab would otherwise restore the tabs of earlier runs
            page.goto(f"{lab.url}/lab/workspaces/run-{secrets.token_hex(4)}/tree/{relpath}?reset&token={lab.token}",
                      timeout=120_000)
            page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=120_000)
            page.wait_for_function("() => window.jupyterapp && document.querySelector('.jp-Notebook')", timeout=60_000)
            # wait until the notebook's kernel session is ready and idle, then run everything
            # through JupyterLab's own command
            page.wait_for_function("""async () => { const w = window.jupyterapp.shell.currentWidget;
                if (!w || !w.sessionContext) return false;
                await w.context.ready; await w.sessionContext.ready;
                const k = w.sessionContext.session && w.sessionContext.session.kernel;
                return !!k && k.status === 'idle'; }""", timeout=120_000, polling=500)
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            t0 = time.time()
            while True:
                st = page.evaluate(_JS_STATE)
                if st["executed"] == st["cells"] and st["busy"] == 0: break
                if st["errors"]: break
                if time.time() - t0 > timeout:
                    raise TimeoutError(f"{relpath}: cells still running after {timeout}s ({st})")
                time.sleep(1)
            page.wait_for_timeout(3000)          # let widget views and plotly finish drawing
            sels = dict(selectors or {})
            counts = page.evaluate(_JS_COUNT, sels)
            t1 = time.time()
            while min_counts and any(counts.get(k, 0) < n for k, n in min_counts.items()) and time.time() - t1 < settle:
                page.wait_for_timeout(1000)
                counts = page.evaluate(_JS_COUNT, sels)
            done = actions(page) if actions else {}
            st = page.evaluate(_JS_STATE)
            screenshot = Path(screenshot)
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
            shots = []
            if output_screenshots:
                outs = page.locator(".jp-OutputArea-output:has(.jupyter-widgets), .jp-OutputArea-output:has(.js-plotly-plot)")
                for k in range(outs.count()):
                    el = outs.nth(k)
                    el.scroll_into_view_if_needed()
                    page.wait_for_timeout(1500)
                    p_k = screenshot.with_name(f"{screenshot.stem}_out{k}.png")
                    el.screenshot(path=str(p_k))
                    shots.append(p_k)
            rep = PageReport(st["cells"], st["executed"], st["errors"], st["widgets"], st["plotly"], st["plotly3d"], screenshot,
                             counts, shots, console, done)
            if shutdown_kernel:                  # free the CPU for the next notebook
                page.evaluate("""async () => { const w = window.jupyterapp.shell.currentWidget;
                    if (w && w.sessionContext) await w.sessionContext.shutdown(); }""")
        finally:
            browser.close()
    return rep
