"""The demo CLI on a folder of good and bad images, overlays against the JSON, videos, the live mode's errors."""
import copy
import json
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from intaghand import demo as D, demo_cli as C, demo_output as O, demo_result as R, video as V
from intaghand.detect import Detection, HandBox
from intaghand.inference import Reconstructor
from intaghand.mano import HANDS

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return D.small_checkpoint(tmp_path_factory.mktemp("ckpt"))


def _scene(h, w, seed=0):
    "A plain dark picture with two skin-coloured blobs (simple drawn 'hands')."
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 40, np.uint8)
    for cx in (0.38, 0.62):
        c = (int(cx * w), int(0.5 * h))
        cv2.ellipse(img, c, (max(2, w // 9), max(2, h // 5)), int(rng.integers(0, 180)), 0, 360, (140, 170, 220), -1)
    return img


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    "A folder with good inputs and every kind of bad one; returns (folder, {name: expectation})."
    d = tmp_path_factory.mktemp("inputs")
    good = _scene(120, 160)
    cv2.imwrite(str(d / "good.png"), good)
    cv2.imwrite(str(d / "square.jpg"), _scene(96, 96, 1))
    ok, jpg = cv2.imencode(".jpg", _scene(100, 100, 2))
    (d / "truncated.jpg").write_bytes(jpg.tobytes()[: len(jpg) // 2])
    (d / "notes.png").write_text("this is a text file with an image's name\n")
    cv2.imwrite(str(d / "deep16.png"), good.astype(np.uint16) * 257)
    cv2.imwrite(str(d / "alpha.png"), np.dstack([good, np.full(good.shape[:2], 200, np.uint8)]))
    cv2.imwrite(str(d / "gray.png"), cv2.cvtColor(good, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(d / "tiny.png"), good[:5, :5])
    cv2.imwrite(str(d / "large.jpg"), _scene(3000, 4000, 3), [cv2.IMWRITE_JPEG_QUALITY, 70])
    (d / "readme.txt").write_text("not an input")
    sample = ROOT / "data" / "demo" / "crop_0.jpg"
    if sample.is_file(): (d / "synthetic.jpg").write_bytes(sample.read_bytes())     # a synthetic render
    return d


@pytest.fixture(scope="module")
def run(inputs, ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    rc = C.demo_main(["--img_path", str(inputs), "--save_path", str(out), "--model", str(ckpt), "--no-detect",
                      "--render_size", "96"])
    return rc, out, json.loads((out / "summary.json").read_text())


def test_folder_summary_counts(run, inputs):
    rc, out, s = run
    n_good = 6 + (inputs / "synthetic.jpg").is_file()
    assert rc == 1                                   # some inputs failed
    assert (s["images"], s["succeeded"], s["failed"]) == (n_good + 3, n_good, 3)
    assert s["ignored_files"] == 1
    reasons = {Path(f["input"]).name: f["reason"] for f in s["failures"]}
    assert reasons["truncated.jpg"].startswith(("damaged JPEG", "not a readable JPEG"))
    assert reasons["notes.png"].startswith("not an image")
    assert reasons["tiny.png"].startswith("too small: 5×5")
    notes = {Path(r["input"]).name: r["notes"] for r in s["results"] if r["status"] == "ok"}
    assert "16-bit image scaled to 8 bits" in notes["deep16.png"]
    assert "alpha channel composited over black" in notes["alpha.png"]
    assert "grayscale image converted to colour" in notes["gray.png"]
    assert s["detection"] == {"disabled": n_good}


def test_outputs_exist_and_json(run):
    rc, out, s = run
    for r in s["results"]:
        if r["status"] != "ok": continue
        for kind in ("overlay", "views", "json", "obj", "ply", "glb"):
            p = Path(r["outputs"][kind])
            assert p.is_file() and p.stat().st_size > 0, p
    assert not list(out.glob(".*"))                  # no temporary files left behind
    d = json.loads((out / "large.json").read_text())
    assert d["image_size"] == {"width": 4000, "height": 3000}
    assert d["crop"] == {"box_xyxy": [0, -500, 4000, 3500], "source": "whole_image"}
    for side in ("left", "right"):
        h = d[side]
        assert np.asarray(h["verts3d"]).shape == (778, 3) and np.asarray(h["verts2d"]).shape == (778, 2)
        assert np.asarray(h["joints3d"]).shape == (21, 3) and np.asarray(h["joints2d"]).shape == (21, 2)
        a, b = h["pixel_affine"]["a"], np.asarray(h["pixel_affine"]["b"])
        assert np.allclose(a * np.asarray(h["verts3d"])[:, :2] + b, h["verts2d"], atol=0.02)
    ov = cv2.imread(str(out / "large_output.jpg"))
    assert ov.shape == (3000, 4000, 3)
    assert cv2.imread(str(out / "large_views.jpg")).shape == (96, 192, 3)


def test_overlay_puts_hands_where_json_says(run, inputs):
    rc, out, s = run
    for name in ("good", "large"):
        src = cv2.imread(str(next(inputs.glob(f"{name}.*")))).astype(int)
        ov = cv2.imread(str(out / f"{name}_output.jpg")).astype(int)
        d = json.loads((out / f"{name}.json").read_text())
        H, W = src.shape[:2]
        changed = np.abs(ov - src).sum(-1) > 60
        uv = np.concatenate([d["left"]["verts2d"], d["right"]["verts2d"]])
        p = np.round(uv).astype(int)
        inside = (p[:, 0] >= 0) & (p[:, 0] < W) & (p[:, 1] >= 0) & (p[:, 1] < H)
        assert inside.sum() > 100
        assert changed[p[inside, 1], p[inside, 0]].mean() > 0.9          # vertices land on rendered pixels
        ys, xs = np.nonzero(changed)                                      # ... and nothing is drawn elsewhere
        tol = 3 + (2 if name == "good" else 0)
        assert xs.min() >= uv[:, 0].min() - tol and xs.max() <= uv[:, 0].max() + tol
        assert ys.min() >= uv[:, 1].min() - tol and ys.max() <= uv[:, 1].max() + tol


def test_meshes_round_trip(run):
    from intaghand.meshes import load_mesh
    rc, out, s = run
    d = json.loads((out / "good.json").read_text())
    for ext in ("obj", "ply", "glb"):
        v, f, c = load_mesh(out / f"good.{ext}")
        assert v.shape == (1556, 3) and f.shape[1] == 3 and c is not None
        if ext != "glb":                       # GLB may reorder nothing but stores float32 in its own frame
            assert np.allclose(v[:778], d["left"]["verts3d"], atol=1e-4)


def test_one_hand_and_no_hand_are_reported(ckpt, tmp_path):
    rec = Reconstructor.from_checkpoint(ckpt)
    one = lambda im: Detection([HandBox((30, 20, 80, 90), 0.9, "left", 0.95)], im.shape[:2], "fake")
    none = lambda im: Detection([], im.shape[:2], "fake")
    img = _scene(120, 160)
    cv2.imwrite(str(tmp_path / "a.png"), img)
    for det, status, hands_found in ((one, "one_hand", 1), (none, "no_hands", 0)):
        demo = D.Demo(rec, det, formats=(), render_size=32)
        r = demo.run_file(tmp_path / "a.png", tmp_path / status, "a")
        assert r["status"] == "ok" and r["detection"] == status
        d = json.loads((tmp_path / status / "a.json").read_text())
        assert d["hands_found"] == hands_found and d["detection"]["result"]["status"] == status
        if status == "one_hand":
            assert d["left"]["detected"] is True and d["right"]["detected"] is False
            x0, y0, x1, y1 = d["crop"]["box_xyxy"]
            assert x1 - x0 == y1 - y0 == 88 and d["crop"]["source"] == "detector"
            assert "only one hand" in d["warnings"][0]
        else:
            assert d["crop"]["source"] == "whole_image" and "no hand found" in d["warnings"][0]
            assert d["left"]["detected"] is False and d["right"]["detected"] is False


def test_video_round_trip(ckpt, tmp_path):
    src = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"MJPG"), 12.0, (128, 96))
    assert w.isOpened()
    for k in range(4): w.write(_scene(96, 128, k))
    w.release()
    out = tmp_path / "out"
    rc = C.demo_main(["--video", str(src), "--save_path", str(out), "--model", str(ckpt), "--no-detect"])
    assert rc == 0
    res = out / "clip_output.mp4"
    cap = cv2.VideoCapture(str(res))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok: break
        frames.append(f)
    cap.release()
    assert len(frames) == 4 and frames[0].shape == (96, 128, 3)
    meta = json.loads(res.with_suffix(".json").read_text())
    assert meta["frames"] == 4 and meta["succeeded"] == 4 and len(meta["per_frame"]) == 4
    assert meta["per_frame"][0]["crop_box_xyxy"] == [0, -16, 128, 112]
    assert not list(out.glob(".*partial*"))


def test_video_errors(ckpt, tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    assert C.demo_main(["--video", str(bad), "--save_path", str(tmp_path), "--model", str(ckpt), "--no-detect"]) == 1
    err = capsys.readouterr().err
    assert "bad.mp4" in err and ("cannot open" in err or "no readable frames" in err)
    assert C.demo_main(["--video", str(tmp_path / "missing.mp4"), "--model", str(ckpt), "--no-detect"]) == 1
    assert "video file not found" in capsys.readouterr().err


def test_missing_camera(ckpt, tmp_path, capsys):
    rc = C.demo_main(["--live_demo", "--camera", "97", "--save_path", str(tmp_path / "live.mp4"), "--model", str(ckpt),
                      "--no-detect"])
    assert rc == 1 and "no camera at index 97" in capsys.readouterr().err
    assert not (tmp_path / "live.mp4").exists()


def test_live_without_window_says_why(ckpt, monkeypatch, capsys):
    monkeypatch.setattr(V, "gui_available", lambda: (False, "this OpenCV has no window support: record with --save_path"))
    assert C.demo_main(["--live_demo", "--model", str(ckpt), "--no-detect"]) == 1
    assert "cannot show a window" in capsys.readouterr().err


def test_live_records_frames(ckpt, tmp_path, monkeypatch):
    "A fake camera: --live_demo --save_path records the overlays to a video."
    class FakeCam:
        def __init__(self, idx): self.n = 0
        def isOpened(self): return True
        def set(self, *a): return True
        def read(self):
            self.n += 1
            return (self.n <= 6), _scene(90, 120, self.n)
        def release(self): pass
    monkeypatch.setattr(V.cv2, "VideoCapture", FakeCam)
    monkeypatch.setattr(V, "gui_available", lambda: (False, "headless"))
    out = tmp_path / "live.avi"
    assert C.demo_main(["--live_demo", "--save_path", str(out), "--model", str(ckpt), "--no-detect", "--max_frames", "3"]) == 0
    monkeypatch.undo()
    cap = cv2.VideoCapture(str(out)); n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)); cap.release()
    assert n == 3


def test_bad_arguments(ckpt, tmp_path, capsys):
    assert C.demo_main(["--img_path", str(tmp_path / "nothing"), "--model", str(ckpt), "--no-detect"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert C.demo_main(["--img_path", str(tmp_path), "--model", str(tmp_path / "none.pth")]) == 1
    assert "not found" in capsys.readouterr().err
    assert C.demo_main(["--img_path", str(tmp_path), "--model", str(ckpt), "--formats", "stl"]) == 1
    assert "unknown" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert C.demo_main(["--img_path", str(tmp_path / "empty"), "--model", str(ckpt), "--no-detect"]) == 1
    assert "no images found" in capsys.readouterr().err


def test_default_img_path_is_shipped():
    p = D.default_img_path()
    files, _ = D.list_images(p)
    assert files and all(f.suffix.lower() in D.IMAGE_SUFFIXES for f in files)
    assert (ROOT / "data" / "demo").is_dir() and sum(f.stat().st_size for f in (ROOT / "data" / "demo").iterdir()) < 2e6


def test_detector_unavailable_falls_back(ckpt, tmp_path, monkeypatch, capsys):
    import intaghand.detect as det
    monkeypatch.setattr(det, "detector_dirs", lambda: [tmp_path / "no_models"])
    cv2.imwrite(str(tmp_path / "a.png"), _scene(64, 64))
    rc = C.demo_main(["--img_path", str(tmp_path / "a.png"), "--save_path", str(tmp_path / "o"), "--model", str(ckpt),
                      "--formats", "none"])
    assert rc == 0 and "hand detection off" in capsys.readouterr().out
    d = json.loads((tmp_path / "o" / "a.json").read_text())
    assert d["detection"]["status"] == "unavailable" and "not installed" in d["detection"]["reason"]
    rc = C.demo_main(["--img_path", str(tmp_path / "a.png"), "--save_path", str(tmp_path / "o"), "--model", str(ckpt),
                      "--detect"])
    assert rc == 1 and "install_detector_models" in capsys.readouterr().err


def test_video_keeps_previous_crop_when_hands_are_lost(ckpt, tmp_path):
    src = _clip(tmp_path / "clip.avi", 3, (128, 96))
    calls = []

    def first_only(image):
        calls.append(1)
        hands = [HandBox((40, 20, 90, 70), 0.9, "right", 0.9)] if len(calls) == 1 else []
        return Detection(hands, image.shape[:2], "fake")
    demo = D.Demo(Reconstructor.from_checkpoint(ckpt), first_only, formats=())
    s = V.run_video(demo, src, tmp_path / "out.avi")
    frames = s["per_frame"]
    assert [f["crop_source"] for f in frames] == ["detector", "previous_frame", "previous_frame"]
    assert [f["detection"] for f in frames] == ["one_hand", "no_hands", "no_hands"]
    assert frames[0]["crop_box_xyxy"] == frames[2]["crop_box_xyxy"] and (tmp_path / "out.avi").is_file()


# --- issue 13: wrong results that exited 0, unclear errors, sizes, names, leftovers, interruptions -------------

def _cfg_file(tmp_path, ckpt, name="over.yaml", **values):
    "A copy of the checkpoint's YAML with `values` ({'MODEL.NUM_HEADS': 2}) changed."
    import yaml
    d = yaml.safe_load(Path(ckpt).with_suffix(".yaml").read_text())
    for k, v in values.items():
        sec, key = k.split(".")
        d[sec][key] = v
    p = tmp_path / name
    p.write_text(yaml.safe_dump(d))
    return p


def _one_image(folder, name="a.png", seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / name), _scene(64, 80, seed))
    return folder / name


def test_missing_mano_files_is_an_error_not_a_toy_mesh(ckpt, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    cfg = _cfg_file(tmp_path, ckpt, **{"MISC.MANO_PATH": str(tmp_path / "empty")})
    img = _one_image(tmp_path / "in")
    rc = C.demo_main(["--img_path", str(img), "--save_path", str(tmp_path / "out"), "--model", str(ckpt), "--cfg", str(cfg),
                      "--no-detect", "--formats", "none"])
    err = capsys.readouterr().err
    assert rc == 1
    assert (f"intaghand demo: error: hand model for the right hand: neither MANO_RIGHT.pkl (real MANO) nor "
            f"OPENHAND_RIGHT.pkl (embedded hand model) in MISC.MANO_PATH '{tmp_path / 'empty'}' not found "
            f"(looked in: {tmp_path / 'empty'})") in err
    assert not list((tmp_path / "out").glob("*.json"))           # nothing written with a stand-in mesh
    with pytest.raises(FileNotFoundError, match="OPENHAND_RIGHT.pkl"):
        D.Demo(Reconstructor.from_checkpoint(ckpt, cfg=cfg, joint_regressor=None), formats=())


def test_recursive_folder_keeps_sub_paths(ckpt, tmp_path):
    src = tmp_path / "in"
    _one_image(src / "a" / "img", "0.jpg", seed=1); _one_image(src / "b" / "img", "0.jpg", seed=2)
    out = tmp_path / "out"
    assert C.demo_main(["--img_path", str(src), "--save_path", str(out), "--model", str(ckpt), "--no-detect",
                        "--formats", "none", "--render_size", "32"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert [r["name"] for r in s["results"]] == ["a/img/0", "b/img/0"]
    for part in ("a", "b"):
        d = json.loads((out / part / "img" / "0.json").read_text())
        assert d["input"] == str(src / part / "img" / "0.jpg")
        assert (out / part / "img" / "0_output.jpg").is_file() and (out / part / "img" / "0_views.jpg").is_file()
    a, b = (json.loads((out / p / "img" / "0.json").read_text())["left"]["verts2d"] for p in ("a", "b"))
    assert a != b                                                 # two images, two results
    assert D._unique_names([src / "x.jpg", src / "x.png", src / "s" / "x.jpg"], src) == ["x_jpg", "x_png", "s/x"]


def test_cfg_cannot_change_the_checkpoint_network(ckpt, tmp_path, capsys):
    img = _one_image(tmp_path / "in")
    cfg = _cfg_file(tmp_path, ckpt, **{"MODEL.NUM_HEADS": 2})
    base = ["--img_path", str(img), "--model", str(ckpt), "--no-detect", "--formats", "none", "--render_size", "32"]
    assert C.demo_main(base + ["--save_path", str(tmp_path / "plain")]) == 0
    capsys.readouterr()
    assert C.demo_main(base + ["--save_path", str(tmp_path / "cfg"), "--cfg", str(cfg)]) == 0
    io = capsys.readouterr()
    msg = (f"config differs from {Path(ckpt).with_suffix('.yaml')} in MODEL.NUM_HEADS: checkpoint 4, given 2; using the "
           "checkpoint's values (--force_cfg / force_cfg=True uses the given ones)")
    assert f"intaghand demo: warning: {msg}" in io.err and f"warning: {msg}" in io.out       # printed and in the summary
    assert json.loads((tmp_path / "cfg" / "summary.json").read_text())["config_warnings"] == [msg]
    v = lambda d: json.loads((tmp_path / d / "a.json").read_text())["left"]["verts3d"]
    assert v("cfg") == v("plain")
    assert C.demo_main(base + ["--save_path", str(tmp_path / "forced"), "--cfg", str(cfg), "--force_cfg"]) == 0
    assert "using the given values (forced)" in capsys.readouterr().err and v("forced") != v("plain")


def _immutable(path: Path) -> bool:
    import subprocess
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0: path.chmod(0o555)
    try: (path / ".probe").touch()
    except OSError: return True
    (path / ".probe").unlink()
    return False


def test_save_path_errors_are_one_line(ckpt, tmp_path, capsys):
    import subprocess
    img = _one_image(tmp_path / "in")
    f = tmp_path / "a_file"; f.write_text("x")
    base = ["--img_path", str(img), "--model", str(ckpt), "--no-detect", "--formats", "none"]
    cases = [(f, f"--save_path {f}: it is a file, not a folder"),
             (f / "out", f"--save_path {f / 'out'}: {f} is a file, not a folder, so no folder can be made under it")]
    for save, msg in cases:
        assert C.demo_main(base + ["--save_path", str(save)]) == 1
        assert capsys.readouterr().err == f"intaghand demo: error: {msg}\n"
    vid = tmp_path / "v.avi"; vid.write_bytes(b"")
    assert C.demo_main(["--video", str(vid), "--save_path", str(f / "x.mp4"), "--model", str(ckpt), "--no-detect"]) == 1
    assert capsys.readouterr().err == f"intaghand demo: error: --save_path {f}: it is a file, not a folder\n"
    ro = tmp_path / "ro"; ro.mkdir()
    if not _immutable(ro): pytest.skip("cannot make a read-only folder here")
    try:
        assert C.demo_main(base + ["--save_path", str(ro)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"intaghand demo: error: --save_path {ro}: the folder is not writable (") and err.count("\n") == 1
    finally:
        subprocess.run(["chattr", "-i", str(ro)], capture_output=True); ro.chmod(0o755)


def test_sizes_are_checked_before_allocating(ckpt, tmp_path, capsys):
    import struct, zlib
    img = _one_image(tmp_path / "in", "good.png")
    assert C.demo_main(["--img_path", str(img), "--render_size", "100000", "--model", str(ckpt), "--no-detect"]) == 1
    assert capsys.readouterr().err == ("intaghand demo: error: --render_size 100000: the side of each views panel must "
                                       "be 16..4096 px (the views image is 2 panels wide)\n")
    with open(tmp_path / "in" / "huge_file.jpg", "wb") as fh: fh.truncate(40 << 30)     # 40 GB, sparse: never read
    chunk = lambda t, b: struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b))
    (tmp_path / "in" / "huge_pixels.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(
        ">IIBBBBB", 50000, 50000, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    out = tmp_path / "out"
    rc = C.demo_main(["--img_path", str(tmp_path / "in"), "--save_path", str(out), "--model", str(ckpt), "--no-detect",
                      "--formats", "none", "--render_size", "32"])
    assert rc == 1
    s = json.loads((out / "summary.json").read_text())                                  # the summary is still written
    assert (s["images"], s["succeeded"], s["failed"]) == (3, 1, 2)
    reasons = {Path(r["input"]).name: r["reason"] for r in s["failures"]}
    assert reasons["huge_file.jpg"] == ("file too large: 40,960 MB is over the 512 MB limit for an image file "
                                        "(--max_file_mb); is it an image?")
    assert reasons["huge_pixels.png"] == ("too large: 50000×50000 px (2,500 MP) is over the 64 MP limit (--max_pixels); "
                                          "downscale it or raise the limit")


def test_skipped_inputs_are_named(ckpt, tmp_path, capsys):
    src = tmp_path / "in"
    _one_image(src, "a.png"); _one_image(src, "._a.png"); _one_image(src, "old_output.jpg")
    (src / "gone.jpg").symlink_to(src / "deleted.jpg"); (src / "loop.jpg").symlink_to(src / "loop.jpg")
    out = tmp_path / "out"
    assert C.demo_main(["--img_path", str(src), "--save_path", str(out), "--model", str(ckpt), "--no-detect",
                        "--formats", "none", "--render_size", "32"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["images"] == 1 and [(Path(r["input"]).name, r["reason"]) for r in s["skipped"]] == [
        ("._a.png", "hidden file (its name starts with '.')"), ("gone.jpg", f"broken symbolic link (its target {src / 'deleted.jpg'} does not exist)"),
        ("loop.jpg", "symbolic link loop (the link leads back to itself)"), ("old_output.jpg", "an output of the demo (*_output.*)")]
    printed = capsys.readouterr().out
    assert "skipped 4 input(s):" in printed and f"{src / 'loop.jpg'}: symbolic link loop" in printed


def _clip(path, n=4, size=(96, 64)):
    "An MJPG clip of `n` synthetic frames, `size` = (width, height), 10 fps."
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
    for k in range(n): w.write(_scene(size[1], size[0], k))
    w.release()
    return path


def test_stale_partials_and_temps_are_removed(ckpt, tmp_path):
    import os, time
    out = tmp_path / "out"; out.mkdir()
    old = time.time() - 3600
    for name in (".clip_output.partial.mp4", ".other_output.partial.avi", ".a.json.abcd1234.tmp"):
        (out / name).write_bytes(b"left by a killed run"); os.utime(out / name, (old, old))
    (out / ".busy_output.partial.mp4").write_bytes(b"being written right now")
    logs = []
    V.run_video(D.Demo(Reconstructor.from_checkpoint(ckpt), formats=()), _clip(tmp_path / "clip.avi"), out, log=logs.append)
    assert not (out / ".clip_output.partial.mp4").exists() and not (out / ".other_output.partial.avi").exists()
    assert (out / ".busy_output.partial.mp4").exists() and (out / "clip_output.mp4").is_file()
    assert any(".other_output.partial.avi" in m for m in logs)
    _one_image(tmp_path / "in")
    D.Demo(Reconstructor.from_checkpoint(ckpt), formats=(), render_size=32).run_images(tmp_path / "in", out, log=logs.append)
    assert not (out / ".a.json.abcd1234.tmp").exists() and (out / "a.json").is_file()


def test_interrupted_video_exits_130_and_says_partial(ckpt, tmp_path, monkeypatch, capsys):
    calls, real = [], V._track
    def track(*a, **k):
        calls.append(1)
        if len(calls) == 3: raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(V, "_track", track)
    out = tmp_path / "out.avi"
    rc = C.demo_main(["--video", str(_clip(tmp_path / "clip.avi", 6)), "--save_path", str(out), "--model", str(ckpt),
                      "--no-detect"])
    err = capsys.readouterr().err
    assert rc == 130
    assert (f"intaghand demo: interrupted after 2 of 6 frames: {out.resolve()} is partial (holds only those frames; the "
            "JSON beside it says interrupted). Run the same command again to process the whole video.") in err
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["interrupted"] is True and meta["complete"] is False and meta["frames"] == 2


def test_interrupted_images_exit_130_with_summary(ckpt, tmp_path, monkeypatch, capsys):
    src = tmp_path / "in"
    for k in range(3): _one_image(src, f"{k}.png", k)
    calls, real = [], D.Demo.run_file
    def run_file(self, *a, **k):
        calls.append(1)
        if len(calls) == 2: raise KeyboardInterrupt
        return real(self, *a, **k)
    monkeypatch.setattr(D.Demo, "run_file", run_file)
    out = tmp_path / "out"
    rc = C.demo_main(["--img_path", str(src), "--save_path", str(out), "--model", str(ckpt), "--no-detect",
                      "--formats", "none", "--render_size", "32"])
    assert rc == 130 and "interrupted after 1 image(s); 2 not processed" in capsys.readouterr().err
    s = json.loads((out / "summary.json").read_text())
    assert s["interrupted"] is True and s["succeeded"] == 1 and s["not_processed"] == 2


# --- issue 17: video between detections, smoothing, per-stage times ------------------------------------------

def test_video_tracks_between_detections_and_times_each_stage(ckpt, tmp_path):
    src = _clip(tmp_path / "clip.avi", 5, (128, 96))
    calls = []

    def two(image):
        calls.append(1)
        return Detection([HandBox((20, 20, 60, 70), 0.9, "left", 0.9), HandBox((60, 20, 100, 70), 0.9, "right", 0.9)],
                         image.shape[:2], "fake")
    demo = D.Demo(Reconstructor.from_checkpoint(ckpt), two, formats=())
    s = V.run_video(demo, src, tmp_path / "out.avi", detect_every=3)
    frames = s["per_frame"]
    assert len(calls) == 2 and [f["crop_source"] for f in frames] == ["detector", "tracked", "tracked", "detector", "tracked"]
    assert all(f["detection"] == "two_hands" for f in frames)
    for f in frames:
        assert set(f["timing_ms"]) == set(V.STREAM_STAGES) and f["timing_ms"]["model"] > 0
    assert frames[0]["timing_ms"]["detect"] > 0 and frames[1]["timing_ms"]["detect"] == 0
    st = s["stage_ms"]
    assert st["total"] == pytest.approx(sum(st[k] for k in V.STREAM_STAGES), abs=0.05) and s["detect_every"] == 3
    # a tracked frame crops around the previous frame's predicted hands, as a detection of them would
    box = V.tracked_box(R.reconstruct(demo.rec, _scene(96, 128, 0), two), (96, 128), demo.fill)
    assert box[2] - box[0] == box[3] - box[1] > 0
    with pytest.raises(ValueError, match="detect_every"):
        V.run_video(demo, src, tmp_path / "out2.avi", detect_every=0)


def test_smoothing_keeps_2d_and_3d_consistent_and_damps_jitter(ckpt):
    rec = Reconstructor.from_checkpoint(ckpt)
    base = R.reconstruct(rec, _scene(96, 128, 0), box=(0, -16, 128, 112))
    sm = V.ResultSmoother(min_cutoff=1.0, beta_3d=0.0, beta_px=0.0)
    rng = np.random.default_rng(0)
    shifts = []
    for k in range(60):
        r = copy.deepcopy(base)
        for s in HANDS:
            h = r.hand(s)
            h.verts3d = h.verts3d + rng.normal(0, 0.01, h.verts3d.shape)            # per-frame jitter
            h.affine = (h.affine[0], np.asarray(h.affine[1]) + rng.normal(0, 3, 2))
        sm(r, k / 30)
        h = r.left
        assert np.allclose(h.verts2d, h.affine[0] * h.verts3d[:, :2] + h.affine[1])
        shifts.append(np.asarray(h.affine[1]) - np.asarray(base.left.affine[1]))
    assert np.std(np.array(shifts[20:]), axis=0).max() < 1.5                        # raw jitter: 3 px


def test_smooth_and_detect_every_flags(ckpt, tmp_path, capsys):
    src = _clip(tmp_path / "clip.avi", 3)
    out = tmp_path / "out.avi"
    assert C.demo_main(["--video", str(src), "--save_path", str(out), "--model", str(ckpt), "--no-detect", "--smooth"]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["smoothing"] is True and meta["frames"] == 3
    assert C.demo_main(["--video", str(src), "--save_path", str(out), "--model", str(ckpt), "--detect_every", "0"]) == 1
    assert "--detect_every must be ≥ 1" in capsys.readouterr().err


def test_painted_overlay_covers_the_rendered_overlays_pixels(tmp_path):
    "The live view's painter and the image demo's z-buffer renderer colour the same pixels (the embedded model)."
    rec = Reconstructor.embedded()
    demo = D.Demo(rec, None, formats=())
    img = cv2.imread(str(sorted((D.PROJECT_ROOT / "data/synthetic_samples/test/img").glob("*.jpg"))[0]))
    frame = np.zeros((300, 400, 3), np.uint8); frame[22:278, 72:328] = img
    res = R.reconstruct(rec, frame, None)
    painted = np.abs(O.paint_overlay(res, demo.faces).astype(int) - frame).sum(-1) > 0
    rendered = np.abs(O.render_overlay(res, demo.faces, demo.renderer).astype(int) - frame).sum(-1) > 0
    assert rendered.sum() > 1000
    assert (painted & rendered).sum() / (painted | rendered).sum() > 0.9
    change = lambda: np.abs(O.paint_overlay(res, demo.faces).astype(int) - frame).sum()
    res.left.detected = None; solid = change()
    res.left.detected = False; faint = change()       # a hand the detector did not confirm is drawn faint
    assert faint < 0.9 * solid


def test_video_overlay_choice(ckpt, tmp_path):
    demo = D.Demo(Reconstructor.from_checkpoint(ckpt), formats=())
    src = _clip(tmp_path / "clip.avi", 2, (96, 96))
    s = V.run_video(demo, src, tmp_path / "r.avi", overlay="render")
    assert s["overlay"] == "render" and s["succeeded"] == 2
    with pytest.raises(ValueError, match="overlay"):
        V.run_video(demo, src, tmp_path / "x.avi", overlay="raytrace")


def test_pipelined_video_with_a_lagging_detector_writes_what_the_plain_loop_writes(ckpt, tmp_path):
    "Threads change when a stage runs, not what it computes: the detector 1 frame behind, the same frames either way."
    src = _clip(tmp_path / "clip.avi", 6, (128, 96))
    seen = []

    def drifting(image):                      # a box that moves with the frame's content (its brightest column)
        seen.append(threading.current_thread().name)
        x = int(np.argmax(image.astype(np.int64).sum((0, 2)))) % 60
        return Detection([HandBox((10 + x, 20, 60 + x, 70), 0.9, "right", 0.9)], image.shape[:2], "fake")
    demo = D.Demo(Reconstructor.from_checkpoint(ckpt, build_after=0), drifting, formats=())
    runs = {p: V.run_video(demo, src, tmp_path / f"out_{p}.avi", detect_every=2, detect_lag=1, pipeline=p) for p in (False, True)}
    strip = lambda s: [{k: v for k, v in f.items() if k != "timing_ms"} for f in s["per_frame"]]
    assert strip(runs[True]) == strip(runs[False]) and runs[True]["pipeline"] and runs[True]["detect_lag"] == 1
    assert [f["crop_source"] for f in runs[True]["per_frame"]] == ["detector", "tracked", "tracked", "detector", "tracked", "detector"]
    assert seen and all(n.startswith("intaghand-detect") for n in seen)     # the detector ran in its own thread only
    frames = {}
    for p in (False, True):
        cap = cv2.VideoCapture(runs[p]["output"]); frames[p] = []
        while True:
            ok, f = cap.read()
            if not ok: break
            frames[p].append(f[32:])                          # below the status line (its FPS differs) and its JPEG blocks
        cap.release()
    assert len(frames[True]) == 6 and all(np.array_equal(a, b) for a, b in zip(frames[False], frames[True]))


def test_video_follows_found_hands_with_the_landmark_model_by_default(ckpt, tmp_path):
    "The command tracks the hands between palm detections (MediaPipe's way); --no-tracking runs the palm model each time."
    wild = cv2.imread(str(ROOT / "data" / "demo" / "wild_1.jpg"))
    src = tmp_path / "two.avi"
    w = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (640, 480))
    for k in range(7):                                   # the two hands of wild_1 moving 3 px a frame
        w.write(cv2.warpAffine(wild, np.float32([[1, 0, 3 * k], [0, 1, 0]]), (640, 480), borderMode=cv2.BORDER_REPLICATE))
    w.release()
    meta = {}
    for flag in ([], ["--no-tracking"]):
        out = tmp_path / f"out{len(flag)}"
        rc = C.demo_main(["--video", str(src), "--save_path", str(out), "--model", str(ckpt), "--detect_every", "2",
                          "--no-pipeline", "--detect_lag", "0", *flag])
        assert rc == 0
        meta[bool(flag)] = json.loads((out / "two_output.json").read_text())
    tracked, palm = meta[False], meta[True]
    assert tracked["track_landmarks"] is True and palm["track_landmarks"] is False
    assert tracked["detector_calls"] == 4 and tracked["tracked_calls"] >= 2 and palm["detector_calls"] == 0
    for a, b in zip(tracked["per_frame"], palm["per_frame"]):
        assert a["crop_source"] == b["crop_source"] and a["detection"] == "two_hands"
        assert np.abs(np.subtract(a["crop_box_xyxy"], b["crop_box_xyxy"])).max() < 25   # the same hands, cropped alike


def test_precision_flag_reaches_the_reconstructor_and_the_summaries(ckpt, tmp_path, capsys, monkeypatch):
    "--precision fast: the meshes of the fast path (bfloat16 here even where it is emulated), recorded as such."
    import intaghand.tensors as tn
    monkeypatch.setattr(tn, "cpu_has_bf16", lambda: True)
    img = tmp_path / "in" / "a.png"
    img.parent.mkdir()
    cv2.imwrite(str(img), _scene(120, 160))
    verts = {}
    for p in ("exact", "fast"):
        out = tmp_path / p
        assert C.demo_main(["--img_path", str(img), "--save_path", str(out), "--model", str(ckpt), "--no-detect",
                            "--render_size", "64", "--precision", p, "--formats", "none"]) == 0
        s = json.loads((out / "summary.json").read_text())
        assert s["precision"] == p and s["succeeded"] == 1
        assert f"{p} precision" in capsys.readouterr().out
        verts[p] = np.array(json.loads((out / "a.json").read_text())["left"]["verts3d"])
    diff = np.abs(verts["fast"] - verts["exact"])
    assert 0 < diff.max() < 0.05 * np.abs(verts["exact"]).max()      # reduced precision shows, and stays small
    src = _clip(tmp_path / "clip.avi", 2)
    assert C.demo_main(["--video", str(src), "--save_path", str(tmp_path / "v.avi"), "--model", str(ckpt), "--no-detect",
                        "--precision", "fast"]) == 0
    assert json.loads((tmp_path / "v.json").read_text())["precision"] == "fast"
