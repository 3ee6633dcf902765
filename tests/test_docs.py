"""`tools/docs.py` (`make docs`): the chapters executed and rendered to a static site.

Without a browser: the link rewriting and the index's titles and sentences, and a build of made-up notebooks
(cells nbdev_test skips are not run, a failing cell fails the build naming the notebook and the cell, nothing
half-written, an up-to-date page is not rebuilt). In headless Chromium: two real chapters that draw pictures
and two small linked pages built into a tmp site, served over HTTP, opened from the index. Skipped, with the
reason printed, only when Chromium or Playwright is not available.
"""
import functools
import http.server
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest
from PIL import Image
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser import CHROMIUM, CHROMIUM_ARGS, browser_unavailable_reason  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "docs.py"
CHAPTERS = ["13_metrics", "17a_pictures"]          # fast (about 10 s each under nbdev_test), both draw pictures


def load_tool():
    "tools/docs.py as a module (it is a script, not part of the package)."
    spec = importlib.util.spec_from_file_location("docs_tool", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_docs(*args, timeout=300):
    "Run the tool as `make docs` does; returns the finished process (stdout, stderr, returncode)."
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def write_notebook(path, cells):
    "A notebook of (kind, source) cells with the repo's python3 kernel."
    nb = new_notebook(cells=[new_code_cell(s) if k == "code" else new_markdown_cell(s) for k, s in cells],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, path)


def first_heading(path):
    "The chapter title as the notebook's first markdown `# ` heading (read independently of the tool)."
    for cell in json.loads(Path(path).read_text())["cells"]:
        m = re.search(r"^# +(.+)$", "".join(cell["source"]), re.M) if cell["cell_type"] == "markdown" else None
        if m: return m.group(1).strip()


def test_links_titles_and_sentences():
    docs = load_tool()
    assert docs.rewrite_links("see [the quirk](00a_original.ipynb#quirk-left-first) and [io](01_io.ipynb).") == \
        "see [the quirk](00a_original.html#quirk-left-first) and [io](01_io.html)."
    assert docs.rewrite_links('<a href="./05_render.ipynb#cameras">x</a>') == '<a href="./05_render.html#cameras">x</a>'
    assert docs.rewrite_links("[ref]: 02_mano.ipynb#layer") == "[ref]: 02_mano.html#layer"
    assert docs.inline_markdown("it *builds* a `x<y` map, **twice**; 2*3*4 <b>") == \
        "it <em>builds</em> a <code>x&lt;y</code> map, <strong>twice</strong>; 2*3*4 &lt;b&gt;"
    for kept in ["[web](https://example.invalid/x.ipynb)", "[explorer](explore/model_explorer.ipynb)",
                 "a file `X.ipynb` in code", "[py](01_io.py)"]:
        assert docs.rewrite_links(kept) == kept
    nb = nbformat.v4.new_notebook(cells=[new_code_cell("x = 1"), new_markdown_cell(
        "# Safe file I/O\n\n> Atomic writes. A restricted unpickler, e.g. for MANO.\n\nMore text.")])
    assert docs.title_and_sentence(nb, "01_io") == ("Safe file I/O", "Atomic writes.")
    nb.cells[1].source = "# Pictures\n\nnumpy pictures, e.g. heat maps\nand masks; no widgets"
    assert docs.title_and_sentence(nb, "x") == ("Pictures", "numpy pictures, e.g. heat maps and masks; no widgets")
    assert docs.title_and_sentence(new_notebook(cells=[new_markdown_cell("no heading")]), "x") == ("x", "")
    assert [p.name for p in docs.select(docs.chapters(ROOT / "nbs"), "17a_pictures.ipynb,01_io")] == \
        ["01_io.ipynb", "17a_pictures.ipynb"]
    with pytest.raises(SystemExit, match="no chapter named 99_nothing"):
        docs.select(docs.chapters(ROOT / "nbs"), "99_nothing")


@pytest.mark.timeout(240)
def test_failing_cell_fails_the_build(tmp_path):
    nbs, out = tmp_path / "nbs", tmp_path / "site"
    nbs.mkdir()
    write_notebook(nbs / "01_fine.ipynb", [
        ("markdown", "# A fine chapter\n\nIt runs."),
        ("code", "#| export\nanswer = 6 * 7"),
        ("code", "#| slow\nraise RuntimeError('a slow cell ran')"),
        ("code", "#| eval: false\nraise RuntimeError('an eval-false cell ran')"),
        ("code", "import os\nprint('cwd', os.path.basename(os.getcwd()), answer)")])
    write_notebook(nbs / "02_broken.ipynb", [
        ("markdown", "# A broken chapter\n\nIt fails."),
        ("code", "x = 1"),
        ("code", "#| export\ny = 1 / (x - 1)")])
    r = run_docs("--nbs", nbs, "--out", out, "--jobs", 2)     # the failure comes back from a worker process
    assert r.returncode == 1, r.stdout + r.stderr
    assert "02_broken.ipynb: cell 3 (code cell 2) failed: ZeroDivisionError: division by zero" in r.stderr, r.stderr
    assert "the cell starts: y = 1 / (x - 1)" in r.stderr          # the directive line is not part of the source
    assert "01_fine.ipynb" not in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["01_fine.html", "plotly.min.js"]   # no page, no index, no tmp
    page = (out / "01_fine.html").read_text()
    assert "cwd nbs 42" in page                       # ran in the notebook's folder
    assert "a slow cell ran" in page and "an eval-false cell ran" in page   # shown ...
    assert page.count('class="jp-OutputArea-child') == 1                    # ... but not run: one output, the print
    assert 'data-mime-type="application/vnd.jupyter.stderr"' not in page
    assert "#| " not in page and "answer" in page

    docs, page = load_tool(), out / "01_fine.html"
    t = page.stat().st_mtime
    assert docs.up_to_date(nbs / "01_fine.ipynb", page, t - 1) and not docs.up_to_date(nbs / "01_fine.ipynb", page, t)
    # a page newer than its notebook and the package is kept (dated ahead: others may export into intaghand/ meanwhile)
    mtime = time.time() + 3600
    os.utime(page, (mtime, mtime))
    r = run_docs("--nbs", nbs, "--out", out, "--only", "01_fine")
    assert r.returncode == 0 and "01_fine.html is up to date" in r.stdout, r.stdout + r.stderr
    assert page.stat().st_mtime == mtime
    index = (out / "index.html").read_text()
    assert 'href="01_fine.html">A fine chapter</a> — It runs.' in index and "02_broken" not in index
    r = run_docs("--nbs", nbs, "--out", out, "--only", "01_fine", "--force")
    assert r.returncode == 0 and "01_fine.html (" in r.stdout and page.stat().st_mtime < mtime, r.stdout + r.stderr


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    "A site of two real chapters and two linked markdown pages, built by the tool and served over HTTP."
    reason = browser_unavailable_reason()
    if reason:
        print(f"browser test skipped: {reason}")
        pytest.skip(f"browser unavailable: {reason}")
    tmp = tmp_path_factory.mktemp("docs")
    nbs, out = tmp / "nbs", tmp / "site"
    nbs.mkdir()
    for name in CHAPTERS: shutil.copy(ROOT / "nbs" / f"{name}.ipynb", nbs)
    write_notebook(nbs / "00_links.ipynb", [("markdown", "# Links between chapters\n\nA page that links to others. "
                   "See [the quirk](00b_anchor.ipynb#quirk-demo) and [the pictures](17a_pictures.ipynb).")])
    write_notebook(nbs / "00b_anchor.ipynb", [("markdown", "# An anchor\n\nA page with an anchor far down.\n\n" +
                   "filler\n\n" * 80 + '<a id="quirk-demo"></a>\n**The quirk.** Found by its anchor. ![a red square](red.png)')])
    Image.new("RGB", (8, 8), "red").save(nbs / "red.png")        # a markdown picture beside the notebook
    r = run_docs("--nbs", nbs, "--out", out, "--jobs", 2, timeout=600)
    print(r.stdout, r.stderr[-3000:])
    assert r.returncode == 0, r.stderr
    handler = functools.partial(QuietHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    names = ["00_links", "00b_anchor", *CHAPTERS]
    yield {"url": f"http://127.0.0.1:{server.server_port}", "names": names,
           "titles": {n: first_heading(nbs / f"{n}.ipynb") for n in names}}
    server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    "Serves the site without logging every request to stderr."
    def log_message(self, *args): pass


@pytest.fixture(scope="module")
def browser(site):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def open_page(browser, url):
    "A page at `url` with the HTTP status, console errors and requests that left the local server recorded."
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.problems = []
    page.on("console", lambda m: page.problems.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: page.problems.append(f"pageerror: {e}"))
    page.on("response", lambda r: page.problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    page.on("request", lambda q: None if q.url.startswith(("http://127.0.0.1", "data:", "about:"))
            else page.problems.append(f"request off the site: {q.url}"))
    page.status = page.goto(url).status
    return page


@pytest.mark.timeout(600)
def test_index_lists_the_chapters_in_order(site, browser):
    page = open_page(browser, f"{site['url']}/index.html")
    links = page.locator("ol.chapters li a")
    assert [links.nth(i).get_attribute("href") for i in range(links.count())] == [f"{n}.html" for n in site["names"]]
    assert [links.nth(i).inner_text() for i in range(links.count())] == [site["titles"][n] for n in site["names"]]
    assert "A page that links to others." in page.locator("ol.chapters li").first.inner_text()
    for i, name in enumerate(site["names"]):                 # each link opens its chapter
        with page.expect_navigation():
            page.locator("ol.chapters li a").nth(i).click()
        assert page.url.endswith(f"/{name}.html") and page.title() == site["titles"][name]
        page.go_back()
    assert not page.problems, page.problems


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_page_shows_its_pictures(site, browser, name):
    page = open_page(browser, f"{site['url']}/{name}.html")
    assert page.status == 200 and page.title() == site["titles"][name]
    assert page.locator("h1").first.inner_text().strip().rstrip("¶").strip() == site["titles"][name]
    widths = page.evaluate("() => [...document.querySelectorAll('.jp-OutputArea-output img')]"
                           ".map(i => i.complete ? i.naturalWidth : 0)")
    assert widths and all(w > 0 for w in widths), f"{name}: pictures that did not decode: {widths}"
    errors = page.evaluate("""() => [...document.querySelectorAll(
        '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
        .map(e => e.textContent.slice(0, 300)).filter(t => /Error|Traceback/.test(t))""")
    assert not errors, f"{name}: error outputs: {errors}"
    assert page.locator(".jp-CodeCell").count() > 5 and page.locator(".jp-InputArea pre").first.inner_text()
    assert "#|" not in page.locator("main").inner_text()
    assert page.locator("nav.docs-nav a[href='index.html']").count() == 1
    assert not page.problems, page.problems


@pytest.mark.timeout(120)
def test_rewritten_link_reaches_the_anchor(site, browser):
    page = open_page(browser, f"{site['url']}/00_links.html")
    assert page.locator("a[href*='.ipynb']").count() == 0
    with page.expect_navigation():
        page.locator("a[href='00b_anchor.html#quirk-demo']").click()
    assert page.url.endswith("/00b_anchor.html#quirk-demo") and page.title() == "An anchor"
    anchor = page.locator("#quirk-demo")
    assert anchor.count() == 1
    assert page.evaluate("() => window.scrollY") > 500          # scrolled down to the anchor
    red = page.locator("img[alt='a red square']")               # embedded, not a link to the notebook folder
    assert red.get_attribute("src").startswith("data:image/png;base64,") and red.evaluate("i => i.naturalWidth") == 8
    page.go_back()
    with page.expect_navigation():
        page.locator("a[href='17a_pictures.html']").click()
    assert page.title() == site["titles"]["17a_pictures"]
    assert not page.problems, page.problems
