"""Replace text in exactly one cell of a notebook: python tools/nbedit.py NB OLD_FILE NEW_FILE.

A small helper for scripted edits of notebooks (the source of the package); fails unless OLD
occurs in exactly one cell.
"""
import json
import sys


def edit(path, old, new):
    nb = json.load(open(path))
    hits = [c for c in nb["cells"] if old in "".join(c["source"])]
    if len(hits) != 1:
        raise SystemExit(f"{path}: expected the text in exactly one cell, found {len(hits)}")
    s = "".join(hits[0]["source"]).replace(old, new)
    lines = s.split("\n")
    hits[0]["source"] = [ln + "\n" for ln in lines[:-1]] + [lines[-1]]
    with open(path, "w") as f:
        json.dump(nb, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    path, old, new = sys.argv[1], open(sys.argv[2]).read(), open(sys.argv[3]).read()
    edit(path, old, new)
