"""Evaluation metrics on hand-made predictions with known errors (the original's protocol), MRRPE, the accumulator and the report writer."""
import csv
import json

import numpy as np
import pytest
import torch

from intaghand.mano import JOINT_NAMES, regress_joints
import intaghand.metrics
from intaghand.metrics import EvalAccumulator, write_eval_report
from intaghand.protocol import PROTOCOLS, align_hand, bone_length, hand_errors, relative_root_error, sample_errors

V = 778
TIPS = (4, 8, 12, 16, 20)


def make_regressor(seed=0):
    "Rows sum to 1 and use disjoint vertex sets; fingertip rows are one-hot."
    g = torch.Generator().manual_seed(seed)
    order, reg, k = torch.randperm(V, generator=g), torch.zeros(21, V), 0
    for j in range(21):
        n = 1 if j in TIPS else 5
        w = torch.rand(n, generator=g)
        reg[j, order[k:k + n]] = w / w.sum()
        k += n
    return reg


@pytest.fixture(scope="module")
def world():
    g = torch.Generator().manual_seed(7)
    reg = make_regressor()
    B = 5
    size = torch.tensor([0.08, 0.1, 0.03])
    gt = {"left": torch.rand(B, V, 3, generator=g) * size + torch.tensor([-0.07, 0.0, 0.6]),
          "right": torch.rand(B, V, 3, generator=g) * size + torch.tensor([0.05, 0.01, 0.62])}
    return reg, gt


def test_metrics_keeps_the_protocol_names():
    "The protocol moved to its own module; `from intaghand.metrics import hand_errors` etc. still give its objects."
    import intaghand.protocol
    for name in ("PROTOCOLS", "MRRPE_LABEL", "MRRPE_CAVEAT", "Protocol", "bone_length", "align_hand", "hand_errors",
                 "relative_root_error"):
        assert getattr(intaghand.metrics, name) is getattr(intaghand.protocol, name) and name in intaghand.metrics.__all__


def test_pure_translation_is_zero(world):
    reg, gt = world
    for name in PROTOCOLS:
        je, ve = hand_errors(gt["left"] + torch.tensor([1.0, -2.0, 0.5]), gt["left"], reg, name)
        assert je.shape == (5, 21) and ve.shape == (5, V)
        assert float(je.max()) < 1e-3 and float(ve.max()) < 1e-3


def test_scale_zero_under_original_not_under_wrist(world):
    reg, gt = world
    pred = gt["left"] * 0.5 + torch.tensor([0.0, 0.0, 0.1])
    je, ve = hand_errors(pred, gt["left"], reg, "original")
    assert float(je.max()) < 1e-3 and float(ve.max()) < 1e-3
    je, ve = hand_errors(pred, gt["left"], reg, "wrist")
    gj = regress_joints(reg, gt["left"])
    # pred − pred wrist = 0.5 (gt − gt wrist) → error = 0.5 ‖gt − gt wrist‖
    assert torch.allclose(je, 0.5 * torch.linalg.norm(gj - gj[:, :1], dim=-1) * 1000, rtol=1e-4, atol=1e-3)
    assert float(je.mean()) > 10


def test_single_joint_offset_10mm(world):
    reg, gt = world
    tip = int(reg[8].argmax())        # index fingertip vertex
    pred = gt["right"].clone()
    pred[:, tip] += torch.tensor([0.006, 0.0, 0.008])   # 10 mm
    for name in PROTOCOLS:
        je, ve = hand_errors(pred, gt["right"], reg, name)
        assert je[:, 8].tolist() == pytest.approx([10.0] * 5, rel=1e-4)
        assert je.mean(1).tolist() == pytest.approx([10 / 21] * 5, rel=1e-3)
        assert ve.mean(1).tolist() == pytest.approx([10 / V] * 5, rel=1e-3)
        assert all(torch.equal(a, b.mean(1)) for a, b in zip(sample_errors(pred, gt["right"], reg, name), (je, ve)))
        others = torch.cat([je[:, :8], je[:, 9:]], 1)
        assert float(others.max()) < 1e-3


def test_root_joint_offset_spreads_under_original(world):
    reg, gt = world
    # moving the whole hand except nothing: shift only the vertices of joint 9's row → root moves → all others err
    pred = gt["left"].clone()
    cols = reg[9].nonzero().flatten()
    pred[:, cols] += torch.tensor([0.0, 0.0, 0.01])
    je, _ = hand_errors(pred, gt["left"], reg, "wrist")
    assert je[:, 9].tolist() == pytest.approx([10.0] * 5, rel=1e-4)   # wrist protocol: only joint 9 moves
    je_o, _ = hand_errors(pred, gt["left"], reg, "original")
    assert float(je_o[:, 9].max()) < 1e-3 and float(je_o[:, 0].min()) > 1.0   # original: root = 9, error shows elsewhere


def test_align_and_bone_length(world):
    reg, gt = world
    pj, pv, gj, gv = align_hand(gt["left"] * 3, gt["left"], reg, "original")
    assert torch.allclose(bone_length(pj), bone_length(gj), rtol=1e-5)
    assert float(gj[:, 9].abs().max()) == 0 and float(pj[:, 9].abs().max()) < 1e-6
    assert pv.shape == gv.shape == (5, V, 3)


def test_mrrpe(world):
    reg, gt = world
    gjl, gjr = regress_joints(reg, gt["left"]), regress_joints(reg, gt["right"])
    origin = gjl[:, 9:10]
    pl, pr = (gt["left"] - origin) * 2.0, (gt["right"] - origin) * 2.0      # IntagHand frame, other units
    pjl, pjr = regress_joints(reg, pl), regress_joints(reg, pr)
    assert float(relative_root_error(pjl, pjr, gjl, gjr).max()) < 1e-3
    none = relative_root_error(pjl, pjr, gjl, gjr, scale="none")
    rel = torch.linalg.norm(gjr[:, 0] - gjl[:, 0], dim=-1) * 1000           # error = |2·rel − rel| = |rel|
    assert torch.allclose(none, rel, rtol=1e-4)
    # right hand 10 mm off (metric prediction, no scale): MRRPE = 10 exactly; root 9 variant too
    pr2 = gt["right"] + torch.tensor([0.0, 0.01, 0.0])
    for root in (0, 9):
        e = relative_root_error(regress_joints(reg, gt["left"]), regress_joints(reg, pr2), gjl, gjr, root=root,
                                scale="none")
        assert e.tolist() == pytest.approx([10.0] * 5, rel=1e-4)
    with pytest.raises(ValueError, match="scale"):
        relative_root_error(pjl, pjr, gjl, gjr, scale="abs")


def test_accumulator_summary_matches_original_formula(world):
    reg, gt = world
    g = torch.Generator().manual_seed(0)
    acc = EvalAccumulator(reg)
    all_j = {"left": [], "right": []}
    all_v = {"left": [], "right": []}
    for b in range(3):
        pred = {h: gt[h] + torch.randn(gt[h].shape, generator=g) * 0.004 for h in ("left", "right")}
        acc.update(pred["left"], pred["right"], gt["left"], gt["right"])
        for h in ("left", "right"):
            je, ve = hand_errors(pred[h], gt[h], reg, "original")
            all_j[h].append(je)
            all_v[h].append(ve)
    s = acc.summary()
    o = s["protocols"]["original"]
    for h in ("left", "right"):     # original: mean over samples × joints (vertices), ×1000
        assert o["mpjpe"][h] == pytest.approx(float(torch.cat(all_j[h]).double().mean()), rel=1e-5)
        assert o["mpvpe"][h] == pytest.approx(float(torch.cat(all_v[h]).double().mean()), rel=1e-5)
    assert o["mpjpe"]["all"] == pytest.approx((o["mpjpe"]["left"] + o["mpjpe"]["right"]) / 2)
    assert s["n_samples"] == 15 and len(acc) == 15
    res = acc.results()
    assert res.per_joint["wrist_left"].shape == (15, 21)
    assert np.allclose(res.per_sample["original_mpjpe_all"],
                       (res.per_sample["original_mpjpe_left"] + res.per_sample["original_mpjpe_right"]) / 2)
    assert np.isfinite(res.per_sample["mrrpe"]).all()
    assert "caveat" in s["mrrpe"] and s["mrrpe"]["root_joint"] == 0


def test_accumulator_without_shared_frame_and_errors(world):
    reg, gt = world
    acc = EvalAccumulator({"left": reg, "right": reg}, protocols=("original",))
    acc.update(gt["left"].numpy(), gt["right"].numpy(), gt["left"], gt["right"], shared_frame=False,
               sample_ids=list("abcde"))
    s = acc.summary()
    assert s["mrrpe"]["value"] is None and s["mrrpe"]["n_samples"] == 0 and "not available" in s["mrrpe"]["note"]
    assert list(s["protocols"]) == ["original"]
    assert acc.results().sample_ids == list("abcde")
    with pytest.raises(ValueError, match="shape"):
        acc.update(gt["left"][:, :100], gt["right"], gt["left"], gt["right"])
    with pytest.raises(ValueError, match="unknown protocol"):
        EvalAccumulator(reg, protocols=("procrustes",))


def test_dtype_and_float64(world):
    reg, gt = world
    r = reg.double()
    r = r / r.sum(1, keepdim=True)           # rows summing to 1 in float64 (float32 sums are off by ~1e-7)
    je, ve = hand_errors(gt["left"].double() + 0.1, gt["left"].double(), r, "original")
    assert je.dtype == torch.float64 and float(je.max()) < 1e-9


def test_report_files(world, tmp_path):
    reg, gt = world
    acc = EvalAccumulator(reg)
    pred_r = gt["right"].clone()
    pred_r[3, int(reg[4].argmax()), 0] += 0.05      # sample 3: thumb tip 50 mm off
    acc.update(gt["left"], pred_r, gt["left"], gt["right"], sample_ids=[f"s{i}" for i in range(5)])
    res = acc.results()
    assert res.worst(1)[0] == 3
    calls = []
    imgs = np.zeros((5, 32, 32, 3), np.uint8)
    pts = {"gt": np.full((5, 21, 2), 16.0), "pred": lambda i: np.full((21, 2), 16.0 + i)}
    paths = write_eval_report(tmp_path / "rep", res, images=imgs, points2d=pts, n_worst=2,
                              draw_fn=lambda ax, i, row: calls.append((i, row["original_mpjpe_right"])),
                              meta={"checkpoint": "x.pth"})
    assert set(paths) == {"summary", "per_sample", "error_hist", "per_joint", "worst_cases"}
    for p in paths.values():
        assert p.is_file() and p.stat().st_size > 0
    assert paths["worst_cases"].read_bytes()[:4] == b"\x89PNG"
    assert [c[0] for c in calls] == [3, int(res.worst(2)[1])]
    assert calls[0][1] == pytest.approx(50 / 21, rel=1e-3)
    s = json.loads(paths["summary"].read_text())
    assert s["worst"]["samples"][0] == {"index": 3, "sample_id": "s3", "value": pytest.approx(50 / 21 / 2, rel=1e-3)}
    assert s["meta"]["checkpoint"] == "x.pth" and s["protocols"]["original"]["mpjpe"]["all"] == pytest.approx(50 / 21 / 10, rel=1e-3)
    rows = list(csv.DictReader(paths["per_sample"].open()))
    assert [r["sample_id"] for r in rows] == ["s0", "s1", "s2", "s3", "s4"]
    assert float(rows[3]["original_mpjpe_right"]) == pytest.approx(50 / 21, rel=1e-3)
    assert len(JOINT_NAMES) == 21
    # without images or draw_fn there is no gallery; nothing half-written stays behind
    paths2 = write_eval_report(tmp_path / "rep2", res)
    assert "worst_cases" not in paths2
    assert not [p for p in (tmp_path / "rep2").iterdir() if p.name.startswith(".")]
    with pytest.raises(ValueError, match="rank_by"):
        write_eval_report(tmp_path / "rep3", res, rank_by="nope")


def test_report_with_wrist_protocol_only(world, tmp_path):
    reg, gt = world
    acc = EvalAccumulator(reg, protocols=("wrist",))
    acc.update(gt["left"] * 1.1, gt["right"], gt["left"], gt["right"], shared_frame=False)
    res = acc.results()
    assert res.default_key == "wrist_mpjpe_all" and set(res.per_joint) == {"wrist_left", "wrist_right"}
    paths = write_eval_report(tmp_path, res, draw_fn=lambda ax, i, row: ax.plot([0, 1], [0, row["wrist_mpjpe_left"]]))
    s = json.loads(paths["summary"].read_text())
    assert s["worst"]["rank_by"] == "wrist_mpjpe_all" and s["mrrpe"]["value"] is None
    assert s["protocols"]["wrist"]["mpjpe"]["right"] == pytest.approx(0.0, abs=1e-3)
    assert "mrrpe" in (tmp_path / "per_sample.csv").read_text().splitlines()[0]
