"""The IntagHand network: official key set, checkpoint round trips, attention maps, determinism, symmetry."""
import copy
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

from intaghand.config import get_config
from intaghand.io import CheckpointError, atomic_torch_save, load_state_dict_checked
from intaghand.mano import joint_regressor_21
from intaghand.layers import capture_attention, graph_conv_cheby
from intaghand.model import build_model, load_weights, optimize_for_inference, prepare_graph

FIXTURE = Path(__file__).parent / "fixtures" / "intaghand-state-dict.json"


@pytest.fixture(scope="module")
def small_cfg():
    return get_config(preset="small")


@pytest.fixture(scope="module")
def small_model(assets, small_cfg):
    torch.manual_seed(0)
    return build_model(small_cfg, graph_assets=assets).eval()


@pytest.fixture(scope="module")
def img128():
    return torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))


def test_default_model_matches_official_key_list(assets):
    ref = json.loads(FIXTURE.read_text())
    model = build_model(get_config(), graph_assets=assets)
    sd = model.state_dict()
    got = [(k, list(v.shape)) for k, v in sd.items()]
    want = [(e["key"], e["shape"]) for e in ref["entries"]]
    assert len(got) == ref["num_entries"] == 1093
    assert got == want                                      # names, shapes and order
    dtypes = {e["key"]: e["dtype"] for e in ref["entries"]}
    assert all(str(v.dtype).replace("torch.", "") == dtypes[k] for k, v in sd.items())
    assert sum(p.numel() for p in model.parameters()) == ref["num_parameters_total"]
    assert len(list(model.parameters())) == ref["num_parameter_tensors"]
    # the frozen upsample matrix is initialised from the asset; dense_coor from v_color
    assert torch.allclose(sd["decoder.unsample_layer.weight"], torch.as_tensor(assets["upsample"], dtype=torch.float32))
    assert torch.allclose(sd["decoder.dense_coor"], torch.as_tensor(assets["v_color"], dtype=torch.float32))
    assert not model.decoder.unsample_layer.weight.requires_grad


def test_default_model_forward_shapes(assets):
    model = build_model(get_config(), graph_assets=assets).eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 256, 256), return_attention=True)
    assert out.left.verts3d.shape == (1, 778, 3) and out.right.verts2d.shape == (1, 778, 2)
    assert out.hms.shape == (1, 42, 64, 64) and out.mask.shape == (1, 2, 64, 64) and out.dense.shape == (1, 6, 64, 64)
    assert [a["left"].shape for a in out.attention.image] == [(1, 4, v, 64) for v in (63, 126, 252)]
    assert [a["right"].shape for a in out.attention.image_full] == [(1, 4, v + 64, v + 64) for v in (63, 126, 252)]


def test_caller_assets_not_mutated(assets, small_cfg):
    a = copy.deepcopy(assets)
    sizes = [L.shape[0] for L in a["graph_left"]["coarsen_graphs_L"]]
    m1 = build_model(small_cfg, graph_assets=a)
    m2 = build_model(small_cfg, graph_assets=a)           # the original would have reversed the list twice here
    assert [L.shape[0] for L in a["graph_left"]["coarsen_graphs_L"]] == sizes == [1008, 504, 252, 126, 63]
    for b1, b2 in zip(m1.buffers(), m2.buffers()):
        assert torch.equal(b1, b2)
    assert m1.decoder.dual_gcn.layers[0].graph_left.GCN_blocks[0].graph_L.shape == (63, 63)


def test_graph_Laplacians_are_not_in_state_dict(small_model):
    assert not any("graph_L" in k or "graph_perm" in k or "joint_regressor" in k for k in small_model.state_dict())
    names = [n for n, _ in small_model.named_buffers()]
    assert any(n.endswith("graph_L") for n in names) and "decoder.graph_perm_left" in names


def test_strict_round_trip_and_ddp_prefix(tmp_path, assets, small_cfg, small_model, img128):
    torch.manual_seed(123)
    other = build_model(small_cfg, graph_assets=assets).eval()
    atomic_torch_save(small_model.state_dict(), tmp_path / "plain.pth")
    atomic_torch_save({"model": {"module." + k: v for k, v in small_model.state_dict().items()}, "epoch": 3}, tmp_path / "ddp.pth")
    with torch.inference_mode():
        ref = small_model(img128)
        assert not torch.allclose(other(img128).left.verts3d, ref.left.verts3d)
        for name in ("plain.pth", "ddp.pth"):
            load_weights(other, tmp_path / name)
            out = other(img128)
            assert torch.equal(out.left.verts3d, ref.left.verts3d) and torch.equal(out.right.verts2d, ref.right.verts2d)
    assert other.state_dict().keys() == small_model.state_dict().keys()


def test_mismatched_checkpoint_lists_keys(assets, small_model):
    state = dict(small_model.state_dict())
    state.pop("decoder.coord_head.bias")
    state["decoder.extra.weight"] = torch.zeros(1)
    state["decoder.params_head.weight"] = torch.zeros(5, 5)
    with pytest.raises(CheckpointError) as e:
        load_state_dict_checked(small_model, state)
    msg = str(e.value)
    assert "missing (1): decoder.coord_head.bias" in msg and "decoder.extra.weight" in msg
    assert "decoder.params_head.weight" in msg and "shape mismatch" in msg
    big = build_model(get_config(), graph_assets=assets)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_weights(big, small_model.state_dict())


def test_attention_does_not_change_outputs(small_model, img128):
    m = small_model
    with torch.inference_mode():
        fast = m(img128)
        m.set_fast_attention(False)
        try:
            eager = m(img128)
            asked = m(img128, return_attention=True)
        finally:
            m.set_fast_attention(True)
        fast_asked = m(img128, return_attention=True)
    assert fast.attention is None and asked.attention is not None
    for side in ("left", "right"):
        for f in ("verts3d", "verts2d", "scale", "trans2d"):
            assert torch.equal(getattr(eager[side], f), getattr(asked[side], f))
            assert torch.equal(getattr(asked[side], f), getattr(fast_asked[side], f))
            ref = getattr(eager[side], f)
            assert torch.allclose(getattr(fast[side], f), ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
    assert torch.equal(eager.hms, asked.hms)


def test_attention_maps_shapes_and_rows(small_model, img128):
    with torch.inference_mode():
        att = small_model(img128, return_attention=True).attention
    G = (128 // 32) ** 2
    assert att.num_levels == 3 and att.grid_size == 4
    for l, V in enumerate((63, 126, 252)):
        assert att.image[l]["left"].shape == (2, 4, V, G)
        assert torch.equal(att.image[l]["right"], att.image_full[l]["right"][:, :, :V, V:])
        assert att.grid[l]["left"].shape == (2, 4, G, G)
        assert att.vertex_self[l]["right"].shape == (2, 4, V, V)
        assert att.cross[l]["r2l"].shape == att.cross[l]["l2r"].shape == (2, 4, V, V)
        for group in (att.image_full[l], att.grid[l], att.vertex_self[l], att.cross[l]):
            for w in group.values():
                assert (w >= 0).all()
                assert torch.allclose(w.sum(-1), torch.ones_like(w[..., 0]), atol=1e-5)
        # the vertex -> image block is a part of each row: its sums lie in (0, 1)
        s = att.image[l]["left"].sum(-1)
        assert (s > 0).all() and (s < 1).all()
    # a context manager gives the same maps to code that calls the model its own way
    with torch.inference_mode(), capture_attention() as sink:
        small_model(img128)
    n_attn = sum(1 for _ in sink)
    assert n_attn == 3 * (2 * 2 + 2 + 2)                     # per level: 2 hands × (grid + joint), 2 self, 2 cross


def test_cpu_determinism(assets, small_cfg, img128):
    torch.manual_seed(7)
    a = build_model(small_cfg, graph_assets=assets).eval()
    torch.manual_seed(7)
    b = build_model(small_cfg, graph_assets=assets).eval()
    with torch.inference_mode():
        o1, o2, o3 = a(img128), a(img128), b(img128)
    for o in (o2, o3):
        assert torch.equal(o1.left.verts3d, o.left.verts3d) and torch.equal(o1.right.trans2d, o.right.trans2d)
        assert torch.equal(o1.dense, o.dense)


def test_batch_independence(small_model, img128):
    with torch.inference_mode():
        both = small_model(img128)
        one = small_model(img128[1:])
    assert torch.allclose(both.right.verts3d[1:], one.right.verts3d, atol=1e-5)


_SWAP = [("graph_left", "graph_right"), ("img_ex_left", "img_ex_right"), ("gf_layer_left", "gf_layer_right"),
         ("L_self_attn_layer", "R_self_attn_layer"), ("layer_norm1", "layer_norm2"), ("ffL", "ffR")]


def _swap_key(k):
    for a, b in _SWAP:
        if f".{a}." in k: return k.replace(f".{a}.", f".{b}.")
        if f".{b}." in k: return k.replace(f".{b}.", f".{a}.")
    return k


def test_left_right_symmetry_with_swapped_weights(assets, small_cfg, small_model, img128):
    """With identical graphs for both hands, exchanging every left/right module's weights exchanges the hands'
    outputs (the heads, position embeddings and cross-attention projections are shared: quirk 7 in nbs/00a_original.ipynb)."""
    swapped = build_model(small_cfg, graph_assets=assets).eval()
    state = {_swap_key(k): v for k, v in small_model.state_dict().items()}
    swapped.load_state_dict(state, strict=True)
    with torch.inference_mode():
        o, s = small_model(img128, return_attention=True), swapped(img128, return_attention=True)
    for f in ("verts3d", "verts2d", "scale", "trans2d"):
        assert torch.allclose(getattr(o.left, f), getattr(s.right, f), atol=1e-5)
        assert torch.allclose(getattr(o.right, f), getattr(s.left, f), atol=1e-5)
    assert torch.allclose(o.attention.cross[2]["r2l"], s.attention.cross[2]["l2r"], atol=1e-5)
    assert not torch.allclose(o.left.verts3d, o.right.verts3d)


def test_chebyshev_recursion_K3():
    g = torch.Generator().manual_seed(0)
    x, L = torch.randn(2, 5, 3, generator=g), torch.randn(5, 5, generator=g)
    fc = nn.Linear(9, 4)
    T2 = 2 * L @ (L @ x) - x
    want = fc(torch.stack([x, L @ x, T2], -1).reshape(2, 5, 9))
    assert torch.allclose(graph_conv_cheby(x, fc, L, 3), want, atol=1e-5)


def test_norm1_is_dead_weight(small_model):
    """Quirk 1: the first LayerNorm of every GCN block does not influence the output."""
    block = small_model.decoder.dual_gcn.layers[0].graph_left.GCN_blocks[0]
    x = torch.randn(1, 63, block.fc1.in_features // block.graph_k)
    with torch.no_grad():
        y = block(x)
        saved = block.norm1.weight.clone()
        block.norm1.weight.mul_(3).add_(1)
        y2 = block(x)
        block.norm1.weight.copy_(saved)
    assert torch.equal(y, y2)


def test_positional_code_is_pooled_v_color(assets, small_model):
    dec = small_model.decoder
    pel, per = dec.get_hand_pe(1)
    perm = np.asarray(assets["graph_left"]["graph_perm"])
    want = (2 * assets["v_color"][perm] - 1).reshape(63, 16, 3).mean(1)
    assert np.allclose(pel[0].numpy(), want, atol=1e-5) and torch.allclose(pel, per)


def test_upsample_maps_gcn_to_mesh_order(small_model):
    """The 778 vertices are `upsample @ verts252`, and the nearest-parent mesh puts every vertex on its ancestor."""
    img = torch.randn(1, 3, 128, 128)
    with torch.inference_mode():
        out = small_model(img)
    lv = out.left.levels[0]
    W = small_model.decoder.unsample_layer.weight
    assert torch.allclose(out.left.verts3d[0], W @ lv.verts3d[0], atol=1e-5)
    rev = small_model.decoder.graph_perm_reverse_left
    assert torch.equal(lv.verts3d_mano[0], lv.verts3d[0][rev // 4])
    assert torch.equal(small_model.vertex_level_index(2, "left"), rev // 4)
    assert torch.equal(small_model.vertex_level_index(0, "right"), small_model.decoder.graph_perm_reverse_right // 16)


def test_projection_matches_2d_outputs(small_model, img128):
    with torch.inference_mode():
        out = small_model(img128)
    h = out.right
    u = 128 * h.scale[:, None] * h.verts3d[..., 0] + 64 * h.trans2d[:, None, 0] + 64
    assert torch.allclose(h.verts2d[..., 0], u, atol=1e-4)


def test_joint_regressor(small_model, img128):
    J16 = sp.random(16, 778, density=0.02, format="csr", random_state=0)
    R = joint_regressor_21(J16)
    assert R.shape == (21, 778) and np.allclose(R[0], J16.toarray()[0]) and R[8, 317] == 1 and R[12, 444] == 1
    m = copy.deepcopy(small_model).attach_joint_regressor(R)
    with torch.inference_mode():
        out = m(img128)
    assert out.left.joints3d.shape == (2, 21, 3) and out.right.joints2d.shape == (2, 21, 2)
    assert torch.allclose(out.left.joints3d, torch.einsum("jv,bvc->bjc", torch.as_tensor(R), out.left.verts3d), atol=1e-5)
    assert small_model(img128[:1]).left.joints3d is None


def test_original_tuple_adapter(small_model, img128):
    with torch.inference_mode():
        out = small_model(img128)
    result, params, hand_list, other = out.to_original()
    assert result["verts3d"]["left"] is out.left.verts3d and params["scale"]["right"] is out.right.scale
    assert len(hand_list) == 1 and hand_list[0]["verts3d"]["left"].shape == (2, 252, 3)
    assert other["verts3d_MANO_list"]["right"][0].shape == (2, 778, 3) and other["mask"] is out.mask


def test_optimized_copy_same_outputs(small_model, img128):
    opt = optimize_for_inference(small_model)
    with torch.inference_mode():
        a = small_model(img128)
        b = opt(img128.contiguous(memory_format=torch.channels_last))
    for x, y in ((a.left.verts3d, b.left.verts3d), (a.right.verts2d, b.right.verts2d), (a.mask, b.mask)):
        assert torch.allclose(x, y, rtol=1e-4, atol=1e-5 * float(x.abs().max()))
    assert "encoder.resnet.bn1.weight" in small_model.state_dict()      # the original is untouched


def test_small_preset_trains_one_step(assets, small_cfg, img128):
    m = build_model(small_cfg, graph_assets=assets).train()
    out = m(img128)
    loss = out.left.verts3d.square().mean() + out.right.verts2d.abs().mean() * 1e-3 + out.hms.square().mean()
    loss.backward()
    assert m.decoder.dual_gcn.layers[0].position_embeddings.weight.grad is not None
    assert m.decoder.unsample_layer.weight.grad is None                   # frozen (freeze_upsample)


def test_bad_inputs_and_assets(assets, small_cfg, small_model):
    with pytest.raises(ValueError, match="128"):
        small_model(torch.zeros(1, 3, 256, 256))
    bad = copy.deepcopy(assets["graph_left"])
    bad["coarsen_graphs_L"] = bad["coarsen_graphs_L"][:-1] + [sp.identity(60, format="csr")]
    with pytest.raises(ValueError, match="double"):
        prepare_graph(bad, 3, 778)
    with pytest.raises(KeyError, match="graph_perm"):
        build_model(small_cfg, graph_assets={**assets, "graph_right": {"coarsen_graphs_L": []}})
    with pytest.raises(ValueError, match="ENCODER_TYPE"):
        build_model(get_config(preset="small", overrides=["MODEL.ENCODER_TYPE", "hrnet"]), graph_assets=assets)


def test_other_encoders_build(assets):
    cfg = get_config(preset="small", overrides=["MODEL.ENCODER_TYPE", "resnet50"])
    m = build_model(cfg, graph_assets=assets)
    sd = m.state_dict()
    assert sd["mid_model.convs.1.0.weight"].shape == (64, 64 + 1024, 1, 1)
    assert sd["encoder.hms_decoder.models.0.0.weight"].shape == (32, 2048, 1, 1)


def test_output_helpers(small_model, img128):
    with torch.inference_mode():
        out = small_model(img128, return_attention=True)
    one = out.select(1)
    assert one.left.verts3d.shape == (1, 778, 3) and torch.equal(one.right.scale, out.right.scale[1:2])
    assert one.attention.image[1]["right"].shape[0] == 1 and one.left.levels[0].verts2d.shape == (1, 252, 2)
    d = out.apply(lambda t: t.double())
    assert d.hms.dtype == torch.float64 and d.attention.grid_size == out.attention.grid_size
    assert out["left"] is out.left
    with pytest.raises(KeyError):
        out["middle"]


def test_encoder_pretrain_path_loads_local_weights(tmp_path, assets):
    import torchvision
    torch.manual_seed(5)
    r18 = torchvision.models.resnet18(weights=None)
    atomic_torch_save(r18.state_dict(), tmp_path / "r18.pth")
    cfg = get_config(preset="small", overrides=["MODEL.ENCODER_PRETRAIN_PATH", str(tmp_path / "r18.pth")])
    m = build_model(cfg, graph_assets=assets)
    assert torch.equal(m.encoder.resnet.layer3[0].conv1.weight, r18.layer3[0].conv1.weight)
    bad = get_config(preset="small", overrides=["MODEL.ENCODER_PRETRAIN_PATH", str(tmp_path / "none.pth")])
    with pytest.raises(FileNotFoundError):
        build_model(bad, graph_assets=assets)
