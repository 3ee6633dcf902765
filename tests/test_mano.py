"""Tests of intaghand.mano: file loading and checks, the pose math, the layer, left/right, PCA, speed-path equivalence."""
import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from intaghand.fixtures import random_mano_model
from intaghand.io import UnsafePickleError
from intaghand.mano import (FINGERTIP_VERTS, JOINT_NAMES, JOINT_PARENTS, MANO_KEYS, MANO_PARENTS, NEW_ORDER,
                           ManoFormatError, ManoLayer, axis_to_pca, check_mano_model, fix_shape, kinematic_chain,
                           load_mano_model, mirror_mano_model, pca_to_axis, rodrigues,
                           save_mano_npz, save_mano_pkl, skin)

MIRROR = torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
AXIS_SIGN = torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64).repeat(16)


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def right_model():
    return random_mano_model(3)


@pytest.fixture(scope="module")
def left_model():
    return random_mano_model(3, side="left")


def write_chumpy_style_pkl(model, path, keys=("shapedirs", "v_template", "J", "weights", "posedirs")):
    "Pickle like the official files: protocol 2, `keys` wrapped in a (throwaway, fake) `chumpy.ch.Ch`."
    ch_mod, pkg = types.ModuleType("chumpy.ch"), types.ModuleType("chumpy")

    class Ch:
        def __init__(self, x): self.x = np.asarray(x)
    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    ch_mod.Ch, pkg.ch = Ch, ch_mod
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch")}
    sys.modules.update({"chumpy": pkg, "chumpy.ch": ch_mod})
    try:
        data = pickle.dumps({k: (Ch(v) if k in keys else v) for k, v in model.items()}, protocol=2)
    finally:
        for k, mod in saved.items():
            if mod is None: sys.modules.pop(k, None)
            else: sys.modules[k] = mod
    Path(path).write_bytes(data)
    return Path(path)


def reference_forward(m, pose, betas, trans):
    """A plain, loop-based numpy MANO following the original's description (nbs/00a_original.ipynb; float64), for cross-checks.
    pose: B×48 axis-angle with the mean already added to the finger part."""
    out_v, out_j = [], []
    parents = [-1] + list(m["kintree_table"][0, 1:])
    for p, beta, t in zip(pose, betas, trans):
        def rod(a):
            ang = np.linalg.norm(a) + 1e-8
            n = a / ang
            K = np.array([[0, -n[2], n[1]], [n[2], 0, -n[0]], [-n[1], n[0], 0]])
            return np.eye(3) + np.sin(ang) * K + (1 - np.cos(ang)) * K @ K
        Rs = [rod(p[3 * i: 3 * i + 3]) for i in range(16)]
        v_shaped = m["v_template"] + m["shapedirs"] @ beta
        J = m["J_regressor"] @ v_shaped
        feat = np.concatenate([(R - np.eye(3)).ravel() for R in Rs[1:]])
        v_posed = v_shaped + m["posedirs"] @ feat
        G = []
        for i in range(16):
            local = np.eye(4); local[:3, :3] = Rs[i]; local[:3, 3] = (np.eye(3) - Rs[i]) @ J[i]
            G.append(local if parents[i] < 0 else G[parents[i]] @ local)
        joints = [J[0]] + [G[parents[i]][:3, :3] @ J[i] + G[parents[i]][:3, 3] for i in range(1, 16)]
        T = np.einsum("vj,jab->vab", m["weights"], np.stack(G))
        v = np.einsum("vab,vb->va", T[:, :3, :3], v_posed) + T[:, :3, 3]
        j21 = np.concatenate([np.stack(joints), v[list(FINGERTIP_VERTS)]])[list(NEW_ORDER)]
        out_v.append(v + t); out_j.append(j21 + t)
    return np.stack(out_v), np.stack(out_j)


# ---------------------------------------------------------------- constants and the random model

def test_constants():
    assert len(JOINT_NAMES) == 21 and len(JOINT_PARENTS) == 21 and sorted(NEW_ORDER) == list(range(21))
    assert NEW_ORDER == (0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20)
    assert FINGERTIP_VERTS == (745, 317, 444, 556, 673)
    assert JOINT_PARENTS == (-1, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 13, 14, 15, 0, 17, 18, 19)


def test_random_model_is_valid_and_deterministic(right_model):
    m = check_mano_model(right_model, "random")
    assert m["v_template"].shape == (778, 3) and m["f"].shape == (1538, 3) and m["weights"].shape == (778, 16)
    assert m["shapedirs"].shape == (778, 3, 10) and m["posedirs"].shape == (778, 3, 135)
    assert list(m["parents"]) == list(MANO_PARENTS)
    assert np.allclose(m["weights"].sum(1), 1) and (m["weights"] >= 0).all()
    assert np.allclose(m["J_regressor"].sum(1), 1) and hasattr(right_model["J_regressor"], "tocoo")
    again = random_mano_model(3)
    assert all(np.array_equal(np.asarray(again[k].toarray() if hasattr(again[k], "toarray") else again[k]),
                              np.asarray(right_model[k].toarray() if hasattr(right_model[k], "toarray") else right_model[k]))
               for k in MANO_KEYS)
    assert not np.allclose(random_mano_model(4)["v_template"], m["v_template"])
    # fingertips: far from the wrist, each at the end of its own finger
    wrist = m["J"][0]
    d_tip = np.linalg.norm(m["v_template"][list(FINGERTIP_VERTS)] - wrist, axis=1)
    assert (d_tip > 0.1).all()


# ---------------------------------------------------------------- pure functions

def test_rodrigues_matches_reference_and_is_rotation():
    a = torch.randn(50, 3, dtype=torch.float64)
    R = rodrigues(a)
    # orthonormal up to the original's +1e-8 on the angle (the axis is not exactly unit)
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(50, 3, 3), atol=1e-7)
    assert torch.allclose(torch.det(R), torch.ones(50, dtype=torch.float64), atol=1e-7)
    ang = a.norm(dim=-1) + 1e-8
    n = a / ang[:, None]
    K = torch.zeros(50, 3, 3, dtype=torch.float64)
    K[:, 0, 1], K[:, 0, 2], K[:, 1, 2] = -n[:, 2], n[:, 1], -n[:, 0]
    K = K - K.transpose(-1, -2)
    ref = torch.eye(3, dtype=torch.float64) + torch.sin(ang)[:, None, None] * K + (1 - torch.cos(ang))[:, None, None] * K @ K
    assert torch.allclose(R, ref, atol=1e-12)
    assert torch.allclose(rodrigues(torch.zeros(2, 3)), torch.eye(3).expand(2, 3, 3))


@pytest.mark.parametrize("parents", [MANO_PARENTS, (-1, 0, 0, 2, 1, 2, 5, 3, 0, 8, 1)])
def test_kinematic_chain_and_skin_against_loop(parents):
    torch.manual_seed(0)
    B, J = 4, len(parents)
    rot = rodrigues(0.5 * torch.randn(B, J, 3, dtype=torch.float64))
    joints = torch.randn(B, J, 3, dtype=torch.float64)
    P, A, b = kinematic_chain(rot, joints, parents)
    for n in range(B):
        G = [None] * J
        for i in range(J):
            local = torch.eye(4, dtype=torch.float64)
            local[:3, :3] = rot[n, i]
            local[:3, 3] = joints[n, i] - rot[n, i] @ joints[n, i]
            G[i] = local if i == 0 else G[parents[i]] @ local
            assert torch.allclose(A[n, i], G[i][:3, :3]) and torch.allclose(b[n, i], G[i][:3, 3])
            assert torch.allclose(P[n, i], G[i][:3, :3] @ joints[n, i] + G[i][:3, 3])
    w = torch.rand(30, J, dtype=torch.float64); w /= w.sum(1, keepdim=True)
    v = torch.randn(B, 30, 3, dtype=torch.float64)
    ref = torch.einsum("vj,bjac,bvc->bva", w, A, v) + torch.einsum("vj,bja->bva", w, b)
    assert torch.allclose(skin(v, w, A, b), ref)


def test_gradcheck_layer():
    layer = ManoLayer(random_mano_model(5), "right").double()
    pose = (0.3 * torch.randn(2, 48, dtype=torch.float64)).requires_grad_()
    shape = torch.randn(2, 10, dtype=torch.float64, requires_grad=True)
    trans = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    sel = torch.arange(0, 778, 97)
    fn = lambda p, s, t: tuple(o[:, sel] if o.shape[1] == 778 else o for o in layer(p, s, t))
    assert torch.autograd.gradcheck(fn, (pose, shape, trans), eps=1e-6, atol=1e-5, fast_mode=True)


# ---------------------------------------------------------------- the layer

def test_rest_pose_gives_template(right_model):
    layer = ManoLayer(right_model, "right", flat_hand_mean=True)
    v, j = layer(torch.zeros(3, 48), torch.zeros(3, 10))
    assert torch.allclose(v, layer.v_template.expand(3, -1, -1), atol=1e-6)
    assert torch.allclose(j[:, [0, 1, 5, 9, 13, 17]], layer.J_zero[[0, 13, 1, 4, 10, 7]].expand(3, -1, -1), atol=1e-6)
    v_mean, _ = ManoLayer(right_model, "right")(torch.zeros(1, 48))
    assert not torch.allclose(v_mean[0], layer.v_template, atol=1e-3), "non-flat mean curls the fingers"


def test_joint_regressor_reproduces_joints(right_model):
    layer = ManoLayer(right_model, "right")
    assert layer.joint_regressor.shape == (21, 778)
    assert torch.allclose(layer.joint_regressor.sum(1), torch.ones(21))
    betas = torch.randn(4, 10)
    glob = torch.zeros(4, 48); glob[:, :3] = torch.randn(4, 3)
    v, j = ManoLayer(right_model, "right", flat_hand_mean=True)(glob, betas, torch.randn(4, 3))
    assert torch.allclose(layer.joint_regressor @ v, j, atol=1e-5), "rigid poses: regressed joints are the joints"
    v, j = layer(0.3 * torch.randn(4, 48), betas)
    assert torch.allclose((layer.joint_regressor @ v)[:, [4, 8, 12, 16, 20]], j[:, [4, 8, 12, 16, 20]], atol=1e-6)


def test_matches_plain_reference_implementation(right_model):
    m = check_mano_model(right_model)
    layer = ManoLayer(right_model, "right").double()
    torch.manual_seed(1)
    pose, betas, trans = 0.5 * torch.randn(3, 48, dtype=torch.float64), torch.randn(3, 10, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
    v, j = layer(pose, betas, trans)
    full = pose.numpy().copy(); full[:, 3:] += m["hands_mean"]
    rv, rj = reference_forward(m, full, betas.numpy(), trans.numpy())
    # the layer stores float32 buffers, so agreement is at float32 rounding of the model (~1e-8 m)
    assert np.abs(v.numpy() - rv).max() < 1e-7 and np.abs(j.numpy() - rj).max() < 1e-7


def test_matches_smplx(tmp_path, right_model):
    smplx = pytest.importorskip("smplx")
    pkl = save_mano_pkl(right_model, tmp_path / "MANO_RIGHT.pkl")
    theirs = smplx.MANO(str(pkl), is_rhand=True, use_pca=False, flat_hand_mean=False, num_betas=10,
                        create_global_orient=False, create_hand_pose=False, create_betas=False, create_transl=False)
    ours = ManoLayer(pkl, "right")
    pose, betas, trans = 0.5 * torch.randn(5, 48), torch.randn(5, 10), torch.randn(5, 3)
    out = theirs(betas=betas, global_orient=pose[:, :3], hand_pose=pose[:, 3:], transl=trans)
    v, j = ours(pose, betas, trans)
    assert torch.allclose(v, out.vertices, atol=1e-5)
    skeleton = j[:, list(np.argsort(NEW_ORDER))][:, :16]
    assert torch.allclose(skeleton, out.joints[:, :16], atol=1e-5)


def test_pca_and_axis_agree(right_model):
    axis_layer = ManoLayer(right_model, "right")
    for k in (45, 12):
        pca_layer = ManoLayer(right_model, "right", use_pca=True, ncomps=k)
        coeffs, glob = torch.randn(3, k), torch.randn(3, 3)
        rel = pca_layer.pca_to_axis(coeffs)
        assert torch.allclose(rel, pca_to_axis(coeffs, pca_layer.hands_components))
        for a, b in zip(pca_layer(torch.cat([glob, coeffs], 1)), axis_layer(torch.cat([glob, rel], 1))):
            assert torch.allclose(a, b, atol=1e-5)
        assert torch.allclose(pca_layer.axis_to_pca(rel), coeffs, atol=1e-4)
        assert torch.allclose(axis_to_pca(rel, pca_layer.hands_components, k), coeffs, atol=1e-4)
    # the original's axis2pca: (a - hands_mean) @ inv(hands_components), for absolute poses
    full = ManoLayer(right_model, "right", use_pca=True)
    a = torch.randn(2, 45)
    inv = torch.linalg.inv(full.hands_components.double()).float()
    assert torch.allclose(full.axis_to_pca(a + full.hands_mean_file, absolute=True), a @ inv, atol=1e-4)
    with pytest.raises(ValueError, match="pose must be B×15"):
        ManoLayer(right_model, "right", use_pca=True, ncomps=12)(torch.zeros(1, 48))


def test_forward_rotmat_matches_forward(right_model):
    pose, betas, trans = 0.4 * torch.randn(3, 48), torch.randn(3, 10), torch.randn(3, 3)
    root = rodrigues(pose[:, :3])
    axis = ManoLayer(right_model, "right")
    for a, b in zip(axis.forward_rotmat(root, pose[:, 3:], betas, trans), axis(pose, betas, trans)):
        assert torch.allclose(a, b, atol=1e-6)
    pca = ManoLayer(right_model, "right", use_pca=True)
    c = pca.axis_to_pca(pose[:, 3:])
    for a, b in zip(pca.forward_rotmat(root, c, betas, trans), axis(pose, betas, trans)):
        assert torch.allclose(a, b, atol=1e-5)
    # rotation matrices are taken as they are (no mean), like the original
    flat = ManoLayer(right_model, "right", flat_hand_mean=True)
    mats = rodrigues(pose[:, 3:].reshape(3, 15, 3))
    for a, b in zip(axis.forward_rotmat(root, mats, betas, trans), flat(pose, betas, trans)):
        assert torch.allclose(a, b, atol=1e-6)
    # centring, then scale, then translation
    centred = ManoLayer(right_model, "right", center_idx=9)
    v0, j0 = axis.forward_rotmat(root, pose[:, 3:], betas)
    s = torch.tensor([0.5, 1.0, 2.0])
    v1, j1 = centred.forward_rotmat(root, pose[:, 3:], betas, trans, s)
    assert torch.allclose(j1[:, 9], trans, atol=1e-6)
    assert torch.allclose(v1, (v0 - j0[:, 9:10]) * s[:, None, None] + trans[:, None], atol=1e-6)


def test_mirror_left_right(tmp_path, right_model, left_model):
    save_mano_pkl(right_model, tmp_path / "MANO_RIGHT.pkl")
    save_mano_pkl(left_model, tmp_path / "MANO_LEFT.pkl")
    right = ManoLayer(tmp_path / "MANO_RIGHT.pkl", "right").double()
    left = ManoLayer(tmp_path / "MANO_LEFT.pkl", "left").double()
    assert not left.shape_flipped, "a properly mirrored left model is left alone"
    for use_pca in (False, True):
        r = ManoLayer(right_model, "right", use_pca=use_pca).double()
        l = ManoLayer(left_model, "left", use_pca=use_pca).double()
        if use_pca:
            pose_r = torch.randn(4, 48, dtype=torch.float64); pose_l = pose_r.clone(); pose_l[:, :3] *= AXIS_SIGN[:3]
        else:
            pose_r = 0.5 * torch.randn(4, 48, dtype=torch.float64); pose_l = pose_r * AXIS_SIGN
        betas, trans = torch.randn(4, 10, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
        vr, jr = r(pose_r, betas, trans)
        vl, jl = l(pose_l, betas, trans * MIRROR)
        assert torch.allclose(vl, vr * MIRROR, atol=1e-9) and torch.allclose(jl, jr * MIRROR, atol=1e-9)
    assert torch.equal(left.faces, right.faces[:, [0, 2, 1]])
    # mirrored winding keeps normals pointing outwards: mirrored normals equal the left mesh's normals
    def normals(v, f): return torch.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]], dim=-1)
    assert torch.allclose(normals(left.v_template, left.faces), normals(right.v_template, right.faces) * MIRROR, atol=1e-9)


def test_fix_shape_quirk(tmp_path, right_model, left_model):
    buggy = dict(left_model)
    buggy["shapedirs"] = left_model["shapedirs"].copy()
    buggy["shapedirs"][:, 0] = right_model["shapedirs"][:, 0]      # the official left file's defect
    save_mano_pkl(right_model, tmp_path / "MANO_RIGHT.pkl")
    save_mano_pkl(buggy, tmp_path / "MANO_LEFT.pkl")
    fixed = ManoLayer(tmp_path / "MANO_LEFT.pkl", "left")            # finds MANO_RIGHT.pkl beside it
    assert fixed.shape_flipped
    assert torch.allclose(fixed.shapedirs, torch.as_tensor(left_model["shapedirs"], dtype=torch.float32))
    raw = ManoLayer(tmp_path / "MANO_LEFT.pkl", "left", fix_shape=False)
    assert not raw.shape_flipped
    betas = torch.randn(2, 10)
    before = raw(torch.zeros(2, 48), betas)[0]
    assert fix_shape(raw, ManoLayer(tmp_path / "MANO_RIGHT.pkl", "right")) and raw.shape_flipped
    after = raw(torch.zeros(2, 48), betas)[0]                       # caches follow the in-place edit
    assert torch.allclose(after, fixed(torch.zeros(2, 48), betas)[0], atol=1e-6) and not torch.allclose(before, after)
    lone = tmp_path / "alone"; lone.mkdir()
    save_mano_pkl(buggy, lone / "MANO_LEFT.pkl")
    with pytest.warns(UserWarning, match="fix_shape"):
        ManoLayer(lone / "MANO_LEFT.pkl", "left")


def test_gradients_flow(right_model):
    layer = ManoLayer(right_model, "right", use_pca=True, ncomps=6)
    pose, shape, trans = (torch.randn(3, n, requires_grad=True) for n in (9, 10, 3))
    v, j = layer(pose, shape, trans)
    (v.sum() + j.square().sum()).backward()
    for x in (pose, shape, trans):
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    z = torch.zeros(1, 9, requires_grad=True)                      # zero rotation: finite gradient (the +1e-8)
    layer(z)[0].sum().backward()
    assert torch.isfinite(z.grad).all()


def test_inference_mode_then_training(right_model):
    layer = ManoLayer(right_model, "right")
    with torch.inference_mode():
        v_inf, _ = layer(torch.zeros(2, 48))
    pose = torch.zeros(2, 48, requires_grad=True)
    v, _ = layer(pose)                       # caches built in inference mode must not leak into autograd
    v.sum().backward()
    assert pose.grad is not None and torch.allclose(v.detach(), v_inf)


def test_dtype_device_and_batch(right_model):
    layer = ManoLayer(right_model, "right")
    pose, betas = 0.3 * torch.randn(5, 48), torch.randn(5, 10)
    v32, j32 = layer(pose, betas)
    v64, j64 = layer(pose.double(), betas.double())
    assert v64.dtype == torch.float64 and j64.dtype == torch.float64
    assert torch.allclose(v32.double(), v64, atol=1e-5)
    v1, _ = layer(pose[2:3], betas[2:3])
    assert torch.allclose(v1[0], v32[2], atol=1e-6), "samples are independent of their batch"
    assert layer.faces.dtype == torch.long and len(layer.state_dict()) == 0, "buffers are not saved with a network"
    if torch.cuda.is_available():
        vc, _ = layer.cuda()(pose.cuda(), betas.cuda())
        assert vc.is_cuda and torch.allclose(vc.cpu(), v32, atol=1e-5)


def test_sizes_come_from_the_file():
    m = random_mano_model(6, n_verts=800, n_faces=1560)
    layer = ManoLayer(m, "right")
    v, j = layer(torch.zeros(2, 48))
    assert v.shape == (2, 800, 3) and j.shape == (2, 21, 3) and layer.faces.shape == (1560, 3)


# ---------------------------------------------------------------- files

def test_chumpy_style_pickle_loads_without_chumpy(tmp_path, right_model):
    path = write_chumpy_style_pkl(right_model, tmp_path / "MANO_RIGHT.pkl")
    raw = path.read_bytes()
    assert b"chumpy.ch" in raw and b"Ch" in raw and "chumpy" not in sys.modules
    with pytest.raises(ModuleNotFoundError):
        pickle.loads(raw)                                          # the plain unpickler needs chumpy
    m = load_mano_model(path)
    for k in ("shapedirs", "v_template", "weights", "posedirs", "J"):
        assert type(m[k]) is np.ndarray and m[k].dtype == np.float64
    assert np.array_equal(m["shapedirs"], right_model["shapedirs"])
    assert np.array_equal(m["J_regressor"], right_model["J_regressor"].toarray())
    assert m["f"].dtype == np.int64
    v, _ = ManoLayer(path, "right")(torch.zeros(1, 48))
    v2, _ = ManoLayer(right_model, "right")(torch.zeros(1, 48))
    assert torch.equal(v, v2)


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self): return (os.system, (f"touch {marker}",))
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(pickle.dumps({"v_template": Evil()}, protocol=2))
    with pytest.raises(UnsafePickleError, match="system") as e:
        load_mano_model(tmp_path / "MANO_RIGHT.pkl")
    assert "MANO_RIGHT.pkl" in str(e.value) and not marker.exists()
    with pytest.raises(UnsafePickleError):
        ManoLayer(tmp_path / "MANO_RIGHT.pkl", "right")


def test_npz_round_trip(tmp_path, right_model):
    m = load_mano_model(save_mano_pkl(right_model, tmp_path / "r.pkl"))
    save_mano_npz(m, tmp_path / "r.npz")
    with np.load(tmp_path / "r.npz", allow_pickle=False) as z:
        assert set(z.files) == set(MANO_KEYS) | {"J"}
    back = load_mano_model(tmp_path / "r.npz")
    assert all(np.array_equal(back[k], m[k]) for k in MANO_KEYS + ("J",))
    save_mano_npz(right_model, tmp_path / "direct.npz")          # straight from a MANO-format dict
    pose = torch.randn(2, 48)
    assert torch.equal(ManoLayer(tmp_path / "direct.npz", "right")(pose)[0], ManoLayer(tmp_path / "r.pkl", "right")(pose)[0])


def test_bad_files_give_clear_errors(tmp_path, right_model):
    with pytest.raises(FileNotFoundError, match="nothere.pkl"):
        load_mano_model(tmp_path / "nothere.pkl")
    (tmp_path / "junk.pkl").write_bytes(b"this is not a pickle")
    with pytest.raises(ManoFormatError, match="junk.pkl"):
        load_mano_model(tmp_path / "junk.pkl")
    (tmp_path / "junk.npz").write_bytes(b"PK not a zip")
    with pytest.raises(ManoFormatError, match="junk.npz"):
        load_mano_model(tmp_path / "junk.npz")
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ManoFormatError, match="expected a dict"):
        load_mano_model(tmp_path / "list.pkl")
    m = check_mano_model(right_model)
    cases = {
        "missing": ({k: v for k, v in m.items() if k != "posedirs"}, "posedirs"),
        "shapedirs": ({**m, "shapedirs": m["shapedirs"][:700]}, r"'shapedirs' has shape 700×3×10, expected 778×3×10"),
        "regressor": ({**m, "J_regressor": m["J_regressor"][:, :777]}, r"'J_regressor' has shape 16×777, expected 16×778"),
        "weights": ({**m, "weights": m["weights"][:, :15]}, r"'weights' has shape 778×15, expected 778×16"),
        "faces": ({**m, "f": m["f"] + 5}, r"'f' must hold vertex indices in \[0, 778\)"),
        "nan": ({**m, "v_template": m["v_template"] * np.nan}, "'v_template' holds NaN"),
        "tree": ({**m, "kintree_table": np.array([[0, 2] + list(m["kintree_table"][0, 2:]), list(range(16))])}, "cycle"),
        "pca": ({**m, "hands_components": np.zeros((45, 45))}, "singular"),
    }
    for name, (bad, pattern) in cases.items():
        save_mano_npz_path = tmp_path / f"{name}.npz"
        np.savez(save_mano_npz_path, **{k: v for k, v in bad.items() if k != "parents"})
        with pytest.raises(ManoFormatError, match=pattern) as e:
            load_mano_model(save_mano_npz_path)
        assert f"{name}.npz" in str(e.value), name
    with pytest.raises(ManoFormatError, match="16-joint"):
        tiny = {**m, "kintree_table": m["kintree_table"][:, :15], "weights": m["weights"][:, :15],
                "J_regressor": m["J_regressor"][:15], "J": m["J"][:15], "posedirs": m["posedirs"][:, :, :126],
                "hands_components": m["hands_components"][:42, :42], "hands_mean": m["hands_mean"][:42]}
        ManoLayer({k: v for k, v in tiny.items() if k != "parents"}, "right")
    with pytest.raises(ValueError, match="side"):
        ManoLayer(right_model, "middle")


def test_three_betas_file_is_named(tmp_path, right_model, monkeypatch):
    "A MANO file with 3 shape components is refused by name when read, not deep in a forward pass with 10 betas."
    three = {**right_model, "shapedirs": np.asarray(right_model["shapedirs"])[:, :, :3]}
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(pickle.dumps(
        {k: (v.toarray() if hasattr(v, "toarray") else np.asarray(v)) for k, v in three.items()}, protocol=2))
    msg = (f"{tmp_path / 'MANO_RIGHT.pkl'}: key 'shapedirs' has 3 shape components (betas), expected 10: MANO models, "
           "the InterHand2.6M fits and the network use 10 betas")
    with pytest.raises(ManoFormatError) as e:
        load_mano_model(tmp_path / "MANO_RIGHT.pkl")
    assert str(e.value) == msg
    from intaghand.config import get_config
    (tmp_path / "MANO_RIGHT.pkl").rename(tmp_path / "OPENHAND_RIGHT.pkl")
    with pytest.raises(ManoFormatError, match="OPENHAND_RIGHT.pkl: key 'shapedirs' has 3 shape components"):
        ManoLayer.from_config(get_config(overrides=["MISC.MANO_PATH", str(tmp_path)]), "right")
    with pytest.raises(ValueError, match=r"<right model dict>: shape must be B×10"):
        ManoLayer(right_model, "right")(torch.zeros(2, 48), torch.zeros(2, 3))


def test_from_config(tmp_path, monkeypatch, right_model, left_model):
    from intaghand.config import get_config
    d = tmp_path / "misc" / "mano"
    buggy = dict(left_model); buggy["shapedirs"] = left_model["shapedirs"].copy()
    buggy["shapedirs"][:, 0] = right_model["shapedirs"][:, 0]
    save_mano_pkl(right_model, d / "OPENHAND_RIGHT.pkl")
    save_mano_pkl(buggy, d / "OPENHAND_LEFT.pkl")
    monkeypatch.setenv("INTAGHAND_ROOT", str(tmp_path))
    cfg = get_config()
    right = ManoLayer.from_config(cfg, "right")
    left = ManoLayer.from_config(cfg, "left", use_pca=True)
    assert right.source.endswith("OPENHAND_RIGHT.pkl") and left.use_pca and left.shape_flipped
    with pytest.raises(FileNotFoundError, match="MANO_RIGHT.pkl"):
        ManoLayer.from_config(get_config(overrides=["MISC.HAND_MODEL", "mano"]), "right")


def test_mirror_model_involution(right_model):
    twice = mirror_mano_model(mirror_mano_model(right_model))
    for k in MANO_KEYS:
        a, b = twice[k], right_model[k]
        a = a.toarray() if hasattr(a, "toarray") else np.asarray(a)
        b = b.toarray() if hasattr(b, "toarray") else np.asarray(b)
        assert np.array_equal(a, b), k


def test_derived_cache_follows_the_thread_count():
    "Used under 2 threads, then under 1, a layer computes what a fresh copy computes under 1 (a pool worker's bytes)."
    import copy
    from intaghand.fixtures import random_mano_layers
    from intaghand.pool import fixed_threads
    layer = random_mano_layers(0)["right"]
    g = torch.Generator().manual_seed(3)
    width = 3 + (layer.ncomps if layer.use_pca else layer.hands_components.shape[1])
    pose, shape = 0.5 * torch.randn(64, width, generator=g), torch.randn(64, 10, generator=g)
    with fixed_threads(2): layer(pose, shape)
    with fixed_threads(1):
        used, fresh = layer(pose, shape), copy.deepcopy(layer)(pose, shape)
    assert all(torch.equal(a, b) for a, b in zip(used, fresh))
