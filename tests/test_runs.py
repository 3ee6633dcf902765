"""Papermill run notebooks: parameters tag survives cleaning, a training run and an evaluation run leave their
report in the executed notebook, and a bad parameter fails in the first cell with a clear message."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "nbs" / "runs"
PAPERMILL = str(Path(sys.executable).parent / "papermill")


def _papermill(nb, out, *params):
    "Run papermill with the venv's python3 kernel in nbs/runs; returns (returncode, stderr, executed notebook)."
    args = [PAPERMILL, str(RUNS / nb), str(out), "--cwd", str(RUNS), "-k", "python3", "--log-level", "WARNING"]
    for k, v in zip(params[::2], params[1::2]): args += ["-p", k, str(v)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    return r.returncode, r.stderr, json.loads(Path(out).read_text())


def _outputs(nb):
    "[(cell tags, [output mime types / stream text], error text)] of the code cells."
    rows = []
    for c in nb["cells"]:
        if c["cell_type"] != "code": continue
        kinds, err = [], ""
        for o in c.get("outputs", []):
            if o["output_type"] == "error": err = f"{o['ename']}: {o['evalue']}"
            elif o["output_type"] == "stream": kinds.append("".join(o["text"]))
            else: kinds += list(o.get("data", {}))
        rows.append((c["metadata"].get("tags", []), kinds, err))
    return rows


@pytest.mark.parametrize("nb", ["train.ipynb", "eval.ipynb"])
def test_parameters_cell_is_tagged(nb):
    cells = json.loads((RUNS / nb).read_text())["cells"]
    tagged = [i for i, c in enumerate(cells) if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1
    src = "".join(cells[tagged[0]]["source"])
    for p in ("config", "preset", "data_path", "batch_size", "output_dir", "seed", "checkpoint", "device"):
        assert f"\n{p} = " in "\n" + src, p
    assert "default_exp" not in "".join("".join(c["source"]) for c in cells)       # not a library chapter


@pytest.fixture(scope="module")
def train_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pm_train")
    rc, err, nb = _papermill("train.ipynb", tmp / "train_out.ipynb", "epochs", 1, "max_steps", 2, "output_dir", tmp / "run",
                              "encoder_pretrain_steps", 2, "encoder_pretrain_batch", 2)
    assert rc == 0, err[-3000:]
    return tmp, nb


def test_train_notebook_leaves_report(train_run):
    tmp, nb = train_run
    rows = _outputs(nb)
    assert not any(e for _, _, e in rows)
    assert ["injected-parameters"] in [t for t, _, _ in rows]
    text = "\n".join(k for _, ks, _ in rows for k in ks)
    assert "config ok: resnet18 at 64 px, 1 epoch(s)" in text and "2 steps, 1 epoch(s)" in text
    assert "pretrained 2 steps in" in text and "held-out vertex error" in text          # the recipe's first stage ran
    assert sum(k == "image/png" for _, ks, _ in rows for k in ks) >= 2             # curves and pictures
    assert sum(k == "text/markdown" for _, ks, _ in rows for k in ks) >= 3         # data, validation table, checkpoints
    run = tmp / "run"
    assert {"latest.pth", "config.yaml", "train_log.jsonl"} <= {p.name for p in run.iterdir()}
    assert (run / "tb").is_dir() and (run / "synthetic_data" / "train" / "anno").is_dir()
    assert (run / "encoder_pretrain.pth").is_file() and str(run / "encoder_pretrain.pth") in (run / "config.yaml").read_text()
    log = [json.loads(l) for l in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "train"] == [0, 1]


@pytest.mark.slow          # ~25 s; nbdev_test runs this notebook with its defaults anyway
def test_eval_notebook_on_the_trained_run(train_run):
    tmp, _ = train_run
    run = tmp / "run"
    rc, err, nb = _papermill("eval.ipynb", tmp / "eval_out.ipynb", "checkpoint", run / "latest.pth", "data_path",
                             run / "synthetic_data", "split", "test", "batch_size", 2, "output_dir", tmp / "eval", "n_worst", 2)
    assert rc == 0, err[-3000:]
    rows = _outputs(nb)
    md = "\n".join(k for _, ks, _ in rows for k in ks)
    assert "parameters ok: checkpoint" in md
    assert sum(k == "image/png" for _, ks, _ in rows for k in ks) >= 3              # histograms, per joint, worst cases
    summary = json.loads((tmp / "eval" / "summary.json").read_text())
    assert summary["n_samples"] == 2 and summary["meta"]["checkpoint"].endswith("latest.pth")
    assert {"per_sample.csv", "worst_cases.png"} <= {p.name for p in (tmp / "eval").iterdir()}


@pytest.mark.parametrize("nb,params,message", [
    ("train.ipynb", ("preset", "nosuch"), "unknown preset 'nosuch'"),
    pytest.param("train.ipynb", ("epochs", 0), "epochs must be ≥ 1", marks=pytest.mark.slow),
    ("eval.ipynb", ("data_path", "/no/such/folder"), "holds no processed 'test' split"),
])
def test_bad_parameter_fails_in_first_cell(tmp_path, nb, params, message):
    out = tmp_path / "bad.ipynb"
    rc, err, executed = _papermill(nb, out, *params)
    assert rc != 0 and out.is_file()                        # papermill still writes the executed notebook
    rows = _outputs(executed)
    first = [t for t, _, _ in rows].index(["injected-parameters"]) + 1
    assert rows[first][2].startswith("ValueError: bad parameter:") and message in rows[first][2]
    assert not any(e for _, _, e in rows[:first])
