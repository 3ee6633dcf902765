"""Replace text in exactly one cell of a notebook: python tools/nbedit.py NB OLD_FILE NEW_FILE.

A small helper for scripted edits of notebooks (the source of the package); fails unless OLD
occurs in exactly one cell.
"""
import json
import secrets
import sys


def _lines(text):
    lines = text.split("\n")
    return [ln + "\n" for ln in lines[:-1]] + [lines[-1]]


def _one_cell(nb, path, text):
    hits = [c for c in nb["cells"] if text in "".join(c["source"])]
    if len(hits) != 1:
        raise SystemExit(f"{path}: expected the text in exactly one cell, found {len(hits)}")
    return hits[0]


def _save(nb, path):
    with open(path, "w") as f:
        json.dump(nb, f, indent=1, ensure_ascii=False)
        f.write("\n")


def edit(path, old, new):
    nb = json.load(open(path))
    cell = _one_cell(nb, path, old)
    cell["source"] = _lines("".join(cell["source"]).replace(old, new))
    _save(nb, path)


def insert_after(path, anchor, cells):
    """Insert new cells after the one cell containing `anchor`; `cells` is a list of (kind, source) with kind
    'code' or 'markdown'."""
    nb = json.load(open(path))
    at = nb["cells"].index(_one_cell(nb, path, anchor)) + 1
    for kind, src in reversed(cells):
        cell = {"cell_type": kind, "id": secrets.token_hex(4), "metadata": {}, "source": _lines(src)}
        if kind == "code": cell.update(execution_count=None, outputs=[])
        nb["cells"].insert(at, cell)
    _save(nb, path)


if __name__ == "__main__":
    path, old, new = sys.argv[1], open(sys.argv[2]).read(), open(sys.argv[3]).read()
    edit(path, old, new)
