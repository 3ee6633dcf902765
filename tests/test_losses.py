"""Loss terms on hand-made inputs with hand-computed values, the combined loss, and the LR schedule (the original's, see nbs/00a_original.ipynb)."""
import math

import pytest
import torch

from intaghand.config import get_config
from intaghand.losses import (HandMeshSpec, PredictedHand, HandTarget, LossPrediction, LossTarget, LossWeights,
                              StepLRWithWarmUp, compute_losses, coarsen_losses, dense_loss, edge_alpha,
                              edge_length_loss, face_edges, gcn_pyramid, heatmap_loss, joint_loss, mask_loss,
                              normal_loss, prepare_targets, upsample_norm_loss, vert2d_loss, vert3d_loss)
from intaghand.mano import regress_joints

V, P = 778, 1008


def make_spec(seed):
    g = torch.Generator().manual_seed(seed)
    faces = torch.stack([torch.arange(V - 2), torch.arange(1, V - 1), torch.arange(2, V)], 1)
    reg = torch.zeros(21, V)
    for j in range(21):
        if j in (4, 8, 12, 16, 20):
            reg[j, torch.randint(V, (1,), generator=g)] = 1.0
        else:
            idx = torch.randperm(V, generator=g)[:5]
            w = torch.rand(5, generator=g)
            reg[j, idx] = w / w.sum()
    perm = torch.cat([torch.randperm(V, generator=g), torch.randint(V, (P - V,), generator=g)])
    return HandMeshSpec(reg, faces, perm)


@pytest.fixture(scope="module")
def world():
    g = torch.Generator().manual_seed(3)
    B = 3
    specs = {"left": make_spec(0), "right": make_spec(1)}
    v3l, v3r = torch.randn(B, V, 3, generator=g) * 0.04, torch.randn(B, V, 3, generator=g) * 0.04
    v2l, v2r = torch.rand(B, V, 2, generator=g) * 256, torch.rand(B, V, 2, generator=g) * 256
    root_rel = torch.randn(B, 3, generator=g) * 0.1
    mask = (torch.rand(B, 2, 16, 16, generator=g) > 0.5).float()
    target = LossTarget(HandTarget(v3l, v2l), HandTarget(v3r, v2r), root_rel, mask,
                        torch.rand(B, 3, 16, 16, generator=g), torch.rand(B, 42, 16, 16, generator=g))

    def perfect(v3, v2, s):
        return PredictedHand(v3.clone(), v2.clone(), [gcn_pyramid(v3, s.graph_perm)[2]],
                              [gcn_pyramid(v2, s.graph_perm)[2]])

    def make_pred():
        return LossPrediction(perfect(v3l, v2l, specs["left"]), perfect(v3r + root_rel[:, None], v2r, specs["right"]),
                              target.hms.clone(), target.mask.clone(), torch.cat([target.dense, target.dense], 1))
    return specs, target, make_pred


def test_identity_is_zero(world):
    specs, target, make_pred = world
    out = compute_losses(make_pred(), target, specs, get_config(), epoch=100)
    assert len(out.terms) == 11
    for k, v in out.terms.items():
        assert float(v) < 1e-6, k
    assert float(out.total) < 1e-4


def test_right_hand_needs_root_rel_shift(world):
    specs, target, make_pred = world
    out = compute_losses(make_pred(), target, specs, shift_right=False)
    # without the shift the right hand is off by root_rel: vert3d = mean|root_rel| / 2 (averaged with a perfect left)
    assert float(out.terms["mano_vert3d_loss"]) == pytest.approx(float(target.root_rel.abs().mean()) / 2, rel=1e-5)
    shifted = prepare_targets(target)
    assert torch.allclose(shifted.right.v3d, target.right.v3d + target.root_rel[:, None])
    assert torch.equal(shifted.left.v3d, target.left.v3d)


def test_known_offsets():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(2, V, 3, generator=g)
    reg = make_spec(0).regressor
    off = torch.tensor([0.03, 0.0, -0.06])
    assert float(vert3d_loss(v + off, v)) == pytest.approx(0.03, rel=1e-5)
    assert float(joint_loss(v + off, v, reg)) == pytest.approx(0.03, rel=1e-5)
    x = torch.rand(2, V, 2, generator=g) * 256
    # 25.6 px in both coordinates = 0.2 normalised → MSE 0.04
    assert float(vert2d_loss(x + 25.6, x)) == pytest.approx(0.04, rel=1e-5)
    assert float(vert2d_loss(x + 25.6, x, img_size=512)) == pytest.approx(0.01, rel=1e-5)


def test_single_joint_regression_and_loss():
    reg = torch.zeros(21, 4)
    reg[:, 0] = 1.0
    reg[3] = torch.tensor([0.0, 0.5, 0.5, 0.0])
    v = torch.zeros(1, 4, 3)
    v[0, 1] = torch.tensor([2.0, 0, 0])
    j = regress_joints(reg, v)
    assert j.shape == (1, 21, 3) and torch.allclose(j[0, 3], torch.tensor([1.0, 0, 0]))
    # moving vertex 2 by (0, 0, 0.6) moves joint 3 by (0, 0, 0.3): L1 over 21·3 values = 0.3 / 63
    v2 = v.clone()
    v2[0, 2, 2] = 0.6
    assert float(joint_loss(v2, v, reg)) == pytest.approx(0.3 / 63, rel=1e-6)


def test_normal_and_edge_on_triangles():
    tri = torch.tensor([[[0., 0, 0], [2, 0, 0], [0, 2, 0]]])
    faces = torch.tensor([[0, 1, 2]])
    e = face_edges(tri, faces)
    assert torch.allclose(e[0, 0], torch.tensor([[-2., 0, 0], [2, -2, 0], [0, 2, 0]]))
    # tilt the third corner out of the plane by 45°: v2 = (0, √2, √2)
    tilted = torch.tensor([[[0., 0, 0], [2, 0, 0], [0, 2 ** 0.5, 2 ** 0.5]]])
    # predicted unit edges: (−1,0,0)→0; (2,−√2,−√2)/√8 → |z| = √2/√8 = 0.5; (0,√2,√2)/2 → 1/√2
    assert float(normal_loss(tilted, tri, faces)) == pytest.approx((0 + 0.5 + 2 ** -0.5) / 3, rel=1e-5)
    assert float(normal_loss(tri[:, [1, 0, 2]], tri, faces)) == pytest.approx(0.0, abs=1e-7)   # winding flip
    # edge lengths GT 2, 2√2, 2; tilted: 2, √(4+2+2)=2√2, 2 → identical
    assert float(edge_length_loss(tilted, tri, faces)) == pytest.approx(0.0, abs=1e-6)
    assert float(edge_length_loss(tri * 1.5, tri, faces)) == pytest.approx(0.5 * (4 + 2 * 2 ** 0.5) / 3, rel=1e-5)


def test_alpha_schedule_and_weights():
    cfg = get_config()
    assert [edge_alpha(e, cfg.LOSS_WEIGHT.GRAPH.NORM.NORM_EPOCH) for e in (0, 1, 49, 50, 51, 199)] == [0, 0, 0, 1, 1, 1]
    w = LossWeights.from_config(cfg)
    assert (w.label_3d, w.label_2d, w.normal, w.edge, w.norm_epoch, w.upsample, w.mask, w.dense, w.hms) == \
        (100, 50, 10, 2000, 50, 1.0, 500, 30, 100)


def test_edge_term_switches_on(world):
    specs, target, make_pred = world
    pred = make_pred()
    pred.right.verts3d = pred.right.verts3d * 1.3
    lo, hi = compute_losses(pred, target, specs, epoch=49), compute_losses(pred, target, specs, epoch=50)
    assert float(lo.terms["mano_edge_loss"]) > 0
    assert float(hi.total - lo.total) == pytest.approx(2000 * float(hi.terms["mano_edge_loss"]), rel=1e-4)


def test_aux_terms_and_dense_channel_pairing():
    beta = 0.05
    m = torch.zeros(2, 2, 4, 4)
    assert float(mask_loss(m + 0.02, m)) == pytest.approx(0.5 * 0.02 ** 2 / beta, rel=1e-5)
    assert float(mask_loss(m + 1.0, m)) == pytest.approx(1 - beta / 2, rel=1e-6)
    assert float(heatmap_loss(m + 0.3, m)) == pytest.approx(0.09, rel=1e-5)
    gt_mask = torch.zeros(1, 2, 2, 2)
    gt_mask[0, 0, 0, 0] = 1.0          # right hand (channel 0): one pixel
    gt_mask[0, 1, 1, 1] = 1.0          # left hand (channel 1): one pixel
    gt = torch.zeros(1, 3, 2, 2)
    pred = torch.zeros(1, 6, 2, 2)
    pred[0, 0:3, 0, 0] = 1.0           # right-half prediction wrong inside the right mask: 3 of 12 elements
    assert float(dense_loss(pred, gt, gt_mask)) == pytest.approx((3 * (1 - beta / 2) / 12) / 2, rel=1e-6)
    pred2 = torch.zeros(1, 6, 2, 2)
    pred2[0, 0:3, 1, 1] = 1.0          # right-half prediction wrong only inside the LEFT mask → ignored
    pred2[0, 3:6, 0, 0] = 1.0          # left-half prediction wrong only inside the RIGHT mask → ignored
    assert float(dense_loss(pred2, gt, gt_mask)) == 0.0
    assert float(upsample_norm_loss(torch.full((4, 3), 2.0), torch.ones(4, 3))) == 1.0


def test_coarsen_levels_matched_by_count():
    s = make_spec(2)
    g = torch.Generator().manual_seed(1)
    v3, v2 = torch.randn(2, V, 3, generator=g), torch.rand(2, V, 2, generator=g) * 256
    p3 = gcn_pyramid(v3, s.graph_perm)
    assert [t.shape[1] for t in p3] == [1008, 504, 252, 126, 63]
    assert torch.allclose(p3[4][:, 0], v3[:, s.graph_perm[:16]].mean(1), atol=1e-6)
    l3, l2 = coarsen_losses([p3[3] + 0.5, p3[2]], [gcn_pyramid(v2, s.graph_perm)[1] - 12.8], v3, v2, s.graph_perm)
    assert [float(x) for x in l3] == pytest.approx([0.5, 0.0], abs=1e-6)
    assert float(l2[0]) == pytest.approx(0.01, rel=1e-4)
    with pytest.raises(ValueError, match="no graph level with 100 vertices"):
        coarsen_losses([v3[:, :100]], [], v3, v2, s.graph_perm)


def test_dtype_device_follow_inputs(world):
    specs, target, make_pred = world
    pred = make_pred()
    to64 = lambda t: t.double()
    pred64 = LossPrediction(PredictedHand(*(to64(x) for x in (pred.left.verts3d, pred.left.verts2d)),
                                           [to64(pred.left.levels3d[0])], [to64(pred.left.levels2d[0])]),
                            PredictedHand(to64(pred.right.verts3d), to64(pred.right.verts2d),
                                           [to64(pred.right.levels3d[0])], [to64(pred.right.levels2d[0])]),
                            to64(pred.hms), to64(pred.mask), to64(pred.dense))
    t = target
    tgt64 = LossTarget(HandTarget(to64(t.left.v3d), to64(t.left.v2d)), HandTarget(to64(t.right.v3d), to64(t.right.v2d)),
                       to64(t.root_rel), to64(t.mask), to64(t.dense), to64(t.hms))
    out = compute_losses(pred64, tgt64, specs)
    assert out.total.dtype == torch.float64
    assert all(v.dtype == torch.float64 for v in out.terms.values())


def test_gradients_flow(world):
    specs, target, make_pred = world
    pred = make_pred()
    leaves = [pred.left.verts3d, pred.left.verts2d, pred.right.levels3d[0], pred.right.levels2d[0],
              pred.hms, pred.mask, pred.dense]
    for i, x in enumerate(leaves):
        x.add_(0.05 * (i + 1)).requires_grad_()
    w = torch.ones(V, 252, requires_grad=True)
    pred.upsample_weight = w
    out = compute_losses(pred, target, specs, epoch=60, upsample_reference=torch.zeros(V, 252))
    assert float(out.terms["mano_upsample_norm_loss"].detach()) == pytest.approx(1.0)
    out.total.backward()
    for x in leaves + [w]:
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_upsample_weight_needs_reference(world):
    specs, target, make_pred = world
    pred = make_pred()
    pred.upsample_weight = torch.ones(V, 252)
    with pytest.raises(ValueError, match="upsample_reference"):
        compute_losses(pred, target, specs)


def test_adapters_from_original_formats(world):
    specs, target, make_pred = world
    p = make_pred()
    result = {"verts3d": {"left": p.left.verts3d, "right": p.right.verts3d},
              "verts2d": {"left": p.left.verts2d, "right": p.right.verts2d}}
    hdl = [{"verts3d": {"left": p.left.levels3d[0], "right": p.right.levels3d[0]},
            "verts2d": {"left": p.left.levels2d[0], "right": p.right.levels2d[0]}}]
    q = LossPrediction.from_original(result, hdl, {"hms": p.hms, "mask": p.mask, "dense": p.dense})
    t = target
    batch = (None, None, t.mask, t.dense, t.hms, t.left.v2d, None, t.right.v2d, None, t.left.v3d, None, t.right.v3d,
             None, t.root_rel)
    out = compute_losses(q, LossTarget.from_original_batch(batch), specs)
    assert float(out.total) < 1e-4
    names = set(out.scalars())
    assert {"train/total_loss", "train/mano_vert2d_loss", "train/mano_edge_loss", "train/coarsen_v3d_loss_0",
            "train/coarsen_v2d_loss_0", "train/aux_mask_loss", "train/aux_dense_loss", "train/aux_hms_loss",
            "train/mano_upsample_norm_loss"} <= names


def test_adapter_from_structured_output(world):
    from types import SimpleNamespace as NS
    specs, target, make_pred = world
    p = make_pred()
    hand = lambda h: NS(verts3d=h.verts3d, verts2d=h.verts2d, scale=None,
                        levels=[NS(verts3d=h.levels3d[0], verts2d=h.levels2d[0])])
    out = NS(left=hand(p.left), right=hand(p.right), hms=p.hms, mask=p.mask, dense=p.dense)
    q = LossPrediction.from_output(out)
    assert q.right.levels3d[0] is p.right.levels3d[0] and q.dense is p.dense
    t = target
    labels = lambda h: NS(verts3d=h.v3d, verts2d=h.v2d, joints3d=h.j3d, joints2d=h.j2d)
    sample = NS(left=labels(t.left), right=labels(t.right), root_rel=t.root_rel, mask=t.mask, dense=t.dense, hms=t.hms)
    named = LossTarget.from_sample(sample)
    assert named.left.v3d is t.left.v3d and named.right.v2d is t.right.v2d and named.hms is t.hms
    assert float(compute_losses(q, named, specs).total) < 1e-4
    swapped = NS(**{**vars(sample), "left": sample.right, "right": sample.left})    # a field read from the wrong place shows
    assert float(compute_losses(q, LossTarget.from_sample(swapped), specs).total) > 1e-2


def _lr_sequence(cfg, n, start_epoch=None):
    opt = torch.optim.Adam([torch.zeros(2, requires_grad=True)], lr=cfg.TRAIN.LR)
    sched = StepLRWithWarmUp.from_config(opt, cfg, start_epoch=start_epoch)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_lr_schedule_values():
    seq = _lr_sequence(get_config(), 200)
    init, base = 1e-3 * 1e-4, 1e-4
    expected = {0: 1e-7, 1: init + (base - init) / 3, 2: init + (base - init) * 2 / 3, 3: 1e-4, 152: 1e-4,
                153: 1e-5, 199: 1e-5}
    for e, v in expected.items():
        assert math.isclose(seq[e], v, rel_tol=1e-12), (e, seq[e], v)
    assert math.isclose(seq[1], 3.34e-5, rel_tol=1e-3) and math.isclose(seq[2], 6.67e-5, rel_tol=1e-3)   # the original's warm-up: ≈3.3e-5, ≈6.7e-5
    assert all(x == 1e-4 for x in seq[3:153])


def test_lr_min_threshold_and_resume():
    seq = _lr_sequence(get_config(), 400)
    assert math.isclose(seq[302], 1e-5, rel_tol=1e-12) and math.isclose(seq[303], 5e-6, rel_tol=1e-12)
    assert math.isclose(seq[399], 5e-6, rel_tol=1e-12)          # 0.1² < 0.05 → floored at 0.05·LR
    for start in (1, 2, 3, 152, 153):
        assert _lr_sequence(get_config(), 5, start_epoch=start) == seq[start:start + 5]
    cfg = get_config(overrides=["TRAIN.current_epoch", "153"])
    assert _lr_sequence(cfg, 1) == [seq[153]]


def test_lr_state_dict_roundtrip():
    cfg = get_config()
    opt = torch.optim.Adam([torch.zeros(2, requires_grad=True)], lr=cfg.TRAIN.LR)
    s = StepLRWithWarmUp.from_config(opt, cfg)
    for _ in range(152):
        opt.step()
        s.step()
    state = s.state_dict()
    assert state["last_epoch"] == 152 and "optimizer" not in state
    opt2 = torch.optim.Adam([torch.zeros(2, requires_grad=True)], lr=cfg.TRAIN.LR)
    opt2.load_state_dict(opt.state_dict())
    s2 = StepLRWithWarmUp.from_config(opt2, cfg)
    s2.load_state_dict(state)
    opt2.step()
    s2.step()
    assert s2.last_epoch == 153 and math.isclose(opt2.param_groups[0]["lr"], 1e-5, rel_tol=1e-12)
    assert s2.get_last_lr() == [opt2.param_groups[0]["lr"]]


def test_lr_small_preset():
    cfg = get_config(preset="small")      # LR 1e-3, warm_up 1, step 20
    seq = _lr_sequence(cfg, 30)
    assert math.isclose(seq[0], 1e-6, rel_tol=1e-12) and seq[1] == 1e-3 and seq[20] == 1e-3
    assert math.isclose(seq[21], 1e-4, rel_tol=1e-12)
