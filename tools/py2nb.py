"""Author a notebook as a percent-format script and turn it into a clean .ipynb.

    python tools/py2nb.py draft.py nbs/02_mano.ipynb

Cells start with `# %%` (code) or `# %% [markdown]` (markdown, every line prefixed by `# `).
`# %% tags=["parameters"]` sets cell tags (papermill). The .ipynb is the source of truth
afterwards: this is only a convenience for writing a new chapter in an editor.
"""
import json
import re
import sys
from pathlib import Path


def parse_cells(text):
    cells, kind, tags, lines = [], None, [], []

    def flush():
        if kind is None:
            return
        while lines and not lines[-1].strip():
            lines.pop()
        while lines and not lines[0].strip():
            lines.pop(0)
        if kind == "markdown":
            body = [re.sub(r"^# ?", "", ln) for ln in lines]
        else:
            body = list(lines)
        src = "\n".join(body)
        cell = {"cell_type": kind, "metadata": {"tags": tags} if tags else {}, "source": src}
        if kind == "code":
            cell.update(execution_count=None, outputs=[])
        cells.append(cell)

    for ln in text.splitlines():
        m = re.match(r"^# %%(.*)$", ln)
        if m:
            flush()
            rest = m.group(1)
            kind = "markdown" if "[markdown]" in rest else "code"
            t = re.search(r"tags=(\[.*?\])", rest)
            tags = json.loads(t.group(1)) if t else []
            lines = []
        else:
            lines.append(ln)
    flush()
    return cells


def to_notebook(cells):
    for c in cells:
        src = c["source"].split("\n")
        c["source"] = [s + "\n" for s in src[:-1]] + [src[-1]] if src else []
    return {
        "cells": cells,
        "metadata": {"kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


if __name__ == "__main__":
    src, dst = map(Path, sys.argv[1:3])
    nb = to_notebook(parse_cells(src.read_text()))
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {dst} ({len(nb['cells'])} cells)")
