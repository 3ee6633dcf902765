"""InterHand2.6M processing on a generated fixture: selection, crop geometry, skip report, resumability, CLI."""
import json
import os
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

import intaghand.interhand as ih
import intaghand.layout as lay
import intaghand.pool as pool
from intaghand.fixtures import make_interhand_fixture, random_mano_layers
from intaghand.interhand import camera_from_interhand, gt_renderer, process_interhand
from intaghand.layout import count_samples, hand_labels, read_anno, sample_complete, sample_files
from intaghand.mano import HANDS


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


# ---- issue 13: thread-independent bytes, gaps, strict images, recorded inputs, temporaries, clear errors, format ----

def _threads_seen(item):
    import torch
    return torch.get_num_threads(), cv2.getNumThreads()


@pytest.fixture
def two_threads():
    "The main process on two torch threads (what an unset OMP_NUM_THREADS gives on a 2-core machine)."
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(n)


def test_in_process_jobs_run_on_the_workers_thread_count(two_threads):
    import torch
    cv_before = cv2.getNumThreads()
    seen = pool.run_parallel(_threads_seen, [0, 1, 2], {}, workers=1, progress=False)
    assert seen == [(pool.JOB_THREADS, pool.JOB_THREADS)] * 3        # as in a pool worker (`_init_worker`)
    assert torch.get_num_threads() == 2 and cv2.getNumThreads() == cv_before, "thread counts restored afterwards"
    with pytest.raises(ZeroDivisionError):
        pool.run_parallel(lambda i: 1 / 0, [0], {}, workers=1, progress=False)
    assert torch.get_num_threads() == 2, "restored after an error too"


def test_one_worker_on_two_threads_writes_the_bytes_of_two_workers(tmp_path, fixture, layers, renderer, processed, two_threads):
    src, _ = fixture
    ref, _ = processed                                                # made with workers=2
    out = tmp_path / "out"
    process_interhand(src, out, splits=["test"], layers=layers, renderer=renderer, workers=1, progress=False)
    files = [f for f in _files(ref / "test")]
    assert files == _files(out / "test") and len(files) == 2 * 18
    for f in files: assert (out / "test" / f).read_bytes() == (ref / "test" / f).read_bytes(), f


def test_gap_in_the_numbering_is_indexed_and_reported(tmp_path, processed, layers, renderer, fixture):
    import shutil
    ref, _ = processed
    out = tmp_path / "out"
    shutil.copytree(ref, out)
    sample_files(out, "train", 1).anno.unlink()
    assert lay.sample_indices(out, "train") == [0, 2, 3] and lay.missing_indices([0, 2, 3]) == [1]
    assert count_samples(out, "train") == 3                          # was 1: counting stopped at the gap
    sample_files(out, "train", 3).mask.unlink()
    r = process_interhand(fixture[0], out, splits=["train"], layers=layers, renderer=renderer, workers=1, progress=False)["train"]
    assert r["missing_indices"] == [1] and r["rendered"] == 3 and sample_complete(out, "train", 3)


def test_truncated_jpeg_is_reported_not_kept(tmp_path, layers):
    root = tmp_path / "ih"
    truth = make_interhand_fixture(root, layers, seed=5, n_train=2, n_test=1)
    name = truth["kept"]["test"][0]["file_name"]
    path = root / "images" / "test" / name
    data = path.read_bytes()
    path.write_bytes(data[:len(data) * 4 // 10])                     # cut to 40 %: OpenCV decodes it with a grey lower part
    assert cv2.imread(str(path)) is not None
    r = process_interhand(root, tmp_path / "out", splits=["test"], layers=layers, render=False, workers=1, progress=False)["test"]
    assert r["kept"] == 0 and r["bad_count"] == 1
    b = r["bad"][0]
    assert b["file_name"] == name and b["reason"] == "corrupt_image" and str(path) in b["detail"] and "damaged JPEG" in b["detail"]


def test_dropped_frames_are_listed(processed, fixture):
    _, reports = processed
    _, truth = fixture
    listed = reports["train"]["dropped_frames"]
    want = {d["file_name"]: d["kind"] for d in truth["dropped"]["train"] if d["kind"] != "single_hand"}
    assert {d["file_name"]: d["reason"] for d in listed} == {n: {"one_mano_missing": "no_mano_fit", "dark": "dark_image"}[k]
                                                             for n, k in want.items()}
    miss = next(d for d in listed if d["reason"] == "no_mano_fit")
    assert "left hand" in miss["detail"] and isinstance(miss["index"], int)
    assert sum(reports["train"]["dropped"][k] for k in ("no_mano_fit", "dark_image")) == len(listed)


def _kill_after_first_frame(src, out, layers, monkeypatch):
    "Run `process_interhand` into `out` and interrupt it (KeyboardInterrupt) while cropping the second frame."
    real, calls = ih.process_frame, []
    def dying(task, *a, **k):
        if calls: raise KeyboardInterrupt
        calls.append(task.cand); return real(task, *a, **k)
    monkeypatch.setattr(ih, "process_frame", dying)
    with pytest.raises(KeyboardInterrupt):
        process_interhand(src, out, splits=["test"], layers=layers, render=False, workers=1, progress=False)
    monkeypatch.setattr(ih, "process_frame", real)


def test_resume_with_other_inputs_is_refused(tmp_path, fixture, layers, monkeypatch):
    import shutil
    src, _ = fixture
    out = tmp_path / "out"
    r = process_interhand(src, out, splits=["test"], layers=layers, render=False, workers=1, progress=False)["test"]
    assert r["inputs"]["data_path"] == str(src.resolve()) and r["inputs"]["img_size"] == 256
    assert set(r["inputs"]["hand_model"]) == {"left", "right"}
    process_interhand(src, out, splits=["test"], layers=layers, render=False, workers=1, progress=False)   # same inputs: fine
    with pytest.raises(ih.ProcessInputsError, match="right hand model differs") as e:
        process_interhand(src, out, splits=["test"], layers=random_mano_layers(1), render=False, workers=1, progress=False)
    assert "left hand model differs" in str(e.value) and str(out / "test") in str(e.value)
    other = tmp_path / "copy"
    shutil.copytree(src, other)
    with pytest.raises(ValueError, match="data_path was"):
        process_interhand(other, out, splits=["test"], layers=layers, render=False, workers=1, progress=False)
    ann = src / "annotations" / "test" / "InterHand2.6M_test_data.json"
    st = ann.stat()
    try:
        os.utime(ann, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
        with pytest.raises(ValueError, match="annotation file InterHand2.6M_test_data.json changed"):
            process_interhand(src, out, splits=["test"], layers=layers, render=False, workers=1, progress=False)
    finally: os.utime(ann, ns=(st.st_atime_ns, st.st_mtime_ns))
    # killed while cropping (staging only), resumed with another hand model: refused as well
    out2 = tmp_path / "out2"
    _kill_after_first_frame(src, out2, layers, monkeypatch)
    with pytest.raises(ih.ProcessInputsError, match="hand model differs"):
        process_interhand(src, out2, splits=["test"], layers=random_mano_layers(1), render=False, workers=1, progress=False)


def test_resume_removes_its_stale_temporaries(tmp_path, fixture, layers, monkeypatch):
    src, _ = fixture
    out = tmp_path / "out"
    _kill_after_first_frame(src, out, layers, monkeypatch)
    planted = [out / "test" / ".staging" / ".1.pkl.a1b2c3d4.tmp", out / "test" / "anno" / ".0.pkl.zz_9yy8x.tmp",
               out / ".process_report_test.json.q1w2e3r4.tmp"]
    for p in planted:
        p.parent.mkdir(parents=True, exist_ok=True); p.write_bytes(b"half a file")
    mine = out / "test" / "notes.tmp"; mine.write_text("not ours")
    process_interhand(src, out, splits=["test"], layers=layers, render=False, workers=1, progress=False)
    assert not any(p.exists() for p in planted) and mine.is_file()
    assert not [p for p in out.rglob(".*.tmp")]


class _Evil:
    def __reduce__(self): return (os.system, ("echo pwned",))


def test_malicious_and_garbage_annotations_are_one_line_errors(tmp_path, processed, layers, renderer, fixture):
    import shutil
    from intaghand.io import UnsafePickleError, atomic_pickle
    ref, _ = processed
    out = tmp_path / "out"
    shutil.copytree(ref, out)
    atomic_pickle({"x": _Evil()}, sample_files(out, "test", 0).anno)
    sample_files(out, "test", 1).anno.write_bytes(b"\x00garbage" * 20)
    with pytest.raises(UnsafePickleError) as e: read_anno(out, "test", 0)
    msg = str(e.value)
    assert str(sample_files(out, "test", 0).anno) in msg and "'posix.system'" in msg and "\n" not in msg
    with pytest.raises(lay.AnnotationError) as e: read_anno(out, "test", 1)
    assert isinstance(e.value, ValueError) and str(sample_files(out, "test", 1).anno) in str(e.value)
    atomic_pickle(["not", "a", "dict"], sample_files(out, "test", 1).anno)
    with pytest.raises(lay.AnnotationError, match="holds a list, expected a dict"): read_anno(out, "test", 1)
    anno = read_anno(ref, "test", 1); del anno["camera"]["camera"]
    atomic_pickle(anno, sample_files(out, "test", 1).anno)
    with pytest.raises(lay.AnnotationError, match="intrinsics"): read_anno(out, "test", 1)
    # the render pass lists them as failures with that one line
    for i in (0, 1): sample_files(out, "test", i).mask.unlink()
    r = process_interhand(fixture[0], out, splits=["test"], layers=layers, renderer=renderer, workers=1, progress=False)["test"]
    assert [f["idx"] for f in r["render_failed"]] == [0, 1] and "posix.system" in r["render_failed"][0]["error"]


def test_malicious_mano_file_is_one_line_from_the_cli(tmp_path, fixture, capsys):
    from intaghand.cli import main
    from intaghand.io import atomic_pickle
    mano = tmp_path / "mano"
    for side in ("RIGHT", "LEFT"): atomic_pickle({"x": _Evil()}, mano / f"MANO_{side}.pkl")
    (tmp_path / "cfg.yaml").write_text(f"MISC:\n  MANO_PATH: {mano}\n  HAND_MODEL: mano\n")
    rc = main(["process-interhand", "--data_path", str(fixture[0]), "--save_path", str(tmp_path / "o"), "--cfg",
               str(tmp_path / "cfg.yaml"), "--no-render", "--quiet", "--workers", "1"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1, err
    assert "'posix.system'" in err and "MANO_" in err and str(mano) in err and "Traceback" not in err


def test_stored_like_the_original(processed, tmp_path):
    out, _ = processed
    a = read_anno(out, "train", 0)
    assert a["camera"]["camera"].dtype == np.float64                 # the crop intrinsics, as the original's
    assert a["camera"]["R"].dtype == np.float32 and a["camera"]["t"].dtype == np.float32
    for kind in ("mask", "dense"):
        im = cv2.imread(str(getattr(sample_files(out, "train", 0), kind)))
        m = cv2.imread(str(sample_files(out, "train", 0).mask))
        far = cv2.erode(((m[..., 1] < 128) & (m[..., 2] < 128)).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
        assert far.mean() > 0.2 and np.median(im[far]) == lay.GT_BACKGROUND, kind   # PyTorch3D's white (1.0) over 255
        assert (np.abs(im[far].astype(int) - lay.GT_BACKGROUND) <= 1).mean() > 0.95, kind   # (JPEG ringing near the hands)
    # write_sample gives any writer (processing, synthetic) that background, without changing the caller's arrays
    mask = np.zeros((64, 64, 3), np.uint8); mask[10:30, 10:30, 2] = 255; mask[30:50, 30:50, 1] = 255
    dense = np.zeros((64, 64, 3), np.uint8); dense[mask[..., 1:].any(-1)] = 200
    lay.write_sample(tmp_path, "s", 0, mask=mask, dense=dense)
    assert mask[0, 0].tolist() == [0, 0, 0] and dense[0, 0].tolist() == [0, 0, 0]
    m2, d2 = cv2.imread(str(sample_files(tmp_path, "s", 0).mask)), cv2.imread(str(sample_files(tmp_path, "s", 0).dense))
    for im in (m2, d2): assert np.abs(im[56:, :16].astype(int) - 1).max() <= 1      # (a JPEG block away from the hands)
    assert m2[20, 20, 2] > 240 and m2[20, 20, 1] < 15 and m2[40, 40, 1] > 240 and abs(int(d2[40, 40, 0]) - 200) < 6
    with pytest.raises(ValueError, match="with its mask"): lay.write_sample(tmp_path, "s", 1, dense=dense)
