"""InterHand2.6M processing on a generated fixture: selection, crop geometry, skip report, resumability, CLI."""
import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

import intaghand.interhand as ih
from intaghand.interhand import (HANDS, camera_from_interhand, count_samples, gt_renderer, hand_labels,
                                 make_interhand_fixture, process_interhand, random_mano_layers, read_anno, sample_complete,
                                 sample_files)


@pytest.fixture(scope="module")
def layers():
    return random_mano_layers(0)


@pytest.fixture(scope="module")
def renderer(layers):
    vt = layers["right"].v_template.numpy()
    return gt_renderer(layers["right"].faces.numpy(), (vt - vt.min(0)) / (vt.max(0) - vt.min(0)))


@pytest.fixture(scope="module")
def fixture(tmp_path_factory, layers):
    root = tmp_path_factory.mktemp("ih") / "InterHand2.6M"
    truth = make_interhand_fixture(root, layers, seed=3)
    return root, truth


@pytest.fixture(scope="module")
def processed(tmp_path_factory, fixture, layers, renderer):
    src, truth = fixture
    out = tmp_path_factory.mktemp("out")
    reports = process_interhand(src, out, layers=layers, renderer=renderer, workers=2, progress=False)
    return out, reports


def _files(root):
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*") if p.is_file())


def test_fixture_is_official_structure(fixture):
    root, truth = fixture
    data = json.loads((root / "annotations/train/InterHand2.6M_train_data.json").read_text())
    assert set(data) == {"images", "annotations"} and len(data["images"]) == len(data["annotations"]) == 11
    img = data["images"][0]
    assert {"file_name", "capture", "camera", "frame_idx"} <= set(img)
    cams = json.loads((root / "annotations/train/InterHand2.6M_train_camera.json").read_text())
    cap = next(iter(cams.values()))
    assert set(cap) == {"campos", "camrot", "focal", "princpt"}
    mano = json.loads((root / "annotations/train/InterHand2.6M_train_MANO_NeuralAnnot.json").read_text())
    fit = next(iter(next(iter(mano.values())).values()))
    assert len(fit["right"]["pose"]) == 48 and len(fit["right"]["shape"]) == 10 and len(fit["right"]["trans"]) == 3


def test_report_lists_planted_bad_entries(processed, fixture):
    out, reports = processed
    _, truth = fixture
    r = reports["train"]
    assert r["kept"] == 4 and r["candidates"] == 8
    assert r["dropped"] == {"not_interacting": 1, "dark_image": 1, "no_mano_fit": 1}
    assert r["bad_count"] == 4
    got = sorted((b["file_name"], b["reason"]) for b in r["bad"])
    assert got == sorted((b["file_name"], b["reason"]) for b in truth["bad"]["train"])
    assert {b["reason"] for b in r["bad"]} == {"missing_image", "corrupt_image", "missing_annotation", "invalid_camera"}
    on_disk = json.loads((out / "process_report_train.json").read_text())
    assert on_disk["bad"] == r["bad"] and on_disk["rendered"] == 4
    assert reports["test"]["kept"] == 2 and reports["test"]["bad_count"] == 0
    assert "val" not in reports


def test_layout_and_keys(processed):
    out, _ = processed
    for split, n in (("train", 4), ("test", 2)):
        assert count_samples(out, split) == n
        for i in range(n): assert sample_complete(out, split, i)
    assert not (out / "train" / ".staging").exists()
    assert not [p for p in out.rglob("*.tmp")]
    a = read_anno(out, "train", 1)
    assert set(a) == {"inter_idx", "image", "annotation", "mano_params", "camera"} and a["inter_idx"] == 1
    for h in HANDS:
        p = a["mano_params"][h]
        assert set(p) == {"R", "pose", "shape", "trans"}
        assert [p[k].shape for k in ("R", "pose", "shape", "trans")] == [(1, 3, 3), (1, 45), (1, 10), (1, 3)]
        assert all(p[k].dtype == np.float32 for k in p)
    assert set(a["camera"]) == {"R", "t", "camera"} and a["camera"]["t"].shape == (3,)
    assert cv2.imread(str(sample_files(out, "train", 0).img)).shape == (256, 256, 3)
    assert len(list((out / "train" / "hms").glob("0_*_left.jpg"))) == 7


def test_projected_joints_land_on_the_right_pixels(processed, fixture, layers):
    out, _ = processed
    src, truth = fixture
    for split in ("train", "test"):
        cams = json.loads((src / "annotations" / split / f"InterHand2.6M_{split}_camera.json").read_text())
        on = n = 0
        for idx, want in enumerate(truth["kept"][split]):
            anno = read_anno(out, split, idx)
            assert anno["image"]["file_name"] == want["file_name"]
            K = camera_from_interhand(cams[str(anno["image"]["capture"])], str(anno["image"]["camera"]))["K"]
            K2 = anno["camera"]["camera"]
            s = K2[0, 0] / K[0, 0]; off = K2[:2, 2] - s * K[:2, 2]
            crop = cv2.imread(str(sample_files(out, split, idx).img))
            mask = cv2.imread(str(sample_files(out, split, idx).mask))
            lab = hand_labels(anno, layers)
            v = np.concatenate([lab[h]["verts2d"] for h in HANDS])
            assert (v > -0.5).all() and (v < 256).all()
            assert abs((v.max(0) - v.min(0)).max() - 204.8) < 0.5
            for h, ch, mch in (("left", 1, 2), ("right", 2, 1)):
                np.testing.assert_allclose(lab[h]["joints2d"], np.asarray(want["joints2d"][h]) * s + off, atol=0.02)
                j = np.round(lab[h]["joints2d"]).astype(int)
                px = crop[j[:, 1], j[:, 0]].astype(int)
                mine = (px[:, ch] > px[:, 3 - ch] + 30) & (px[:, ch] > px[:, 0] + 30)
                on += mine.sum(); n += len(j)
                # the rendered mask covers this hand's pixels of the crop
                c = crop.astype(int)
                seen = (c[..., ch] > c[..., 3 - ch] + 30) & (c[..., ch] > c[..., 0] + 30)
                m = mask[..., mch] > 127
                # (the fixture's painter draws edge pixels too, so its hands are a little fatter than the z-buffer's)
                assert (seen & m).sum() / m.sum() > 0.93 and (seen & m).sum() / (seen | m).sum() > 0.8
        assert on / n > 0.75, (split, on / n)


def test_killed_run_resumes_without_redoing(tmp_path, fixture, layers, renderer, processed, monkeypatch):
    src, _ = fixture
    out = tmp_path / "out"
    real = ih.process_frame
    calls = []

    def dying(task, *a, **k):
        if len(calls) == 3: raise KeyboardInterrupt("killed")
        calls.append(task.cand)
        return real(task, *a, **k)

    monkeypatch.setattr(ih, "process_frame", dying)
    with pytest.raises(KeyboardInterrupt):
        process_interhand(src, out, splits=["train"], layers=layers, renderer=renderer, workers=1, progress=False)
    staged = _files(out / "train" / ".staging")
    assert len([f for f in staged if f.endswith((".pkl", ".skip.json"))]) == 3
    assert not [f for f in staged if f.endswith(".tmp")]
    assert count_samples(out, "train") == 0
    done = list(calls)
    calls.clear()
    monkeypatch.setattr(ih, "process_frame", lambda task, *a, **k: (calls.append(task.cand), real(task, *a, **k))[1])
    r = process_interhand(src, out, splits=["train"], layers=layers, renderer=renderer, workers=1, progress=False)["train"]
    assert r["rendered"] == 4, r.get("render_failed")
    assert not set(calls) & set(done) and len(calls) == 8 - 3, "finished frames are not redone"
    ref, _ = processed
    assert _files(out / "train") == _files(ref / "train")
    for i in range(4):
        assert pickle.dumps(read_anno(out, "train", i)["mano_params"]) == pickle.dumps(read_anno(ref, "train", i)["mano_params"])
    # a killed render pass: remove some rendered files; only those samples are rendered again
    mtime = sample_files(out, "train", 0).mask.stat().st_mtime_ns
    sample_files(out, "train", 2).mask.unlink(); sample_files(out, "train", 3).hms[5].unlink()
    r = process_interhand(src, out, splits=["train"], layers=layers, renderer=renderer, workers=1, progress=False)["train"]
    assert r["rendered"] == 4 and all(sample_complete(out, "train", i) for i in range(4))
    assert sample_files(out, "train", 0).mask.stat().st_mtime_ns == mtime


def test_interrupted_renumbering_resumes(tmp_path, fixture, layers, processed, monkeypatch):
    src, _ = fixture
    out = tmp_path / "out"
    real = ih.atomic_pickle
    n = {"final": 0}

    def dying(obj, path, *a, **k):
        if Path(path).parent.name == "anno":
            if n["final"] == 2: raise KeyboardInterrupt
            n["final"] += 1
        return real(obj, path, *a, **k)

    monkeypatch.setattr(ih, "atomic_pickle", dying)
    with pytest.raises(KeyboardInterrupt):
        process_interhand(src, out, splits=["train"], layers=layers, render=False, workers=1, progress=False)
    monkeypatch.setattr(ih, "atomic_pickle", real)
    process_interhand(src, out, splits=["train"], layers=layers, render=False, workers=1, progress=False)
    ref, _ = processed
    for i in range(4):
        assert read_anno(out, "train", i)["image"] == read_anno(ref, "train", i)["image"]
        assert (sample_files(out, "train", i).img.read_bytes() == sample_files(ref, "train", i).img.read_bytes())


def test_one_bad_frame_never_stops(layers):
    task = ih.FrameTask(0, 0, "/nonexistent.jpg", {"file_name": "x.jpg", "camera": "1", "capture": 0}, {}, None, None)
    assert ih.process_frame(task, layers)["reason"] == "missing_image"
    with pytest.raises(ValueError, match="not a rotation"):
        camera_from_interhand({"campos": {"1": [0, 0, 0]}, "camrot": {"1": np.eye(3).tolist()[:2] + [[0, 0, 2]]},
                               "focal": {"1": [1, 1]}, "princpt": {"1": [0, 0]}}, "1")
    with pytest.raises(ValueError, match="missing"):
        camera_from_interhand({"campos": {}}, "1")


def test_cli(tmp_path, fixture, layers, monkeypatch, capsys):
    src, _ = fixture
    monkeypatch.setattr(ih, "mano_layers", lambda cfg=None, device="cpu": layers)
    rc = ih.process_interhand_main(["--data_path", str(src), "--save_path", str(tmp_path / "o"), "--splits", "test",
                                    "--workers", "1", "--no-render", "--quiet"])
    assert rc == 0
    assert "test: kept 2 of 2" in capsys.readouterr().out
    assert count_samples(tmp_path / "o", "test") == 2 and not sample_complete(tmp_path / "o", "test", 0)
    with pytest.raises(FileNotFoundError, match="InterHand2.6M"):
        ih.process_interhand_main(["--data_path", str(tmp_path / "nothing"), "--save_path", str(tmp_path / "o2")])
