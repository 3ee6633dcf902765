"""Prepare a finished training stage for shipping as the embedded checkpoint: weights, card, record notebook.

    .venv/bin/python tools/ship_stage.py --run RUN_DIR --test_data DIR [--out DIR] [--install]

From RUN_DIR (a training run of the papermill notebook: latest.pth, train.ipynb) it writes into --out
(default RUN_DIR/ship):
- embedded_small.pth: the run's latest weights as float16 (`intaghand.run_files.export_weights`), with the shipped
  config `misc/model/embedded_small.yaml` beside it;
- card.json, pictures.png: `tools/model_card.py` on the held-out test data (--test_data, 200 samples);
- eval16/: `intaghand eval` on the 16 shipped samples (data/synthetic_samples);
- embedded_small_train.ipynb: the run notebook with each cell's stream outputs merged and every progress-bar line
  reduced to its last redraw (a saved papermill report keeps every redraw).
Prints one JSON line with the card's figures and the 16-sample MPJPE. With --install it also copies the weights,
card (checkpoint and data fields naming the shipped file and the make-synthetic command), picture and record
notebook over the shipped ones in misc/model/; the README's model card is edited by hand.
"""
import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "misc" / "model"
TEST_COMMAND = "make-synthetic --n 200 --seed 4242 --splits test"


def compact_streams(nb: dict) -> dict:
    "`nb` with each code cell's stream outputs merged per stream and each line kept as its last carriage-return redraw."
    for cell in nb["cells"]:
        if cell["cell_type"] != "code": continue
        outs, merged = [], {}
        for o in cell.get("outputs", []):
            if o.get("output_type") != "stream":
                outs.append(o); continue
            text = "".join(o["text"]) if isinstance(o["text"], list) else o["text"]
            if o["name"] in merged: merged[o["name"]]["text"] += text
            else:
                merged[o["name"]] = {**o, "text": text}; outs.append(merged[o["name"]])
        for o in merged.values():
            o["text"] = "\n".join(line.rstrip("\r").split("\r")[-1] for line in o["text"].split("\n"))
        cell["outputs"] = outs
    return nb


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, type=Path, help="training run folder (latest.pth, train.ipynb)")
    p.add_argument("--test_data", required=True, type=Path, help=f"held-out processed test data ({TEST_COMMAND})")
    p.add_argument("--out", type=Path, default=None, help="where to write (default RUN/ship)")
    p.add_argument("--install", action="store_true", help="also copy the results over the shipped files in misc/model")
    a = p.parse_args(argv)
    out = a.out or a.run / "ship"
    out.mkdir(parents=True, exist_ok=True)
    from intaghand.run_files import export_weights
    weights = out / "embedded_small.pth"
    export_weights(a.run / "latest.pth", weights, config=False, half=True)
    shutil.copy(SHIPPED / "embedded_small.yaml", out / "embedded_small.yaml")
    py = sys.executable
    subprocess.run([py, str(ROOT / "tools" / "model_card.py"), "--checkpoint", str(weights), "--data_path",
                    str(a.test_data), "--n", "200", "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([str(Path(py).parent / "intaghand"), "eval", "--checkpoint", str(weights), "--data_path",
                    str(ROOT / "data" / "synthetic_samples"), "--split", "test", "--no_progress", "--out",
                    str(out / "eval16")], check=True, stdout=subprocess.DEVNULL)
    nb = compact_streams(json.loads((a.run / "train.ipynb").read_text()))
    (out / "embedded_small_train.ipynb").write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    card = json.loads((out / "card.json").read_text())
    card.update(checkpoint="misc/model/embedded_small.pth", data_path=TEST_COMMAND)
    (out / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    e16 = json.loads((out / "eval16" / "summary.json").read_text())["protocols"]["original"]["mpjpe"]["all"]
    if a.install:
        shutil.copy(weights, SHIPPED / "embedded_small.pth")
        shutil.copy(out / "card.json", SHIPPED / "embedded_small_card.json")
        shutil.copy(out / "pictures.png", SHIPPED / "embedded_small_card.png")
        shutil.copy(out / "embedded_small_train.ipynb", SHIPPED / "embedded_small_train.ipynb")
    print(json.dumps({**{k: round(v, 3) if isinstance(v, float) else v for k, v in card.items()},
                      "mpjpe_16_samples": round(e16, 3), "installed": a.install}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
