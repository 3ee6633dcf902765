"""Mesh-graph assets (intaghand.graph): coarsening, permutations, Laplacians, upsampling, files and CLI."""
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from intaghand.cli import main as cli_main
from intaghand.config import EMBEDDED_GRAPH_DIR, EMBEDDED_MANO_NAMES, get_config, resolve_path
from intaghand.graph import (ASSET_FILES, GRAPH_KEYS, MANO_PARENTS, PART_NAMES, build_assets, build_assets_main,
                             build_graph, build_mano_seg, build_upsample, build_v_color, check_graph_dict, compute_perm,
                             cut_perm, graph_level_sizes, hem_coarsen, hem_one_level, level_ancestors, load_graph_pkl,
                             mesh_adjacency, pickle_bytes, read_hand_model, visit_order)
from intaghand.io import safe_load_pickle


# ---------------------------------------------------------------- synthetic meshes, made here

def sphere(subdiv=2):
    "Closed mesh: a subdivided octahedron on the unit sphere."
    v = [np.array(p, float) for p in [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]]]
    f = [[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]]
    for _ in range(subdiv):
        mids, nf = {}, []
        def mid(a, b):
            key = (min(a, b), max(a, b))
            if key not in mids:
                m = v[a] + v[b]; v.append(m / np.linalg.norm(m)); mids[key] = len(v) - 1
            return mids[key]
        for a, b, c in f:
            ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
            nf += [[a, ab, ca], [b, bc, ab], [c, ca, bc], [ab, bc, ca]]
        f = nf
    return np.array(v), np.array(f)


def grid(rows=11, cols=17):
    "Open mesh: a triangulated rows×cols grid, slightly bent."
    y, x = np.mgrid[0:rows, 0:cols]
    v = np.stack([x.ravel(), y.ravel(), 0.05 * (x.ravel() - cols / 2) ** 2], 1).astype(float)
    f = []
    for i in range(rows - 1):
        for j in range(cols - 1):
            a, b, c, d = i * cols + j, i * cols + j + 1, (i + 1) * cols + j + 1, (i + 1) * cols + j
            f += [[a, b, c], [a, c, d]]
    return v, np.array(f)


MESHES = {"sphere": sphere(2), "sphere3": sphere(3), "grid": grid()}


def toy_model(v, f, full=False):
    "A MANO-format dict on mesh (v, f): 16 joints in MANO's tree; `full` adds every key the MANO pkl has."
    n = len(v)
    w = np.zeros((n, 16)); w[np.arange(n), np.arange(n) % 16] = 0.7; w[:, 0] += 0.3
    m = {"f": f.astype(np.uint32), "v_template": v, "weights": w,
         "kintree_table": np.array([[2 ** 32 - 1, *MANO_PARENTS[1:]], list(range(16))], dtype=np.int64)}
    if full:
        rng = np.random.default_rng(0)
        jr = np.zeros((16, n)); jr[np.arange(n) % 16, np.arange(n)] = 1; jr /= jr.sum(1, keepdims=True)
        m.update(J_regressor=sp.csc_matrix(jr), J=jr @ v, posedirs=rng.normal(0, 1e-3, (n, 3, 135)),
                 shapedirs=rng.normal(0, 1e-3, (n, 3, 10)), hands_components=np.eye(45), hands_mean=np.zeros(45),
                 bs_style="lbs", bs_type="lrotmin")
    return m


@pytest.fixture(scope="module", params=list(MESHES))
def built(request):
    v, f = MESHES[request.param]
    return v, f, build_graph(f)


# ---------------------------------------------------------------- HEM, with the original's quirks

def test_hem_quirks_on_a_path():
    # path 0-1-2-3, visited by degree [0, 3, 1, 2]. Vertex 3 is the last row, whose only entry the original's
    # off-by-one row lengths skip, so it stays alone; 2 then finds both neighbours taken.
    W = sp.csr_matrix(np.array([[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 1, 0]], np.float32))
    assert visit_order(W).tolist() == [0, 3, 1, 2]
    assert hem_one_level(W, visit_order(W), np.asarray(W.sum(0)).ravel()).tolist() == [0, 0, 2, 1]


def test_visit_order_is_stable():
    W = sp.csr_matrix(np.ones((5, 5), np.float32) - np.eye(5, dtype=np.float32))
    assert visit_order(W).tolist() == [0, 1, 2, 3, 4]


def test_hem_levels_pair_vertices():
    v, f = MESHES["sphere3"]
    graphs, parents = hem_coarsen(mesh_adjacency(f), 4)
    for fine, coarse, p in zip(graphs, graphs[1:], parents):
        counts = np.bincount(p)
        assert counts.min() >= 1 and counts.max() <= 2 and len(counts) == coarse.shape[0]
        assert (coarse != coarse.T).nnz == 0
        assert np.isclose(coarse.sum(), fine.sum()), "coarsening keeps the total edge weight"


def test_isolated_vertex_is_a_clear_error():
    with pytest.raises(ValueError, match="unreferenced"):
        build_graph(np.array([[0, 1, 2], [0, 2, 3]]), num_vertices=5)


def test_compute_perm_original_example():
    perms = compute_perm([np.array([4, 1, 1, 2, 2, 3, 0, 0, 3]), np.array([2, 1, 0, 1, 0])])
    assert perms == [[3, 4, 0, 9, 1, 2, 5, 8, 6, 7, 10, 11], [2, 4, 1, 3, 0, 5], [0, 1, 2]]


# ---------------------------------------------------------------- the graph dict

def test_sizes_halve(built):
    v, f, g = built
    sizes = graph_level_sizes(g)
    assert len(sizes) == 5 and all(s == sizes[-1] * 2 ** (4 - i) for i, s in enumerate(sizes))
    assert sizes[0] >= len(v) and [a.shape[0] for a in g["coarsen_graphs_adj"]] == sizes


def test_permutations(built):
    v, f, g = built
    n, m = len(v), graph_level_sizes(g)[0]
    rev = g["graph_perm_reverse"]
    assert sorted(rev.tolist()) == list(range(m)), "graph_perm_reverse is a permutation"
    uncut = np.argsort(rev)
    assert np.array_equal(rev[uncut], np.arange(m)), "graph_perm_reverse inverts the uncut order"
    cut = np.asarray(g["graph_perm"])
    assert cut.max() < n and cut.min() >= 0 and set(cut.tolist()) == set(range(n)), "no fakes, every vertex present"
    assert np.array_equal(cut[uncut < n], uncut[uncut < n]) and np.array_equal(cut[rev[:n]], np.arange(n))
    fakes = np.flatnonzero(uncut >= n)
    assert len(fakes) == m - n
    for i in fakes:                       # the fake slot holds a real vertex of its nearest subtree with one
        k = 1
        while not (uncut[(i >> k) << k:((i >> k) + 1) << k] < n).any(): k += 1
        block = uncut[(i >> k) << k:((i >> k) + 1) << k]
        assert cut[i] in block[block < n]
    assert np.array_equal(g["graph_mask"].numpy(), (uncut < n).astype(np.float32))


def test_tree_structure(built):
    "Siblings sit side by side: the level-(k+1) adjacency is the level-k one pooled over pairs (real part)."
    v, f, g = built
    A = g["coarsen_graphs_adj"]
    for k in range(4):
        m = A[k].shape[0]
        P = sp.csr_matrix((np.ones(m, np.float32), (np.arange(m) // 2, np.arange(m))), shape=(m // 2, m))
        pooled = (P @ A[k] @ P.T).toarray()
        coarse = A[k + 1].toarray()
        assert np.array_equal(pooled, coarse), f"level {k + 1} is level {k} with sibling pairs merged"


def test_laplacians(built):
    v, f, g = built
    Ls = g["coarsen_graphs_L"]
    for i, L in enumerate(Ls):
        assert isinstance(L, sp.csr_matrix) and L.dtype == np.float32
        assert abs(L - L.T).max() < 1e-6
        ev = np.linalg.eigvalsh(L.toarray().astype(np.float64))
        if i < 4:    # the original's L/(2·λmax) − I
            assert ev.min() >= -1 - 1e-5 and abs(ev.max() + 0.5) < 1e-5
        else:        # the coarsest: plain normalised Laplacian
            assert ev.max() <= 2 + 1e-5 and abs(ev.min()) < 1e-5, "plain normalised Laplacian: [0, 2], 0 included"
    # the finest rescaled Laplacian is L0/(2λ) − I with L0 the normalised Laplacian of the permuted adjacency
    A0 = g["coarsen_graphs_adj"][0].toarray().astype(np.float64)
    d = A0.sum(0); dinv = np.where(d > 0, 1 / np.sqrt(np.maximum(d, 1e-30)), 0)
    L0 = np.eye(len(d)) - dinv[:, None] * A0 * dinv[None, :]
    lmax = np.linalg.eigvalsh(L0)[-1]
    assert np.allclose(Ls[0].toarray(), L0 / (2 * lmax) - np.eye(len(d)), atol=1e-6)


def test_formats_exactly(built):
    v, f, g = built
    n = len(v)
    assert list(g) == list(GRAPH_KEYS)
    assert isinstance(g["mesh_faces"], np.ndarray) and np.array_equal(g["mesh_faces"], f)
    assert isinstance(g["mesh_adj"], sp.csr_matrix) and g["mesh_adj"].shape == (n, n) and g["mesh_adj"].dtype == np.float32
    assert set(np.unique(g["mesh_adj"].data)) == {1.0} and (g["mesh_adj"] != g["mesh_adj"].T).nnz == 0
    assert g["mesh_adj"].diagonal().sum() == 0
    assert isinstance(g["graph_mask"], torch.Tensor) and g["graph_mask"].dtype == torch.float32
    assert tuple(g["graph_mask"].shape) == (graph_level_sizes(g)[0],)
    for key in ("coarsen_graphs_adj", "coarsen_graphs_L"):
        assert isinstance(g[key], list) and len(g[key]) == 5
        assert all(isinstance(x, sp.csr_matrix) and x.dtype == np.float32 for x in g[key])
    assert isinstance(g["graph_perm"], list) and all(type(x) is int for x in g["graph_perm"])
    assert isinstance(g["graph_perm_reverse"], np.ndarray) and g["graph_perm_reverse"].dtype == np.int64


def test_edges_of_mesh(built):
    v, f, g = built
    A = g["mesh_adj"].toarray()
    edges = {tuple(sorted(e)) for t in f for e in ((t[0], t[1]), (t[1], t[2]), (t[0], t[2]))}
    assert int(A.sum()) == 2 * len(edges) and all(A[a, b] == 1 for a, b in edges)


# ---------------------------------------------------------------- upsample, colours, segmentation

def test_upsample(built):
    v, f, g = built
    U = build_upsample(g, v)
    n, m2 = len(v), graph_level_sizes(g)[2]
    assert U.shape == (n, m2) and U.dtype == np.float32 and (U >= 0).all()
    assert np.allclose(U.sum(1), 1, atol=1e-5)
    own = g["graph_perm_reverse"][:n] // 4
    assert np.array_equal(own, level_ancestors(g, 2, n))
    assert (U.argmax(1) == own).all(), "the large weight sits in the column of the vertex's own level-2 ancestor"
    srt = np.sort(U, 1)
    assert (srt[:, -1] >= 1.2 * srt[:, -2]).all()
    # local: every weight goes to the ancestor or a level-2 neighbour of it
    A2 = g["coarsen_graphs_adj"][2].toarray() > 0
    rows, cols = np.nonzero(U)
    assert all(c == own[r] or A2[own[r], c] for r, c in zip(rows, cols))


def test_v_color_and_seg():
    v, f = MESHES["grid"]
    c = build_v_color(v)
    assert c.shape == (len(v), 3) and c.dtype == np.float32 and c.min() == 0 and c.max() == 1
    seg = build_mano_seg(toy_model(v, f)["weights"], toy_model(v, f)["kintree_table"])
    assert seg["part_names"] == list(PART_NAMES) and seg["part"].dtype == np.int64
    assert seg["joint"].tolist() == (np.arange(len(v)) % 16).tolist()
    assert seg["part"][13] == PART_NAMES.index("thumb") and seg["part"][1] == PART_NAMES.index("index")
    with pytest.raises(ValueError, match="kintree"):
        build_mano_seg(np.eye(16), np.array([list(range(-1, 15)), list(range(16))]))


# ---------------------------------------------------------------- files, determinism, CLI

def test_build_assets_files_and_determinism(tmp_path):
    v, f = MESHES["sphere"]
    m = toy_model(v, f)
    out = build_assets(models={"right": m, "left": m}, out_dir=tmp_path / "a", progress=False)
    assert {k: p.name for k, p in out.items()} == ASSET_FILES
    again = build_assets(models={"right": m, "left": m}, out_dir=tmp_path / "b", progress=False)
    for k in out: assert out[k].read_bytes() == again[k].read_bytes(), f"{k}: same bytes on a second build"
    g = load_graph_pkl(out["graph_left"])
    assert list(g) == list(GRAPH_KEYS) and isinstance(g["graph_mask"], torch.Tensor)
    with open(out["graph_left"], "rb") as fh: plain = pickle.load(fh)
    assert torch.equal(plain["graph_mask"], g["graph_mask"])
    up, col, seg = (safe_load_pickle(out[k]) for k in ("upsample", "v_color", "mano_seg"))
    assert up.shape == (len(v), graph_level_sizes(g)[2]) and col.shape == (len(v), 3) and seg["part"].shape == (len(v),)
    assert pickle_bytes(g) == out["graph_left"].read_bytes(), "reading and re-pickling round-trips"


def test_load_graph_pkl_rejects_other_dicts(tmp_path):
    p = tmp_path / "bad.pkl"
    p.write_bytes(pickle.dumps({"coarsen_graphs_L": []}))
    with pytest.raises(ValueError, match="missing keys"):
        load_graph_pkl(p)
    with pytest.raises(ValueError, match="halve"):
        check_graph_dict({"coarsen_graphs_L": [sp.eye(10), sp.eye(4)], "graph_perm": [0] * 10,
                          "graph_perm_reverse": np.arange(10)})


def write_mano_dir(d: Path, v, f):
    d.mkdir(parents=True, exist_ok=True)
    for name in ("MANO_RIGHT.pkl", "MANO_LEFT.pkl"):
        (d / name).write_bytes(pickle.dumps(toy_model(v, f, full=True), protocol=2))
    return d


def test_cli_builds_refuses_then_overwrites(tmp_path, capsys):
    v, f = MESHES["sphere"]
    mano = write_mano_dir(tmp_path / "mano", v, f)
    out = tmp_path / "out"
    assert cli_main(["build-assets", "--mano-dir", str(mano), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "graph_right: levels" in text and "wrote" in text
    assert sorted(p.name for p in out.iterdir()) == sorted(ASSET_FILES.values())
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / "v_color.pkl").write_bytes(b"user file")
    assert build_assets_main(["--mano-dir", str(mano), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "refusing to overwrite" in err and "--overwrite" in err
    assert (out / "v_color.pkl").read_bytes() == b"user file", "nothing replaced without --overwrite"
    assert build_assets_main(["--mano-dir", str(mano), "--out", str(out), "--overwrite", "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no temporary files left"


def test_cli_missing_mano_files(tmp_path, capsys):
    empty = tmp_path / "nomano"; empty.mkdir()
    (empty / "MANO_RIGHT.pkl").write_bytes(pickle.dumps(toy_model(*MESHES["sphere"])))
    rc = cli_main(["build-assets", "--mano-dir", str(empty), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 1 and "MANO_LEFT.pkl" in err and str(empty) in err and "mano.is.tue.mpg.de" in err
    assert not (tmp_path / "o").exists()


def test_cli_needs_a_source(capsys):
    with pytest.raises(SystemExit):
        build_assets_main(["--out", "x"])
    assert "--mano-dir" in capsys.readouterr().err


# ---------------------------------------------------------------- the embedded hand model, when present

EMB_MODEL = resolve_path(get_config().MISC.MANO_PATH) / EMBEDDED_MANO_NAMES["right"]
EMB_OUT = resolve_path(EMBEDDED_GRAPH_DIR)


@pytest.mark.skipif(not EMB_MODEL.is_file(), reason="embedded hand model not generated yet")
def test_embedded_model_assets(tmp_path):
    out = build_assets(embedded=True, out_dir=tmp_path, progress=False)
    hand = read_hand_model(EMB_MODEL)
    n = len(hand["v_template"])
    assert n == 778 and len(hand["f"]) == 1538
    g = load_graph_pkl(out["graph_right"])
    sizes = graph_level_sizes(g)
    assert all(s == sizes[-1] * 2 ** (4 - i) for i, s in enumerate(sizes)) and sizes[0] >= 778
    U = safe_load_pickle(out["upsample"])
    assert U.shape == (778, sizes[2]) and (U.argmax(1) == g["graph_perm_reverse"][:778] // 4).all()
    if (EMB_OUT / "graph_right.pkl").is_file():
        for k, p in out.items():
            assert (EMB_OUT / p.name).read_bytes() == p.read_bytes(), f"committed {p.name} is what the builder makes"
