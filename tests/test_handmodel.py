"""The embedded open hand model (intaghand.handmodel): topology, rig, shape and pose spaces, mirror, files."""
import hashlib
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from intaghand import handmesh, handposes, handmodel as hm
from intaghand.io import safe_load_pickle
from intaghand.mano import rodrigues_np

ROOT = Path(__file__).resolve().parents[1]
MIRROR = np.array([-1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def right():
    return hm.build_hand_model("right")


@pytest.fixture(scope="module")
def left():
    return hm.build_hand_model("left")


def _edges(F):
    return np.concatenate([F[:, [0, 1]], F[:, [1, 2]], F[:, [2, 0]]])


def _boundary_loops(F):
    "Boundary edges (directed as in their face) chained into loops."
    e = _edges(F)
    und = Counter(map(tuple, np.sort(e, 1)))
    bnd = [tuple(x) for x in e if und[tuple(sorted(x))] == 1]
    nxt = dict(bnd)
    assert len(nxt) == len(bnd), "a boundary vertex with two outgoing boundary edges"
    loops, seen = [], set()
    for a, _ in bnd:
        if a in seen: continue
        loop, v = [], a
        while v not in seen:
            seen.add(v); loop.append(v); v = nxt[v]
        loops.append(loop)
    return loops


def test_counts_and_dtypes(right):
    assert right["v_template"].shape == (778, 3) and right["v_template"].dtype == np.float64
    assert right["f"].shape == (1538, 3) and right["f"].dtype == np.uint32
    assert right["weights"].shape == (778, 16)
    assert right["posedirs"].shape == (778, 3, 135)
    assert right["shapedirs"].shape == (778, 3, 10)
    assert right["J"].shape == (16, 3)
    assert right["J_regressor"].shape == (16, 778) and right["J_regressor"].format == "csc"
    assert right["hands_components"].shape == (45, 45) and right["hands_mean"].shape == (45,)
    assert right["kintree_table"].shape == (2, 16)
    assert right["kintree_table"][0, 0] == 4294967295
    assert list(right["kintree_table"][0, 1:]) == [0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14]
    assert right["bs_style"] == "lbs" and right["bs_type"] == "lrotmin"


@pytest.mark.parametrize("side", ["right", "left"])
def test_manifold_oriented_one_wrist_hole(side, right, left):
    m = right if side == "right" else left
    F = m["f"].astype(np.int64)
    V = m["v_template"]
    assert len(np.unique(F)) == 778                                   # every vertex used
    assert (F[:, 0] != F[:, 1]).all() and (F[:, 1] != F[:, 2]).all() and (F[:, 0] != F[:, 2]).all()
    directed = Counter(map(tuple, _edges(F)))
    assert max(directed.values()) == 1                                # consistent orientation
    und = Counter(map(tuple, np.sort(_edges(F), 1)))
    assert set(und.values()) == {1, 2}                                # manifold edges
    assert 778 - len(und) + 1538 == 1                                 # Euler characteristic 1
    loops = _boundary_loops(F)
    assert [len(l) for l in loops] == [16]                            # one 16-edge wrist loop
    assert np.abs(V[loops[0], 0]).min() > 0.08                        # ... at the wrist
    # no pinched vertices: the faces around each vertex form one fan (a cycle inside, a path on the wrist loop)
    for v in range(778):
        nb = {}
        for f in F[(F == v).any(1)]:
            i = list(f).index(v)
            nb[f[(i + 1) % 3]] = f[(i + 2) % 3]
        starts = set(nb) - set(nb.values())
        start = next(iter(starts)) if starts else next(iter(nb))
        x, n = start, 0
        while x in nb:
            x = nb[x]; n += 1
            if x == start or n > len(nb): break
        assert n == len(nb) and len(starts) <= 1, v
    # outward: the volume closed by a fan over the wrist loop is positive (right), negative after the mirror
    c = V[loops[0]].mean(0)
    tri = V[F]
    vol = np.einsum("fi,fi->f", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6
    L = loops[0][::-1]
    vol += sum(np.dot(V[L[i]], np.cross(V[L[(i + 1) % 16]], c)) for i in range(16)) / 6
    assert vol > 1e-4                                                 # outward normals on both hands


def test_fingertip_ids_are_finger_extremes(right):
    topo = handmesh._topology()
    V = right["v_template"]
    for name, i in hm.TIP_IDS.items():
        j3 = hm.CHAIN_JOINTS[name][2]
        own = np.flatnonzero(right["weights"][:, j3] > 0.5)           # the distal phalanx, by skinning
        d = topo["chains"][name]["dirs"][2]
        assert i in own and own[(V[own] @ d).argmax()] == i, name
        assert topo["part"][i] == name
    assert V[:, 0].argmin() == hm.TIP_IDS["middle"]


def test_hand_proportions(right):
    V, J = right["v_template"], right["J"]
    length = J[0, 0] - V[hm.TIP_IDS["middle"], 0]
    assert 0.17 < length < 0.20                                       # MANO: about 0.18 m wrist to middle tip
    assert 0.07 < np.ptp(V[handmesh._topology()["rings"]["palm"][-1], 2]) < 0.10    # palm width at the knuckles
    assert 0.085 < np.linalg.norm(J[0] - J[4]) < 0.1                  # wrist -> middle MCP ≈ the original's 0.095
    assert V[hm.TIP_IDS["thumb"], 2] > J[1, 2] + 0.02                 # thumb on the +z side, beside the index


def test_weights_and_regressor(right):
    W, R = right["weights"], right["J_regressor"]
    assert np.allclose(W.sum(1), 1, atol=1e-8) and W.min() >= 0
    assert np.allclose(np.asarray(R.sum(1)).ravel(), 1, atol=1e-8) and R.min() >= 0
    assert np.abs(R @ right["v_template"] - right["J"]).max() < 1e-8
    assert (np.diff(R.tocsr().indptr) >= 8).all()                     # every joint averages a ring, not one vertex
    # joints sit inside the surface near their design points
    topo = handmesh._topology()
    for name, js in hm.CHAIN_JOINTS.items():
        for i, j in enumerate(js):
            assert np.linalg.norm(right["J"][j] - topo["chains"][name]["points"][i]) < 0.003


def test_pca_basis(right, left):
    C = right["hands_components"]
    assert np.allclose(C @ C.T, np.eye(45), atol=1e-8)
    assert np.allclose(left["hands_components"] @ left["hands_components"].T, np.eye(45), atol=1e-8)
    X = handposes._pose_samples(512)
    var = (((X - right["hands_mean"]) @ C.T) ** 2).mean(0)
    assert var[0] > 3 * var[1] and (np.diff(var[:10]) < 0.05 * var[0]).all()
    # component 0 is a grasp: every finger's flexion moves the same way
    pc0 = C[0].reshape(15, 3)
    frames = handmesh._joint_frames()
    flex = [pc0[j - 1] @ frames[j][1] for j in range(1, 13)]
    assert all(np.sign(f) == np.sign(flex[0]) for f in flex) and min(abs(f) for f in flex) > 0.05
    # the mean pose is a relaxed, slightly curled hand
    mean_flex = [right["hands_mean"].reshape(15, 3)[j - 1] @ frames[j][1] for j in range(1, 13)]
    assert 0.1 < np.mean(mean_flex) < 1.2


def _typical():
    return {"fist": hm.hand_pose([1, 1, 1, 1], 0, 0.9, 0.8), "spread": hm.hand_pose([-0.1] * 4, 1.0),
            "opposition": hm.hand_pose([0.35, 0.5, 0.6, 0.7], 0, 1.0, 0.4),
            "pinch": hm.hand_pose([0.5, 0.2, 0.1, 0.1], 0.2, 1.0, 0.1)}


@pytest.mark.parametrize("name", ["fist", "spread", "opposition", "pinch", "mean"])
def test_skinning_does_not_tear(right, name):
    pose = right["hands_mean"] if name == "mean" else _typical()[name]
    cos, lo, hi = hm.skinning_quality(right, pose)
    assert cos > 0, f"{name}: a face turned over (normal cosine {cos:.2f})"
    assert lo > 0.3 and hi < 2.2, f"{name}: edge ratios {lo:.2f} .. {hi:.2f}"


@pytest.mark.parametrize("k", range(3))
def test_skinning_along_the_first_components(right, k):
    X = handposes._pose_samples(512)
    sd = ((X - right["hands_mean"]) @ right["hands_components"].T).std(0)
    for sign in (-2, 2):
        q = hm.skinning_quality(right, right["hands_mean"] + sign * sd[k] * right["hands_components"][k])
        assert q[0] > 0 and q[1] > 0.25 and q[2] < 2.5, (k, sign, q)


def test_opposition_reaches_the_fingers(right):
    v, _ = hm.lbs_forward(right, _typical()["pinch"])
    assert np.linalg.norm(v[hm.TIP_IDS["thumb"]] - v[hm.TIP_IDS["index"]]) < 0.02
    v0 = right["v_template"]
    assert np.linalg.norm(v0[hm.TIP_IDS["thumb"]] - v0[hm.TIP_IDS["index"]]) > 0.06


def test_posedirs_are_local_and_small(right):
    P = right["posedirs"]
    assert np.abs(P).max() > 1e-4                                     # not zeros
    frames = handmesh._joint_frames()
    for j in (2, 5, 14):
        R = rodrigues_np(np.pi / 2 * frames[j][1])
        vec = np.zeros(135); vec[9 * (j - 1):9 * j] = (R - np.eye(3)).ravel()
        d = np.linalg.norm(P @ vec, axis=1)
        assert 0.0005 < d.max() < 0.004                               # a few millimetres at 90°
        moved = d > 1e-5
        near = np.linalg.norm(right["v_template"] - right["J"][j], axis=1) < 0.03
        assert (moved <= near).all()                                  # only around that joint
        knuckle_up = (P @ vec) @ frames[j][2]
        assert knuckle_up.max() > 0.0003                              # the back of the knuckle rises on flexion


def _measure(v, name, jreg):
    J = hm.CHAIN_JOINTS
    tip = lambda f: v[hm.TIP_IDS[f]]
    stations = lambda f: hm.THUMB_STATIONS if f == "thumb" else hm.FINGER_STATIONS
    ring = lambda f, j: handmesh._topology()["rings"][f][stations(f).index(j)]
    if name == "finger_length": return np.mean([np.linalg.norm(tip(f) - v[ring(f, 1.0)].mean(0)) for f in hm.SPATIAL])
    if name == "palm_width": return np.ptp(v[handmesh._topology()["rings"]["palm"][-1], 2])
    if name == "thickness": return np.ptp(v[handmesh._topology()["rings"]["palm"][8], 1])
    if name == "finger_girth": return np.ptp(v[ring("middle", 1.0), 2])
    if name == "thumb_length": return np.linalg.norm(tip("thumb") - v[ring("thumb", 1.0)].mean(0))
    if name == "palm_length": return (jreg @ v)[0, 0] - (jreg @ v)[4, 0]            # wrist to middle MCP
    if name == "little_length": return np.linalg.norm(tip("little") - v[ring("little", 1.0)].mean(0))
    if name == "index_ring": return (np.linalg.norm(tip("index") - v[ring("index", 1.0)].mean(0))
                                     - np.linalg.norm(tip("ring") - v[ring("ring", 1.0)].mean(0)))
    if name == "knuckle_arch": return v[ring("middle", 1.0), 1].mean() - v[ring("little", 1.0), 1].mean()
    if name == "scale": return np.ptp(v[:, 0])
    raise KeyError(name)


@pytest.mark.parametrize("k", range(10))
def test_shape_directions_change_their_measure(right, k):
    name, step, _ = hm.SHAPE_PARAMS[k]
    v0, sd = right["v_template"], right["shapedirs"]
    base, up = _measure(v0, name, right["J_regressor"]), _measure(v0 + 2 * sd[:, :, k], name, right["J_regressor"])
    change = up - base
    if name == "knuckle_arch": assert 0.005 < change < 0.012          # 2 × 4 mm on the little finger
    elif name == "index_ring": assert change > 0.004
    else: assert 1.5 * step < change / base < 2.5 * step, (name, change / base)
    # ... and mostly only that: the middle finger's length moves only with scale, finger length and nothing else
    mid = lambda v: np.linalg.norm(v[hm.TIP_IDS["middle"]] - v[handmesh._topology()["rings"]["middle"][3]].mean(0))
    if name not in ("scale", "finger_length"):
        assert abs(mid(v0 + 2 * sd[:, :, k]) - mid(v0)) < 5e-4, name


def test_shape_keeps_joints_consistent(right):
    betas = np.linspace(-2, 2, 10)
    v, J = hm.lbs_forward(right, np.zeros(45), betas)
    assert np.abs(right["J_regressor"] @ v - J).max() < 1e-12


def test_left_is_the_mirror(right, left):
    assert np.allclose(left["v_template"], right["v_template"] * MIRROR)
    assert np.allclose(left["J"], right["J"] * MIRROR)
    assert np.array_equal(left["f"], right["f"][:, [0, 2, 1]])
    assert np.allclose(left["shapedirs"], right["shapedirs"] * MIRROR[None, :, None])
    assert np.allclose(left["weights"], right["weights"]) and (left["J_regressor"] != right["J_regressor"]).nnz == 0
    # the original's fix_shape test (left/right shapedirs x rows differ by < 1 in total) must not fire
    assert np.abs(left["shapedirs"][:, 0] - right["shapedirs"][:, 0]).sum() > 1
    rng = np.random.default_rng(0)
    for _ in range(3):
        pose, betas = rng.normal(scale=0.4, size=48), rng.normal(size=10)
        vr, jr = hm.lbs_forward(right, pose, betas)
        vl, jl = hm.lbs_forward(left, pose * np.r_[1, -1, -1, hm.AA_MIRROR], betas)
        assert np.abs(vl - vr * MIRROR).max() < 1e-9 and np.abs(jl - jr * MIRROR).max() < 1e-9
        c = rng.normal(size=45)                                        # same PCA coefficients: mirror hands
        vr = hm.lbs_forward(right, c @ right["hands_components"] + right["hands_mean"])[0]
        vl = hm.lbs_forward(left, c @ left["hands_components"] + left["hands_mean"])[0]
        assert np.abs(vl - vr * MIRROR).max() < 1e-9
    assert np.allclose(hm.hand_pose([0.3, 0.4, 0.5, 0.6], 0.5, 0.5, 0.5, side="left"),
                       hm.hand_pose([0.3, 0.4, 0.5, 0.6], 0.5, 0.5, 0.5) * hm.AA_MIRROR)


def test_deterministic_bytes():
    a = hm.model_bytes(hm.build_hand_model("left"))
    hm._right_model_cached.cache_clear(); handmesh._topology.cache_clear()
    b = hm.model_bytes(hm.build_hand_model("left"))
    assert hashlib.sha256(a).hexdigest() == hashlib.sha256(b).hexdigest()
    assert a[:2] == b"\x80\x02"                                       # pickle protocol 2, like the MANO files


@pytest.mark.parametrize("side", ["right", "left"])
def test_committed_files_match_the_generator(side, right, left):
    path = ROOT / "misc" / "mano" / f"OPENHAND_{side.upper()}.pkl"
    assert path.is_file(), f"{path} missing: run intaghand.handmodel.write_embedded_models()"
    disk = safe_load_pickle(path)
    with open(path, "rb") as fh: latin = pickle.load(fh, encoding="latin1")   # how the original code reads MANO
    fresh = right if side == "right" else left
    assert list(disk) == list(fresh) and list(latin) == list(fresh)
    for k, v in fresh.items():
        if k == "J_regressor":
            assert disk[k].format == "csc" and np.allclose(disk[k].toarray(), v.toarray(), atol=1e-9)
            assert disk[k].tocoo().shape == (16, 778)
        elif isinstance(v, np.ndarray):
            assert disk[k].dtype == v.dtype and disk[k].shape == v.shape, k
            assert np.allclose(disk[k], v, atol=1e-9), k
        else:
            assert disk[k] == v
    # (bytes are not compared: BLAS kernels differ between CPUs in the last bit; every value is rounded to 1e-10, so
    # the values above are the promise that holds on any machine)


@pytest.mark.parametrize("threads", ["1", "2"])
def test_build_does_not_depend_on_the_thread_count(threads, right, left):
    "A build in a fresh process with OMP_NUM_THREADS=1 or 2 gives the bytes of this process's build (same machine)."
    import os, subprocess, sys
    code = ("import hashlib, intaghand.handmodel as hm\n"
            "print(*(hashlib.sha256(hm.model_bytes(hm.build_hand_model(s))).hexdigest() for s in ('right', 'left')))")
    env = {**os.environ, "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600, check=True)
    assert out.stdout.split() == [hashlib.sha256(hm.model_bytes(m)).hexdigest() for m in (right, left)]


def test_existing_file_with_the_same_values_is_kept(tmp_path):
    "overwrite=False accepts a file that holds the same model up to float rounding (built on another machine)."
    paths = hm.write_embedded_models(tmp_path)
    m = hm.build_hand_model("left")
    m["posedirs"] = m["posedirs"] + 1e-12                                # other bytes, same values
    paths[1].write_bytes(hm.model_bytes(m))
    kept = paths[1].read_bytes()
    hm.write_embedded_models(tmp_path, overwrite=False)
    assert paths[1].read_bytes() == kept
    m["posedirs"] = m["posedirs"] + 1e-4                                 # another model
    paths[1].write_bytes(hm.model_bytes(m))
    with pytest.raises(FileExistsError, match="differs from the embedded hand model"):
        hm.write_embedded_models(tmp_path, overwrite=False)


def test_write_embedded_models(tmp_path):
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(b"user's file")
    paths = hm.write_embedded_models(tmp_path)
    assert [p.name for p in paths] == ["OPENHAND_RIGHT.pkl", "OPENHAND_LEFT.pkl"]
    assert (tmp_path / "MANO_RIGHT.pkl").read_bytes() == b"user's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["MANO_RIGHT.pkl", "OPENHAND_LEFT.pkl", "OPENHAND_RIGHT.pkl"]
    mtime = paths[0].stat().st_mtime_ns
    hm.write_embedded_models(tmp_path, overwrite=False)               # same bytes: fine, file untouched
    assert paths[0].stat().st_mtime_ns == mtime
    paths[1].write_bytes(b"different")
    with pytest.raises(FileExistsError):
        hm.write_embedded_models(tmp_path, overwrite=False)
    hm.write_embedded_models(tmp_path)
    assert paths[1].read_bytes() == hm.model_bytes(hm.build_hand_model("left"))


def test_bad_side():
    with pytest.raises(ValueError):
        hm.build_hand_model("middle")


def test_mano_layer_reads_it(right):
    mano = pytest.importorskip("intaghand.mano")
    torch = pytest.importorskip("torch")
    path = ROOT / "misc" / "mano" / "OPENHAND_RIGHT.pkl"
    layer = mano.ManoLayer(str(path), "right", flat_hand_mean=True)
    pose = np.r_[0.1, 0.2, 0.3, hm.hand_pose([0.5, 0.6, 0.7, 0.8], 0.2, 0.8, 0.3)]
    betas = np.linspace(-1, 1, 10)
    v, j = layer(torch.tensor(pose, dtype=torch.float32)[None], torch.tensor(betas, dtype=torch.float32)[None])
    vv, _ = hm.lbs_forward(right, pose, betas)
    assert np.abs(v[0].numpy() - vv).max() < 1e-5
    assert np.abs(j[0].numpy()[[4, 8, 12, 16, 20]] - vv[[745, 317, 444, 556, 673]]).max() < 1e-5


def test_graph_coarsening_gives_mano_sizes(right, left):
    graph = pytest.importorskip("intaghand.graph")
    for m in (right, left):   # the original's HEM coarsening (stable visiting order) on this mesh: MANO's level sizes
        assert graph.graph_level_sizes(graph.build_graph(m["f"])) == [1008, 504, 252, 126, 63]
