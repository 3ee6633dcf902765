"""Synthetic generator: plausible interacting scenes, exact labels, determinism, resumability, CLI."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import intaghand.synthetic as syn
from intaghand.config import get_config
from intaghand.dataset import HandDataset, InterHandDataset
from intaghand.layout import count_samples, sample_complete, sample_files
from intaghand.mano import HANDS
from intaghand.synthetic import (INTERACTION_MODES, SyntheticGenerator, canonical_rotation, make_synthetic,
                                 make_synthetic_main, min_distance, split_counts)


@pytest.fixture(scope="module")
def v_color(layers):
    vt = layers["right"].v_template.numpy()
    return (vt - vt.min(0)) / (vt.max(0) - vt.min(0))


@pytest.fixture(scope="module")
def made(tmp_path_factory, layers, v_color):
    out = tmp_path_factory.mktemp("syn") / "a"
    make_synthetic(out, 12, seed=3, layers=layers, v_color=v_color, workers=1, progress=False)
    return out


def _files(d):
    return sorted(str(p.relative_to(d)) for p in Path(d).rglob("*") if p.is_file() and p.name != "synthetic.json")


def test_split_counts():
    assert split_counts(10) == {"train": 8, "val": 1, "test": 1}
    assert split_counts(16, ["test"]) == {"test": 16}
    assert split_counts(7, ["train", "val"], [0.5, 0.5]) in ({"train": 4, "val": 3}, {"train": 3, "val": 4})
    assert sum(split_counts(1001).values()) == 1001


def test_canonical_view(layers):
    for h, sign in (("left", -1), ("right", 1)):
        R = torch.as_tensor(canonical_rotation(layers[h], h))[None]
        _, j = layers[h].forward_rotmat(R, torch.zeros(1, 45))
        j = j[0].numpy()
        up = (j[9] - j[0]) / np.linalg.norm(j[9] - j[0])
        assert up[1] < -0.95, "fingers point up (-y)"
        assert sign * (j[5] - j[17])[0] > 0, "thumb side outwards"


def test_scenes_interact(layers, v_color):
    gen = SyntheticGenerator(layers, v_color, 256, seed=0)
    modes, close = set(), 0
    for i in range(24):
        sc = gen.scene("train", i)
        g = gen.geometry(sc)
        modes.add(sc.mode)
        d = min_distance(g["left"][0], g["right"][0], step=1)
        assert d > -1e-9 and d < 0.08, (sc.mode, d)      # near each other, never far apart
        close += d < 0.025
        pts = np.concatenate([g[h][0] for h in HANDS]) @ g["K"].T
        uv = pts[:, :2] / pts[:, 2:]
        assert (uv > 0).all() and (uv < 256).all() and (pts[:, 2] > 0.2).all(), "both hands in the crop, in front"
    assert modes == set(INTERACTION_MODES) and close >= 12


def test_dataset_reads_synthetic_and_labels_match_masks(made, layers):
    ds = InterHandDataset(made, "train", mano_layers=layers)
    assert len(ds) == 10 and len(InterHandDataset(made, "val", mano_layers=layers)) == 1
    a = ds.load(0).anno
    assert set(a) == {"inter_idx", "image", "annotation", "mano_params", "camera"}
    assert a["mano_params"]["left"]["pose"].shape == (1, 45) and a["camera"]["camera"].shape == (3, 3)
    hd = HandDataset(ds, cfg=get_config(), seed=0)
    hits = n = 0
    for i in range(len(ds)):
        raw = ds.load(i, hms=False)
        for _ in range(2):
            s = hd.make_sample(raw, hd.augmentation())
            big = cv2.resize(s.mask.numpy().transpose(1, 2, 0), (256, 256), interpolation=cv2.INTER_NEAREST)
            for ch, lab in ((0, s.right), (1, s.left)):
                j = np.round(lab.joints2d.numpy()).astype(int)
                ok = (j >= 0).all(1) & (j < 256).all(1)
                hits += big[j[ok, 1], j[ok, 0], ch].sum(); n += ok.sum()
            j = torch.cat([s.left.joints2d, s.right.joints2d]).numpy() / 4
            inside = ((j >= 0) & (j < 64)).all(1)
            am = s.hms.flatten(1).argmax(1).numpy()
            np.testing.assert_array_equal(np.stack([am % 64, am // 64], 1)[inside], np.clip(np.round(j[inside]), 0, 63))
    assert hits / n > 0.75, hits / n      # the rest: joints hidden behind the other hand


def test_stored_heatmaps_match_joints(made, layers):
    ds = InterHandDataset(made, "train", mano_layers=layers)
    s = ds.load(4)
    for h in HANDS:
        am = s.hms[h].reshape(21, -1).argmax(1)
        j = s.hands[h]["joints2d"] * 64 / 256
        assert np.abs(np.stack([am % 64, am // 64], 1) - j).max() <= 1.0


def test_deterministic_across_workers(made, tmp_path, layers, v_color):
    make_synthetic(tmp_path / "b", 12, seed=3, layers=layers, v_color=v_color, workers=2, progress=False)
    assert _files(made) == _files(tmp_path / "b")
    for f in _files(made): assert (made / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    make_synthetic(tmp_path / "c", 2, seed=4, splits=["train"], layers=layers, v_color=v_color, progress=False)
    assert (tmp_path / "c/train/img/0.jpg").read_bytes() != (made / "train/img/0.jpg").read_bytes()


def test_resumes_partial_folder(made, tmp_path, layers, v_color, monkeypatch):
    out = tmp_path / "p"
    # a run killed half way: some samples whole, one with files missing, a stray temp file of a cut write
    make_synthetic(out, 12, seed=3, layers=layers, v_color=v_color, progress=False)
    sample_files(out, "train", 2).anno.unlink()
    for p in sample_files(out, "train", 7).hms[3:]: p.unlink()
    for i in range(8, 10):
        for p in sample_files(out, "train", i).all: p.unlink(missing_ok=True)
    (out / "train/img/.8.jpg.x1y2.tmp").write_bytes(b"half")
    calls = []
    real = syn.SyntheticGenerator.make
    monkeypatch.setattr(syn.SyntheticGenerator, "make", lambda self, split, idx: (calls.append((split, list(idx))), real(self, split, idx))[1])
    assert make_synthetic(out, 12, seed=3, layers=layers, v_color=v_color, progress=False) == {"train": 4, "val": 0, "test": 0}
    assert calls == [("train", [2, 7, 8, 9])]
    for f in _files(made): assert (made / f).read_bytes() == (out / f).read_bytes(), f
    assert json.loads((out / "synthetic.json").read_text())["counts"] == {"train": 10, "val": 1, "test": 1}
    with pytest.raises(ValueError, match="seed 3"):
        make_synthetic(out, 12, seed=5, layers=layers, v_color=v_color, progress=False)


def test_cli(tmp_path, layers, v_color, monkeypatch, capsys):
    monkeypatch.setattr("intaghand.mano.mano_layers", lambda cfg=None, device="cpu": layers)
    assert make_synthetic_main(["--out", str(tmp_path / "s"), "--n", "3", "--seed", "1", "--splits", "test",
                                "--workers", "1", "--quiet"]) == 0
    assert "test: 3 samples (3 made now)" in capsys.readouterr().out
    assert count_samples(tmp_path / "s", "test") == 3 and all(sample_complete(tmp_path / "s", "test", i) for i in range(3))
    img = cv2.imread(str(sample_files(tmp_path / "s", "test", 0).img))
    assert img.shape == (256, 256, 3)


@pytest.mark.parametrize("args, message", [
    (["--size", "8"], "--size 8: the image side"), (["--batch", "0"], "--batch 0"), (["--seed", "-1"], "--seed -1"),
    (["--fracs", "0", "0", "0"], "not all 0"), (["--fracs", "1", "nan", "1"], "finite"), (["--fracs", "1"], "1 value(s) for 3"),
    (["--workers", "0"], "--workers 0")])
def test_cli_refuses_bad_values(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as e:
        make_synthetic_main(["--out", str(tmp_path / "s"), "--n", "3", *args])
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "s").exists()                      # nothing written


def test_cli_out_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"; f.write_text("x")
    for out in (f, f / "below"):
        with pytest.raises(SystemExit):
            make_synthetic_main(["--out", str(out), "--n", "3"])
        assert f"{f} is a file, not a folder" in capsys.readouterr().err
    assert f.read_text() == "x"
