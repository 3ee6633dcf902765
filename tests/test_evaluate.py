"""Evaluation: known errors through the whole path (order, GT meshes, re-regressed joints), report files, CLI,
configs from checkpoints, and agreement with the trainer's validation MPJPE."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from intaghand.config import get_config
from intaghand.dataset import EvalSamples, HandDataset, collate_eval
from intaghand.mano import mano_layers
from intaghand.io import CheckpointError
from intaghand.mano import HANDS
from intaghand.evaluate import checkpoint_config, eval_main, evaluate, load_for_eval
from intaghand.run_files import export_weights
from intaghand.train import Trainer, validation_errors

TINY = ["MODEL.IMG_SIZE", "64", "TRAIN.BATCH_SIZE", "4", "TRAIN.EPOCHS", "1"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from intaghand.synthetic import make_synthetic
    root = tmp_path_factory.mktemp("evaldata")
    data = root / "data"
    make_synthetic(data, 11, seed=1, size=128, fracs=[4, 3, 4], progress=False)
    cfg = get_config(preset="small", overrides=TINY)
    t = Trainer(cfg, data, root / "run", progress=False, tensorboard=False, max_steps=1, val_samples=0)
    t.fit()
    layers = mano_layers(cfg)
    return SimpleNamespace(data=data, cfg=cfg, ckpt=root / "run" / "latest.pth", layers=layers, root=root)


class Oracle(torch.nn.Module):
    "The GT meshes of the next samples (index order), scaled and shifted, optionally one left vertex moved."
    def __init__(self, gts, scale=1.0, shift=(0.0, 0.0, 0.0), bump=None):
        super().__init__()
        self.gts, self.scale, self.shift, self.bump, self.i = gts, scale, torch.tensor(shift), bump, 0
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, img):
        B, k = img.shape[0], self.i
        self.i += B
        out = {h: self.gts[h][k:k + B] * self.scale + self.shift for h in HANDS}
        if self.bump is not None:
            out["left"] = out["left"].clone()
            out["left"][:, 745] += torch.tensor(self.bump)
        return SimpleNamespace(**{h: SimpleNamespace(verts3d=v) for h, v in out.items()})


def _gts(s, split="test"):
    ds = EvalSamples(HandDataset(s.data, split, cfg=s.cfg, mano_layers=s.layers, train=False))
    return {h: torch.stack([ds[i][1][h] for i in range(len(ds))]) for h in HANDS}


def test_oracle_known_errors(setup):
    s = setup
    gts = _gts(s)
    R = s.layers["left"].joint_regressor
    # moved and scaled together: zero under the original protocol, zero MRRPE; wrist protocol sees the scale
    ev = evaluate(Oracle(gts, 0.8, (0.1, -0.2, 0.5)), s.data, "test", batch_size=3, cfg=s.cfg, layers=s.layers, progress=False)
    o, w = ev.summary["protocols"]["original"], ev.summary["protocols"]["wrist"]
    assert ev.results.sample_ids == [0, 1, 2, 3] and ev.summary["n_samples"] == 4
    assert max(o[m][h] for m in ("mpjpe", "mpvpe") for h in ("left", "right", "all")) < 1e-3
    assert ev.summary["mrrpe"]["value"] < 1e-3
    for h in HANDS:     # wrist-aligned, unscaled: each vertex off by 0.2·|v − J0|
        v = gts[h].double()
        j0 = (R.double() @ v)[:, :1]
        expect = (0.2 * torch.linalg.norm(v - j0, dim=-1)).mean() * 1000
        assert w["mpvpe"][h] == pytest.approx(float(expect), rel=1e-4)
    # one vertex 5 mm off: known joint and vertex errors for the left hand only
    ev = evaluate(Oracle(gts, bump=(0.003, 0.0, 0.004)), s.data, "test", batch_size=4, cfg=s.cfg, layers=s.layers,
                  progress=False)
    o = ev.summary["protocols"]["original"]
    assert float(R[0, 745]) == 0 and float(R[9, 745]) == 0
    assert o["mpjpe"]["left"] == pytest.approx(5 * float(R[:, 745].abs().sum()) / 21, abs=1e-4)
    assert o["mpvpe"]["left"] == pytest.approx(5 / 778, abs=1e-5) and o["mpvpe"]["right"] < 1e-5
    per = ev.results.per_sample["original_mpvpe_all"]
    np.testing.assert_allclose(per, 5 / 778 / 2, atol=1e-5)


class Constant(torch.nn.Module):
    "The same meshes for every image."
    def __init__(self, meshes):
        super().__init__()
        self.meshes, self.dummy = meshes, torch.nn.Parameter(torch.zeros(1))

    def forward(self, img):
        B = img.shape[0]
        hand = lambda v: SimpleNamespace(verts3d=v.expand(B, -1, -1), verts2d=torch.zeros(B, v.shape[0], 2), scale=torch.zeros(B),
                                         trans2d=torch.zeros(B, 2))       # no camera: the gallery shows the image only
        return SimpleNamespace(**{h: hand(self.meshes[h]) for h in HANDS})


def test_constant_mean_hand_baseline(setup, tmp_path):
    "The baseline beside every evaluation is the mean hand for every sample: a model that predicts it scores the same."
    from intaghand.evaluate import mean_hand_meshes
    s = setup
    const = mean_hand_meshes(s.layers)
    ev = evaluate(Constant(const), s.data, "test", batch_size=3, cfg=s.cfg, layers=s.layers, progress=False, out=tmp_path)
    base, model = ev.summary["baseline"]["protocols"], ev.summary["protocols"]
    for p in ("original", "wrist"):
        for m in ("mpjpe", "mpvpe"):
            for h in ("left", "right", "all"):
                assert base[p][m][h] == pytest.approx(model[p][m][h], rel=1e-6) and base[p][m][h] > 1.0
    assert json.loads((tmp_path / "summary.json").read_text())["baseline"]["protocols"]["original"]["mpjpe"]["all"] \
        == pytest.approx(base["original"]["mpjpe"]["all"])
    assert "original, baseline" in ev.table() and "mean hand" in ev.table()
    oracle = evaluate(Oracle(_gts(s)), s.data, "test", batch_size=4, cfg=s.cfg, layers=s.layers, progress=False)
    assert oracle.summary["protocols"]["original"]["mpjpe"]["all"] < 1e-3 < oracle.summary["baseline"]["protocols"]["original"]["mpjpe"]["all"]


def test_report_files_and_validation_agree(setup, tmp_path):
    s = setup
    ev = evaluate(s.ckpt, s.data, "val", batch_size=2, out=tmp_path, n_worst=2, progress=False)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"summary.json", "per_sample.csv", "error_hist.png", "per_joint_error.png", "worst_cases.png", "config.yaml"} <= names
    summ = json.loads((tmp_path / "summary.json").read_text())
    assert summ["n_samples"] == 3 and summ["meta"]["split"] == "val" and len(summ["worst"]["samples"]) == 2
    rows = (tmp_path / "per_sample.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("index,sample_id,original_mpjpe_left")
    model, cfg = load_for_eval(s.ckpt)
    loader = DataLoader(EvalSamples(HandDataset(s.data, "val", cfg=cfg, mano_layers=s.layers, train=False)), 2,
                        collate_fn=collate_eval)
    v = validation_errors(model, loader, {h: s.layers[h].joint_regressor for h in HANDS})
    o = summ["protocols"]["original"]
    for m in ("mpjpe", "mpvpe"):
        for h in ("left", "right", "all"):
            assert v[f"{m}_{h}"] == pytest.approx(o[m][h], rel=1e-5)
    assert "| original |" in ev.table()


def test_cli_alias_configs_and_default_out(setup, tmp_path, capsys):
    s = setup
    assert eval_main(["--model", str(s.ckpt), "--data_path", str(s.data), "--bs", "4", "--no_progress", "--n_worst", "1",
                      "--out", str(tmp_path / "a")]) == 0
    assert "MPJPE (mm) left" in capsys.readouterr().out
    a = json.loads((tmp_path / "a" / "summary.json").read_text())
    w = export_weights(s.ckpt, tmp_path / "w" / "plain.pth")           # plain weights + plain.yaml beside
    assert checkpoint_config(w).MODEL.IMG_SIZE == 64
    assert eval_main(["--checkpoint", str(w), "--data_path", str(s.data), "--no_progress", "--max_samples", "2"]) == 0
    b = json.loads((tmp_path / "w" / "eval_test" / "summary.json").read_text())
    assert b["n_samples"] == 2 and a["n_samples"] == 4
    import csv
    rows = list(csv.DictReader(open(tmp_path / "a" / "per_sample.csv")))
    first2 = np.mean([float(r["original_mpjpe_left"]) for r in rows[:2]])
    assert b["protocols"]["original"]["mpjpe"]["left"] == pytest.approx(first2, rel=1e-5)   # same weights, same numbers

def test_wrong_config_and_missing_split_are_clear(setup, tmp_path):
    s = setup
    from intaghand.inference import ConfigMismatchWarning
    with pytest.warns(ConfigMismatchWarning, match="MODEL.IMG_SIZE: checkpoint 64, given 128"):
        _, cfg = load_for_eval(s.ckpt, get_config(preset="small"))       # trained at 64 px, this says 128: named, 64 used
    assert cfg.MODEL.IMG_SIZE == 64
    with pytest.raises(FileNotFoundError, match="no processed split 'nosuch'"):
        evaluate(s.ckpt, s.data, "nosuch", progress=False)
    with pytest.raises(SystemExit):
        eval_main(["--data_path", str(s.data)])                           # no checkpoint


def test_reconstructor_is_accepted(setup):
    from intaghand.inference import Reconstructor
    s = setup
    rec = Reconstructor.from_checkpoint(export_weights(s.ckpt, s.root / "rec.pth"))
    ev = evaluate(rec, s.data, "test", batch_size=4, progress=False, max_samples=3)
    ev2 = evaluate(s.ckpt, s.data, "test", batch_size=4, progress=False, max_samples=3)
    assert ev.summary["protocols"]["original"] == ev2.summary["protocols"]["original"]


@pytest.mark.parametrize("n", ["0", "-3"])
def test_max_samples_must_be_positive(setup, n, capsys):
    with pytest.raises(SystemExit) as e:
        eval_main(["--checkpoint", str(setup.ckpt), "--data_path", str(setup.data), "--max_samples", n])
    assert e.value.code == 2 and f"--max_samples {n}" in capsys.readouterr().err


def test_given_cfg_cannot_change_the_stored_network(setup):
    "--cfg with a shape-neutral network change (MODEL.NUM_HEADS) is named and the checkpoint's value is used."
    from intaghand.inference import ConfigMismatchWarning
    given = get_config(preset="small", overrides=TINY + ["MODEL.NUM_HEADS", "2"])
    with pytest.warns(ConfigMismatchWarning, match="MODEL.NUM_HEADS: checkpoint 4, given 2"):
        cfg = checkpoint_config(setup.ckpt, given)
    assert cfg.MODEL.NUM_HEADS == 4


def test_cli_precision_runs_the_inference_paths(setup, tmp_path, capsys):
    "--precision exact / fast evaluate through the Reconstructor's paths (report and gallery included)."
    s = setup
    got = {}
    for p in ("plain", "exact", "fast"):
        assert eval_main(["--checkpoint", str(s.ckpt), "--data_path", str(s.data), "--no_progress", "--n_worst", "1",
                          "--precision", p, "--out", str(tmp_path / p)]) == 0
        summary = json.loads((tmp_path / p / "summary.json").read_text())
        assert summary["meta"]["precision"] == p and (tmp_path / p / "worst_cases.png").stat().st_size > 1000
        got[p] = summary["protocols"]["original"]["mpjpe"]["all"]
    assert got["exact"] == pytest.approx(got["plain"], rel=1e-5)
    assert got["fast"] == pytest.approx(got["plain"], rel=0.05)
    with pytest.raises(SystemExit):
        eval_main(["--checkpoint", str(s.ckpt), "--data_path", str(s.data), "--precision", "half"])
    assert "invalid choice: 'half'" in capsys.readouterr().err
