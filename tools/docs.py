"""Render the chapters, executed, to a static offline HTML site: `python tools/docs.py [options]` (`make docs`).

The chapters are the top-level notebooks of `nbs/`, in file-name order. Each is executed the way `nbdev_test`
runs it (kernel `python3`, working directory `nbs/`; cells flagged with one of settings.ini's `tst_flags` and
`#| eval: false` cells are shown but not run) and written as one page `<stem>.html` with its pictures embedded
(plotly figures drawn by the site's own `plotly.min.js`, widgets as a note); `index.html` lists the chapters
with their titles and first sentences. The run and explore notebooks of the subfolders need data, a trained
run or a live kernel: they are copied as they are and listed in a separate section. Options: `--out DIR`
(default `_docs`), `--jobs N` notebooks at once (default 2), `--only 01_io,05_render` (names or stems),
`--force` (rebuild pages that are up to date), `--nbs DIR`, `--timeout S` (per notebook). A page newer than
its notebook and than every file in `intaghand/` is up to date and is not rebuilt.
Any failing chapter fails the build (exit code 1) with a message naming the notebook and the cell.
"""
import argparse
import configparser
import html
import json
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from intaghand.io import atomic_write_text       # pages are written through a temporary file and a rename

ROOT = Path(__file__).resolve().parents[1]
DIRECTIVE = re.compile(r"^\s*#\s*\|")
# a relative markdown or HTML link to a notebook beside this one: X.ipynb or X.ipynb#frag
NB_LINK = re.compile(r"""(\]\(\s*<?|href\s*=\s*["']|^\s*\[[^\]]+\]:\s*<?)(\.?/?)([^\s/"'<>()#:]+)\.ipynb(?=[#)>"'\s]|$)""",
                     re.M)
PLOTLY = "application/vnd.plotly.v1+json"
WIDGET_NOTE = ('<div class="docs-widget"><em>An interactive widget: it needs a running kernel. '
               'Open the notebook in JupyterLab to use it.</em></div>')

# the lab template without anything fetched from the network (require.js, MathJax, mermaid, the widget
# manager) and with a link back to the index
PAGE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block extra_css -%}<link rel="icon" href="data:,">
<style>nav.docs-nav { padding: 8px 20px; font-family: sans-serif; }
.docs-widget { padding: 4px 0; color: #555; }</style>{%- endblock extra_css -%}
{%- block body_header -%}{{ super() }}
<nav class="docs-nav"><a href="index.html">&uarr; all chapters</a></nav>
{%- endblock body_header -%}
"""


class DocsError(Exception):
    "A chapter that did not build; the message names the notebook and the cell."


def set_environment():
    "Jupyter, IPython and matplotlib state under `.cache` (as the Makefile exports it), unless already set."
    for var, sub in [("JUPYTER_CONFIG_DIR", "jupyter/config"), ("JUPYTER_DATA_DIR", "jupyter/data"),
                     ("IPYTHONDIR", "ipython"), ("MPLCONFIGDIR", "matplotlib")]:
        (ROOT / ".cache" / sub).mkdir(parents=True, exist_ok=True)
        os.environ.setdefault(var, str(ROOT / ".cache" / sub))
    os.environ["IN_TEST"] = "1"          # as nbdev_test sets it; the kernels inherit it


def skip_flags():
    "The flags of settings.ini's `tst_flags`: cells carrying one are not run (nbdev_test without --flags)."
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "settings.ini")
    return set(cfg["DEFAULT"].get("tst_flags", "").split())


def chapters(nbs_dir):
    "The top-level notebooks of `nbs_dir` in file-name order (as nbdev orders them)."
    return sorted(Path(nbs_dir).glob("*.ipynb"))


def side_notebooks(nbs_dir):
    "The notebooks of the subfolders (runs, explorers), which are listed but not executed."
    return sorted(p for p in Path(nbs_dir).glob("*/*.ipynb") if not p.parent.name.startswith((".", "_")))


def select(paths, only):
    "The chapters named in `only` (comma-separated names or stems), in chapter order; all when `only` is empty."
    if not only: return list(paths)
    wanted = {Path(n.strip()).stem for n in only.split(",") if n.strip()}
    unknown = wanted - {p.stem for p in paths}
    if unknown: raise SystemExit(f"docs: no chapter named {', '.join(sorted(unknown))}")
    return [p for p in paths if p.stem in wanted]


def source(cell):
    "A cell's source as one string (a notebook file may store it as a list of lines)."
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def read_json(path):
    "A notebook as plain JSON (quick; enough for titles)."
    return json.loads(Path(path).read_text(encoding="utf-8"))


def title_and_sentence(nb, default):
    "The first markdown `# ` heading and the first sentence of the paragraph after it (the `>` summary if any)."
    for cell in nb["cells"]:
        m = re.search(r"^# +(.+)$", source(cell), re.M) if cell["cell_type"] == "markdown" else None
        if not m: continue
        paragraphs = [p for p in re.split(r"\n\s*\n", source(cell)[m.end():]) if p.strip()]
        text = " ".join(ln.strip().lstrip(">").strip() for ln in paragraphs[0].splitlines()) if paragraphs else ""
        sentence = re.match(r"(.+?[.!?])(?=\s+[A-Z`(*]|$)", text)
        return m.group(1).strip(), (sentence.group(1) if sentence else text)
    return default, ""


def inline_markdown(text):
    "One line of markdown as HTML: escaped, with its code spans, bold and italics."
    parts = re.split(r"(`[^`]+`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
        else:
            part = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(part))
            out.append(re.sub(r"(?<![*\w])\*(?!\s)(.+?)(?<!\s)\*(?![*\w])", r"<em>\1</em>", part))
    return "".join(out)


def rewrite_links(source):
    "Relative links `X.ipynb` / `X.ipynb#frag` of a markdown cell point at the rendered page `X.html`."
    return NB_LINK.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3)}.html", source)


def prepare(nb, flags):
    """Ready a chapter for running and showing: cells nbdev_test would not run get nbclient's skip tag, nbdev
    directive lines leave the shown sources, `#| hide` cells are marked for removal after the run."""
    from nbdev.process import extract_directives
    for cell in nb.cells:
        if cell.cell_type == "markdown": cell.source = rewrite_links(cell.source)
        if cell.cell_type != "code": continue
        direc = extract_directives(cell, remove=False)
        no_eval = direc.get("eval:", [""])[0].lower() == "false"
        if no_eval or flags & direc.keys() or "nbdev_export(" in cell.source:
            cell.metadata.setdefault("tags", []).append("skip-execution")
        cell.metadata["docs_hide"] = "hide" in direc
        lines = cell.source.splitlines(True)
        while lines and DIRECTIVE.match(lines[0]): lines.pop(0)
        cell.source = "".join(lines).lstrip("\n")
    return nb


def plotly_html(figure_json, first):
    "A plotly figure as HTML drawn by the site's own `plotly.min.js` (its script tag with the first figure only)."
    import plotly.io as pio
    return pio.to_html(figure_json, include_plotlyjs="directory" if first else False, full_html=False,
                       default_height="500px", validate=False)


def static_outputs(nb):
    """Outputs an offline page can show: plotly figures as HTML over the site's plotly.js, widget views as a
    note, no JavaScript outputs; `#| hide` cells are dropped."""
    nb.metadata.pop("widgets", None)
    nb.cells = [c for c in nb.cells if not c.metadata.pop("docs_hide", False)]
    figures = 0
    for cell in nb.cells:
        if cell.cell_type != "code": continue
        kept = []
        for out in cell.outputs:
            data = out.get("data")
            if data is not None:
                if "application/vnd.jupyter.widget-view+json" in data:
                    out.data = {"text/html": WIDGET_NOTE}
                elif PLOTLY in data:
                    out.data = {"text/html": plotly_html(data[PLOTLY], figures == 0)}
                    figures += 1
                out.data.pop("application/javascript", None)
                if not out.data: continue
            kept.append(out)
        cell.outputs = kept
    return nb


def cell_error(name, nb, index, err):
    "The build error of a chapter whose cell `index` failed: the notebook, the cell and what went wrong."
    code_no = sum(c.cell_type == "code" for c in nb.cells[:index + 1])
    first = next((ln for ln in nb.cells[index].source.splitlines() if ln.strip()), "")[:80]
    what = f"{err.ename}: {err.evalue}" if getattr(err, "ename", None) else f"{type(err).__name__}: {err}"
    frames = re.findall(r"^\s*(File .+?)(?:, in .*)?$", re.sub(r"\x1b\[[0-9;]*m", "", getattr(err, "traceback", "")), re.M)
    where = f"\n    raised in: {frames[-1]}" if frames else ""           # the innermost frame of the traceback
    return DocsError(f"{name}: cell {index + 1} (code cell {code_no}) failed: {what}\n    the cell starts: {first}{where}")


def execute(nb, name, cwd, timeout):
    "Run `nb` in a fresh `python3` kernel in `cwd`, all its cells within `timeout` seconds; errors name the cell."
    from nbclient import NotebookClient
    if not any(c.cell_type == "code" and c.source.strip() and "skip-execution" not in c.metadata.get("tags", [])
               for c in nb.cells): return nb                  # markdown only: no kernel needed
    current = {"index": None}
    deadline = time.monotonic() + timeout
    client = NotebookClient(nb, kernel_name="python3", resources={"metadata": {"path": str(cwd)}},
                            timeout_func=lambda cell: max(1, int(deadline - time.monotonic())), startup_timeout=180,
                            on_cell_execute=lambda cell, cell_index: current.update(index=cell_index),
                            extra_arguments=["--IPKernelApp.log_level=ERROR"])   # not its plain-TCP warning
    try:
        client.execute()
    except Exception as err:
        if current["index"] is None: raise DocsError(f"{name}: the kernel did not start: {err}") from err
        if type(err).__name__ == "CellTimeoutError":
            err = TimeoutError(f"the notebook ran past its {timeout} s")
        raise cell_error(name, nb, current["index"], err) from None
    return nb


def write_plotly_js(out_dir):
    "The site's one copy of plotly.js (the installed plotly's), which the pages with figures load."
    from importlib.resources import files
    js, target = files("plotly") / "package_data" / "plotly.min.js", Path(out_dir) / "plotly.min.js"
    if not target.exists() or target.stat().st_size != len(js.read_bytes()):
        atomic_write_text(target, js.read_text(encoding="utf-8"))


def render(nb, title, folder):
    "The executed chapter as one HTML page: the lab template, its pictures (and those of `folder`) as data URIs."
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter
    nb.metadata["title"] = title
    exporter = HTMLExporter(template_name="lab", template_file="docs.html.j2", embed_images=True,
                            extra_loaders=[DictLoader({"docs.html.j2": PAGE_TEMPLATE})])
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"path": str(folder)}})
    return body


def build_page(nb_path, out_dir, flags, timeout):
    "Execute one chapter and write its page atomically; returns (page, seconds) or raises DocsError."
    import nbformat
    t0 = time.time()
    nb = nbformat.read(nb_path, as_version=4)
    title, _ = title_and_sentence(nb, nb_path.stem)
    nb = static_outputs(execute(prepare(nb, flags), nb_path.name, nb_path.parent, timeout))
    page = Path(out_dir) / f"{nb_path.stem}.html"
    atomic_write_text(page, render(nb, title, nb_path.parent))
    return page, time.time() - t0


def _build_job(args):
    "A worker's job: build one page; a DocsError comes back as its message (it pickles either way)."
    try:
        return build_page(*args), None
    except DocsError as e:
        return None, str(e)
    except Exception as e:                   # anything else (an unreadable notebook, a template error)
        return None, f"{args[0].name}: {type(e).__name__}: {e}"


def up_to_date(nb_path, page, package_mtime):
    "A page is up to date when it is newer than its notebook and than every file of the package."
    return page.exists() and page.stat().st_mtime > max(nb_path.stat().st_mtime, package_mtime)


def package_mtime():
    "The newest modification time of the files in `intaghand/`."
    return max((p.stat().st_mtime for p in (ROOT / "intaghand").rglob("*") if p.is_file()
                and "__pycache__" not in p.parts), default=0)


def index_html(entries, side):
    """The index: (title, sentence, href) of the chapters in order, then the run and explore notebooks
    as links to their (not executed) copies."""
    def items(rows):
        return "\n".join(f'<li><a href="{html.escape(h)}">{html.escape(t)}</a>'
                         f'{" — " + inline_markdown(s) if s else ""}</li>' for t, s, h in rows)
    side_rows = []
    for p in side:
        t, s = title_and_sentence(read_json(p), p.stem)
        side_rows.append((t, s, f"{p.parent.name}/{p.name}"))
    extra = ("<h2>Run notebooks and explorers</h2>\n<p>Not executed here: they need a data set, a trained run or "
             "a live kernel for their widgets. The links are the notebooks as they are; open them in JupyterLab."
             f"</p>\n<ul>\n{items(side_rows)}\n</ul>\n") if side_rows else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>IntagHand workbench: the chapters</title>
<style>body {{ font-family: sans-serif; max-width: 60em; margin: 2em auto; line-height: 1.45; }}
li {{ margin: 0.35em 0; }} code {{ font-size: 0.95em; }}</style></head>
<body><h1>IntagHand workbench: the chapters</h1>
<p>Each chapter is a notebook of <code>nbs/</code>, executed and rendered with its outputs.</p>
<ol class="chapters">
{items(entries)}
</ol>
{extra}</body></html>
"""


def write_site_index(out_dir, all_chapters, side):
    "Copy the side notebooks into the site and write index.html listing every chapter that has a page."
    entries = []
    for p in all_chapters:
        if (out_dir / f"{p.stem}.html").exists():
            t, s = title_and_sentence(read_json(p), p.stem)
            entries.append((t, s, f"{p.stem}.html"))
    for p in side:
        (out_dir / p.parent.name).mkdir(exist_ok=True)
        atomic_write_text(out_dir / p.parent.name / p.name, p.read_text(encoding="utf-8"))
    atomic_write_text(out_dir / "index.html", index_html(entries, side))
    return len(entries)


def main(argv=None):
    "Build the site; exit code 1 when a chapter failed (the index is then left as it was)."
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "_docs"), help="site folder (default: _docs)")
    ap.add_argument("--nbs", default=str(ROOT / "nbs"), help="notebook folder (default: nbs)")
    ap.add_argument("--only", default="", help="comma-separated chapter names or stems, e.g. 01_io,05_render")
    ap.add_argument("--jobs", type=int, default=2, help="notebooks executed at once (default 2)")
    ap.add_argument("--force", action="store_true", help="rebuild pages that are up to date")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per notebook (default 1800)")
    args = ap.parse_args(argv)
    set_environment()
    t0, out_dir, nbs_dir = time.time(), Path(args.out).resolve(), Path(args.nbs).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    write_plotly_js(out_dir)
    all_chapters = chapters(nbs_dir)
    if not all_chapters: raise SystemExit(f"docs: no notebooks in {nbs_dir}")
    chosen, newest = select(all_chapters, args.only), package_mtime()
    todo = [p for p in chosen if args.force or not up_to_date(p, out_dir / f"{p.stem}.html", newest)]
    for p in sorted(set(chosen) - set(todo)): print(f"docs: {p.stem}.html is up to date")
    flags = skip_flags()
    jobs, failures = [(p, out_dir, flags, args.timeout) for p in todo], []
    if args.jobs > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            for done in as_completed([pool.submit(_build_job, job) for job in jobs]):
                _report(*done.result(), failures)
    else:
        for job in jobs: _report(*_build_job(job), failures)
    if failures:
        print(f"docs: {len(failures)} of {len(chosen)} chapters failed, index not updated:", file=sys.stderr)
        for msg in failures: print(f"  {msg}", file=sys.stderr)
        return 1
    n = write_site_index(out_dir, all_chapters, side_notebooks(nbs_dir))
    print(f"docs: {len(todo)} built, {len(chosen) - len(todo)} up to date; {n} pages listed in "
          f"{out_dir / 'index.html'} ({time.time() - t0:.0f} s)")
    return 0


def _report(page_s, err, failures):
    "Print one chapter's outcome as it comes; collect the failures."
    if err:
        failures.append(err)
        print(f"docs: FAILED {err}", file=sys.stderr, flush=True)
    else:
        print(f"docs: {page_s[0].name} ({page_s[1]:.0f} s)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
