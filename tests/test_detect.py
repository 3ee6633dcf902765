"""Hand detection: crop geometry, palm decoding, MediaPipe's reference landmarks, missing model files."""
import json
import math
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

import intaghand.detect as D

ROOT = Path(__file__).resolve().parents[1]

# Landmarks (image pixels) that mediapipe==0.10.14 itself (mp.solutions.hands, static mode, model_complexity=1)
# gives on the shipped demo pictures, with its labels (MediaPipe assumes a mirrored image: its "Left" is a right hand).
MEDIAPIPE_REFERENCE = {
    "wild_1.jpg": [
        ("Left", [[252, 184], [241, 163], [237, 144], [235, 129], [234, 117], [267, 128], [269, 102], [265, 92], [257, 87],
                  [284, 134], [293, 106], [290, 93], [284, 87], [295, 145], [308, 135], [305, 140], [300, 146], [301, 159],
                  [308, 156], [305, 159], [300, 162]]),
        ("Right", [[341, 163], [362, 151], [375, 132], [378, 109], [376, 92], [360, 117], [360, 86], [353, 71], [346, 64],
                   [342, 119], [342, 91], [339, 83], [336, 83], [328, 127], [323, 107], [321, 100], [319, 100], [318, 136],
                   [310, 129], [306, 128], [303, 130]])],
    "wild_9.jpg": [
        ("Right", [[466, 276], [496, 261], [510, 237], [520, 210], [525, 190], [499, 216], [502, 182], [507, 163], [512, 148],
                   [478, 211], [484, 174], [492, 154], [498, 140], [458, 211], [458, 178], [463, 168], [468, 165], [438, 216],
                   [433, 189], [437, 177], [442, 171]])],
}


def _detector_or_skip():
    ok, why = D.detector_status()
    if not ok: pytest.skip(f"detector model files not installed: {why[:120]}")
    return D.load_detector()


def test_square_crop_box_covers_hands_with_margin():
    boxes = [(100, 50, 160, 150), (170, 70, 230, 140)]
    x0, y0, x1, y1 = D.square_crop_box(boxes, (480, 640), fill=0.8)
    assert x1 - x0 == y1 - y0 == 163                 # ceil(130 / 0.8)
    assert x0 <= 100 and x1 >= 230 and y0 <= 50 and y1 >= 150
    assert abs((x0 + x1) / 2 - 165) <= 1 and abs((y0 + y1) / 2 - 100) <= 1
    assert D.square_crop_box([(5, 5, 6, 6)], (100, 100))[2] - D.square_crop_box([(5, 5, 6, 6)], (100, 100))[0] == 32
    with pytest.raises(ValueError): D.square_crop_box(boxes, (480, 640), fill=1.5)


def test_crop_square_pads_outside_with_black():
    img = np.full((50, 80, 3), 200, np.uint8)
    c = D.crop_square(img, (-10, 30, 30, 70))
    assert c.shape == (40, 40, 3)
    assert (c[:20, 10:] == 200).all() and c[:, :10].max() == 0 and c[20:].max() == 0
    assert D.crop_square(img, (100, 100, 120, 120)).max() == 0     # entirely outside: black


def test_palm_decoding_and_weighted_nms():
    A = D.palm_anchors()
    assert A.shape == (2016, 2) and A.min() > 0 and A.max() < 1
    raw = np.zeros((2016, 18), np.float32)
    logits = np.full(2016, -20.0, np.float32)
    i = 1152 + 6 * (12 * 5 + 7)                        # stride-16 cell (x 7, y 5)
    raw[i, :4] = (3.0, -2.0, 48.0, 40.0)
    raw[i, 4:] = np.tile([1.0, 1.0], 7)
    logits[i] = 2.0
    boxes, kps, scores = D.decode_palms(raw, logits, A)
    assert len(scores) == 1 and math.isclose(scores[0], 1 / (1 + math.exp(-2)), rel_tol=1e-6)
    cx, cy = (7.5 / 12) + 3 / 192, (5.5 / 12) - 2 / 192
    assert np.allclose(boxes[0], [cx - 24 / 192, cy - 20 / 192, cx + 24 / 192, cy + 20 / 192], atol=1e-6)
    assert np.allclose(kps[0], A[i] + 1 / 192)
    b = np.array([[0, 0, 1, 1], [0.05, 0, 1.05, 1], [3, 3, 4, 4]], float)
    k = np.zeros((3, 7, 2))
    merged = D.weighted_nms(b, k, np.array([0.9, 0.6, 0.8]))
    assert len(merged) == 2 and merged[0][2] == 0.9
    assert np.allclose(merged[0][0], (0.9 * b[0] + 0.6 * b[1]) / 1.5)


def test_rotated_rect_round_trip():
    r = D.RotatedRect(100.0, 80.0, 60.0, 60.0, 0.7)
    pts = np.array([[0, 0], [224, 0], [224, 224], [0, 224]], float)
    assert np.allclose(r.to_image(pts, 224), r.corners(), atol=1e-9)
    img = np.zeros((200, 200, 3), np.uint8)
    cv2.circle(img, (int(round(r.to_image([[56, 112]], 224)[0, 0])), int(round(r.to_image([[56, 112]], 224)[0, 1]))), 3,
               (255, 255, 255), -1)
    crop = r.warp(img, 224)
    ys, xs = np.nonzero(crop[..., 0] > 128)
    assert abs(xs.mean() - 56) < 4 and abs(ys.mean() - 112) < 4


def test_missing_models_say_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setattr(D, "detector_dirs", lambda: [tmp_path])
    ok, why = D.detector_status()
    assert not ok and "install_detector_models" in why and str(tmp_path) in why and "--no-detect" in why
    with pytest.raises(D.DetectorUnavailable): D.load_detector()


def test_install_from_wheel_checks_content(tmp_path):
    fake = tmp_path / "mediapipe-0.10.14-fake.whl"
    with zipfile.ZipFile(fake, "w") as z:
        for inner in D.WHEEL_PATHS.values(): z.writestr(inner, b"not the model")
    with pytest.raises(D.DetectorUnavailable, match="SHA-256"):
        D.install_detector_models(fake, tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.tflite"))


@pytest.mark.parametrize("name", sorted(MEDIAPIPE_REFERENCE))
def test_matches_mediapipe_reference(name):
    det = _detector_or_skip()
    img = cv2.imread(str(ROOT / "data" / "demo" / name))
    found = det(img)
    ref = MEDIAPIPE_REFERENCE[name]
    assert found.count == len(ref)
    for label, lm in ref:
        errs = [np.abs(np.asarray(lm, float) - h.landmarks).mean() for h in found.hands]
        h = found.hands[int(np.argmin(errs))]
        assert min(errs) < 6.0, (label, errs)                               # px, on hands of 75-140 px
        assert h.handedness == {"Left": "right", "Right": "left"}[label]     # unmirrored photo: MediaPipe's label swapped
        x0, y0, x1, y1 = h.box
        lm = np.asarray(lm)
        assert x0 <= lm[:, 0].min() + 8 and x1 >= lm[:, 0].max() - 8 and y0 <= lm[:, 1].min() + 8 and y1 >= lm[:, 1].max() - 8


def test_nothing_in_a_blank_image_and_json():
    det = _detector_or_skip()
    found = det(np.full((240, 320, 3), 127, np.uint8))
    assert found.status == "no_hands" and found.to_json()["hands_found"] == 0
    found = det(cv2.imread(str(ROOT / "data" / "demo" / "wild_1.jpg")))
    js = json.loads(json.dumps(found.to_json()))
    assert js["status"] == "two_hands" and len(js["hands"][0]["landmarks"]) == 21


def test_demo_with_detector_crops_around_hands(tmp_path):
    _detector_or_skip()
    from intaghand.demo import small_checkpoint; from intaghand.demo_cli import demo_main
    ckpt = small_checkpoint(tmp_path)
    (tmp_path / "in").mkdir()
    for n in ("wild_1.jpg", "wild_9.jpg"): (tmp_path / "in" / n).write_bytes((ROOT / "data" / "demo" / n).read_bytes())
    rc = demo_main(["--img_path", str(tmp_path / "in"), "--save_path", str(tmp_path / "out"), "--model", str(ckpt),
                    "--detect", "--formats", "none", "--render_size", "64"])
    assert rc == 0
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["detector"] == "on" and s["failed"] == 0
    d1 = json.loads((tmp_path / "out" / "wild_1.json").read_text())
    assert d1["hands_found"] == 2 and d1["crop"]["source"] == "detector"
    x0, y0, x1, y1 = d1["crop"]["box_xyxy"]
    assert 200 <= x0 <= 240 and 30 <= y0 <= 70 and 120 <= x1 - x0 <= 220          # around both hands, not the frame
    d9 = json.loads((tmp_path / "out" / "wild_9.json").read_text())
    assert d9["hands_found"] == 1 and d9["detection"]["status"] == "one_hand"
    assert [d9["left"]["detected"], d9["right"]["detected"]].count(True) == 1
    assert any("only one hand" in w for w in d9["warnings"])
