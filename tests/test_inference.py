"""Inference API: preprocessing as the original demo, 2D mapping back to the image, checkpoints, input kinds."""
import pickle
import re
import warnings

import cv2
import numpy as np
import pytest
import torch

from intaghand.config import get_config, save_config
from intaghand.inference import (IMAGENET_MEAN, IMAGENET_STD, ConfigMismatchWarning, Frame, ImageReadError, Reconstructor,
                                 as_images, pad_to_square, preprocess_image, to_image_space)
from intaghand.engines import rel_diff
from intaghand.io import CheckpointError, atomic_torch_save, read_user_image
from intaghand.mano import joint_regressor_21
from intaghand.fixtures import make_synthetic_graph_assets
from intaghand.model import build_model


@pytest.fixture(scope="module")
def assets():
    return make_synthetic_graph_assets()


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory, assets):
    d = tmp_path_factory.mktemp("ckpt")
    cfg = get_config(preset="small")
    torch.manual_seed(0)
    model = build_model(cfg, graph_assets=assets).eval()
    atomic_torch_save(model.state_dict(), d / "small.pth")
    save_config(cfg, d / "small.yaml")
    return d


@pytest.fixture(scope="module")
def rec(ckpt_dir, assets):
    return Reconstructor.from_checkpoint(ckpt_dir / "small.pth", graph_assets=assets, joint_regressor=None)


def _close(a, b):
    """Equal to float32 rounding, relative to the output's size: the traced and the plain path run the same arithmetic
    in a different order (measured ≤ 4e-6)."""
    return float((a - b).abs().max()) <= 1e-4 * float(b.abs().max())


def _img(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("h,w,top,left", [(90, 150, 30, 0), (151, 100, 0, 25), (80, 80, 0, 0), (10, 41, 15, 0)])
def test_pad_to_square(h, w, top, left):
    sq, t, l = pad_to_square(_img(h, w))
    assert sq.shape[:2] == (max(h, w),) * 2 and (t, l) == (top, left)
    assert np.array_equal(sq[t: t + h, l: l + w], _img(h, w))
    mask = np.ones(sq.shape[:2], bool); mask[t: t + h, l: l + w] = False
    assert (sq[mask] == 0).all()


def test_preprocessing_matches_original_demo():
    img = _img(133, 200, seed=3)
    diff = 200 - 133
    ref = cv2.copyMakeBorder(img, diff // 2, diff - diff // 2, 0, 0, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    ref = cv2.resize(ref, (256, 256), interpolation=cv2.INTER_LINEAR)
    ref = cv2.cvtColor(ref, cv2.COLOR_BGR2RGB).astype(np.float32) / 255
    ref = (ref - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    x, frame = preprocess_image(img, 256)
    assert x.shape == (3, 256, 256) and x.dtype == torch.float32
    assert np.allclose(x.permute(1, 2, 0).numpy(), ref, atol=1e-6)
    assert frame == Frame(133, 200, 33, 0, 200, 256)
    x_rgb, _ = preprocess_image(np.ascontiguousarray(img[..., ::-1]), 256, rgb=True)
    assert torch.equal(x, x_rgb)


def _centroid(a):
    ys, xs = np.mgrid[: a.shape[0], : a.shape[1]]
    return np.array([(xs * a).sum(), (ys * a).sum()]) / a.sum()


@pytest.mark.parametrize("h,w,pt", [(1200, 600, (401.0, 777.0)), (300, 900, (120.0, 40.0)), (64, 48, (20.0, 30.0))])
def test_2d_mapping_inverts_pad_and_resize(h, w, pt):
    """A blob at a known image pixel lands where `to_network` says and maps back to where it was."""
    img = np.zeros((h, w, 3), np.uint8)
    r = max(3, max(h, w) // 40)
    cv2.circle(img, (int(pt[0]), int(pt[1])), r, (255, 255, 255), -1, lineType=cv2.LINE_8)
    true = _centroid(img[..., 0].astype(np.float64))          # centre of the drawn (pixelated) blob
    x, frame = preprocess_image(img, 128)
    net = x[0].numpy() * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    c = _centroid(np.clip(net, 0, None))
    # bilinear downscaling aliases a little; the pixel-centre convention matters by |scale - 1| / 2 network px (>= 0.45 here)
    tol = 0.25
    assert np.abs(c - frame.to_network(true)).max() < tol            # in network pixels
    assert np.abs(frame.to_image(c) - true).max() < tol * frame.scale  # back in image pixels
    # and the mapping is an exact inverse pair, for numpy and torch
    p = np.array([[0.0, 0.0], [w - 1.0, h - 1.0], list(pt)])
    assert np.allclose(frame.to_image(frame.to_network(p)), p)
    assert torch.allclose(frame.to_network(frame.to_image(torch.tensor(p))), torch.tensor(p, dtype=torch.float64))


def test_as_images_kinds():
    bgr = _img(20, 30)
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    t = torch.from_numpy(rgb).permute(2, 0, 1)
    got = as_images([bgr, t, t.float() / 255, torch.stack([t, t]).float() / 255])
    assert len(got) == 5 and all(np.allclose(g, rgb, atol=1e-3) for g in got)
    assert np.array_equal(as_images(rgb, rgb=True)[0], rgb)
    assert len(as_images(np.stack([bgr, bgr]))) == 2
    assert as_images(bgr[..., 0])[0].shape == (20, 30, 3)
    with pytest.raises(TypeError):
        as_images(42)
    with pytest.raises(ValueError, match="H×W×3"):
        as_images(np.zeros((2, 3, 4, 5)))
    with pytest.raises(FileNotFoundError, match="could not read"):
        as_images("/nonexistent/image.png")


def test_damaged_image_file_is_an_error_naming_it(tmp_path):
    ok, jpg = cv2.imencode(".jpg", _img(120, 160))
    (tmp_path / "cut.jpg").write_bytes(jpg.tobytes()[: int(len(jpg) * 0.6)] + b"\xff\xd9")   # cut, end marker kept
    with pytest.raises(ImageReadError, match=f"{tmp_path / 'cut.jpg'}: (damaged|not a readable) JPEG"):
        as_images(tmp_path / "cut.jpg")


def test_image_files_are_read_as_every_users_file_is(tmp_path):
    "A path goes through `intaghand.io.read_user_image`: 16-bit and RGBA PNGs converted as the demo converts them."
    g = _img(20, 30)
    cv2.imwrite(str(tmp_path / "deep.png"), g.astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "rgba.png"), np.dstack([g, np.full((20, 30), 128, np.uint8)]))
    assert np.array_equal(as_images(tmp_path / "deep.png")[0], g[..., ::-1])                 # 257·v / 257 = v exactly
    rgba = as_images(tmp_path / "rgba.png")[0]
    assert np.array_equal(rgba, read_user_image(tmp_path / "rgba.png")[0][..., ::-1])
    assert np.abs(rgba.astype(int) - np.round(g[..., ::-1] * (128 / 255))).max() <= 1       # composited over black
    (tmp_path / "notes.jpg").write_text("hello")
    with pytest.raises(ImageReadError, match=re.escape(f"{tmp_path / 'notes.jpg'}: not an image: the content is not JPEG")):
        as_images(tmp_path / "notes.jpg")


def test_from_checkpoint_uses_config_beside(rec, ckpt_dir):
    assert rec.cfg.MODEL.ENCODER_TYPE == "resnet18" and rec.img_size == 128
    assert rec.device == torch.device("cpu") and not rec.model.training


def test_same_picture_in_every_form_gives_same_result(rec, tmp_path):
    bgr = _img(90, 150, seed=5)
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    cv2.imwrite(str(tmp_path / "x.png"), bgr)
    out = rec([tmp_path / "x.png", str(tmp_path / "x.png"), bgr, torch.from_numpy(rgb).permute(2, 0, 1)])
    out_rgb = rec(rgb, rgb=True)
    for i in range(1, 4):
        assert torch.allclose(out.left.verts3d[0], out.left.verts3d[i], atol=1e-5)
        assert torch.allclose(out.right.verts2d[0], out.right.verts2d[i], atol=1e-3)
    assert torch.allclose(out_rgb.left.verts3d[0], out.left.verts3d[0], atol=1e-5)


def test_batched_mixed_sizes_equal_single_calls(rec):
    ims = [_img(90, 150, 1), _img(200, 120, 2), _img(64, 64, 3)]
    rec.batch_size = 2                      # two chunks, concatenated
    try:
        both = rec(ims, return_attention=True)
    finally:
        rec.batch_size = 16
    assert both.left.verts3d.shape == (3, 778, 3) and len(both.frames) == 3
    assert both.attention.image[0]["left"].shape[0] == 3
    for i, im in enumerate(ims):
        one = rec(im)
        assert torch.allclose(both.right.verts3d[i], one.right.verts3d[0], atol=1e-4)
        assert torch.allclose(both.left.verts2d[i], one.left.verts2d[0], rtol=1e-4, atol=1e-2)
        assert one.frames[0] == both.frames[i]


def test_outputs_in_image_pixels(rec):
    im = _img(300, 100, seed=9)                    # tall: padded left/right by 100
    net = rec(im, space="network")
    img = rec(im)
    fr = img.frames[0]
    assert fr == Frame(300, 100, 0, 100, 300, 128) and net.space == "network" and img.space == "image"
    k = 300 / 128
    for side in ("left", "right"):
        want = net[side].verts2d * k + torch.tensor([0.5 * k - 0.5 - 100, 0.5 * k - 0.5])
        assert torch.allclose(img[side].verts2d, want, atol=1e-3)
        assert _close(img[side].verts3d, net[side].verts3d)    # the two calls may run on different exact paths (engine switch)
        assert torch.allclose(img[side].levels[0].verts2d_mano, fr.to_image(net[side].levels[0].verts2d_mano), atol=1e-3)
    assert to_image_space(img, img.frames) is img


def test_joints_mapped_too(ckpt_dir, assets):
    import scipy.sparse as sp
    J = joint_regressor_21(sp.random(16, 778, density=0.02, format="csr", random_state=1))
    rec = Reconstructor.from_checkpoint(ckpt_dir / "small.pth", graph_assets=assets, joint_regressor=J)
    im = _img(100, 180)
    net, img = rec(im, space="network"), rec(im)
    assert img.left.joints2d.shape == (1, 21, 2)
    assert torch.allclose(img.left.joints2d, img.frames[0].to_image(net.left.joints2d), atol=1e-3)
    assert torch.allclose(img.right.joints2d[:, 4], img.right.verts2d[:, 745], atol=1e-3)


def test_ddp_and_training_checkpoints_load(ckpt_dir, assets, rec):
    sd = torch.load(ckpt_dir / "small.pth", weights_only=True)
    atomic_torch_save({"model": {"module." + k: v for k, v in sd.items()}, "epoch": 1}, ckpt_dir / "ddp.pth")
    r2 = Reconstructor.from_checkpoint(ckpt_dir / "ddp.pth", cfg=get_config(preset="small"), graph_assets=assets,
                                       joint_regressor=None)
    im = _img(50, 70)
    assert _close(r2(im).left.verts3d, rec(im).left.verts3d)     # (one may run traced: equal to rounding)


def test_mismatched_checkpoint_is_a_checkpoint_error(ckpt_dir, assets):
    with pytest.raises(CheckpointError) as e, pytest.warns(ConfigMismatchWarning):   # ResNet-50 config forced over small.yaml
        Reconstructor.from_checkpoint(ckpt_dir / "small.pth", cfg=get_config(), graph_assets=assets, force_cfg=True)
    msg = str(e.value)
    assert "missing (342)" in msg and "shape mismatch" in msg and "small.pth" in msg
    sd = torch.load(ckpt_dir / "small.pth", weights_only=True)
    sd.pop("decoder.avg_head.bias")
    atomic_torch_save(sd, ckpt_dir / "broken.pth")
    with pytest.raises(CheckpointError, match=r"missing \(1\): decoder.avg_head.bias"):
        Reconstructor.from_checkpoint(ckpt_dir / "broken.pth", cfg=ckpt_dir / "small.yaml", graph_assets=assets)


def test_given_config_cannot_change_the_stored_network(ckpt_dir, assets, rec):
    "--cfg with MODEL.NUM_HEADS 2 loads (no tensor changes shape) but would change every result: named, not used."
    given = get_config(preset="small", overrides=["MODEL.NUM_HEADS", "2", "MODEL.graph_k", "3", "TRAIN.LR", "0.5"])
    with pytest.warns(ConfigMismatchWarning) as w:
        r = Reconstructor.from_checkpoint(ckpt_dir / "small.pth", cfg=given, graph_assets=assets, joint_regressor=None)
    where = ckpt_dir / "small.yaml"
    tail = "using the checkpoint's values (--force_cfg / force_cfg=True uses the given ones)"
    assert [str(x.message) for x in w] == r.warnings == [
        f"config differs from {where} in MODEL.graph_k: checkpoint 2, given 3; {tail}",
        f"config differs from {where} in MODEL.NUM_HEADS: checkpoint 4, given 2; {tail}"]
    assert (r.cfg.MODEL.NUM_HEADS, r.cfg.MODEL.graph_k, r.cfg.TRAIN.LR) == (4, 2, 0.5)      # other keys: the given ones
    im = _img(60, 80)
    assert _close(r(im).left.verts3d, rec(im).left.verts3d)
    heads = get_config(preset="small", overrides=["MODEL.NUM_HEADS", "2"])
    with pytest.warns(ConfigMismatchWarning, match="NUM_HEADS: checkpoint 4, given 2; using the given values"):
        f = Reconstructor.from_checkpoint(ckpt_dir / "small.pth", cfg=heads, graph_assets=assets, joint_regressor=None,
                                          force_cfg=True)
    assert f.cfg.MODEL.NUM_HEADS == 2 and not _close(f(im).left.verts3d, rec(im).left.verts3d)
    same = get_config(preset="small", overrides=["TRAIN.LR", "0.5"])      # only non-network keys differ: silent
    r2 = Reconstructor.from_checkpoint(ckpt_dir / "small.pth", cfg=same, graph_assets=assets, joint_regressor=None)
    assert r2.warnings == [] and r2.cfg.TRAIN.LR == 0.5


def test_training_checkpoint_config_is_used(tmp_path, assets, ckpt_dir):
    from intaghand.config import config_to_yaml
    cfg = get_config(preset="small", overrides=["MODEL.NUM_HEADS", "2"])
    torch.manual_seed(1)
    m = build_model(cfg, graph_assets=assets)
    atomic_torch_save({"model": m.state_dict(), "epoch": 3, "config": config_to_yaml(cfg)}, tmp_path / "latest.pth")
    r = Reconstructor.from_checkpoint(tmp_path / "latest.pth", graph_assets=assets, joint_regressor=None)
    assert r.cfg.MODEL.NUM_HEADS == 2 and r.cfg.MODEL.ENCODER_TYPE == "resnet18"
    with pytest.warns(ConfigMismatchWarning, match="the config stored in latest.pth in MODEL.NUM_HEADS: checkpoint 2, given 4"):
        Reconstructor.from_checkpoint(tmp_path / "latest.pth", cfg=ckpt_dir / "small.yaml", graph_assets=assets,
                                      joint_regressor=None)


def test_huge_image_refused_from_its_header(tmp_path):
    import struct, zlib
    chunk = lambda t, b: struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b))
    (tmp_path / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 20000, 8, 2, 0, 0, 0))
                                        + chunk(b"IEND", b""))
    with pytest.raises(ImageReadError) as e:
        as_images(tmp_path / "huge.png")
    assert str(e.value) == (f"{tmp_path / 'huge.png'}: too large: 30000×20000 px (600 MP) is over the 268 MP limit "
                            "(--max_pixels); downscale it or raise the limit")


class _Payload:
    def __reduce__(self): return (print, ("this must not run",))


def test_checkpoint_loads_weights_only(tmp_path, assets):
    (tmp_path / "evil.pth").write_bytes(b"")
    torch.save({"w": torch.zeros(1), "x": _Payload()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="weights-only|refusing to load 'print'"):
        Reconstructor.from_checkpoint(tmp_path / "evil.pth", cfg=get_config(preset="small"), graph_assets=assets)
    (tmp_path / "junk.pth").write_bytes(pickle.dumps([1, 2], protocol=2) + b"garbage")
    with pytest.raises(CheckpointError):
        Reconstructor.from_checkpoint(tmp_path / "junk.pth", cfg=get_config(preset="small"), graph_assets=assets)


def test_missing_checkpoint_says_where(tmp_path):
    with pytest.raises(FileNotFoundError, match="looked in"):
        Reconstructor.from_checkpoint(tmp_path / "nope.pth")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(ckpt_dir, assets, rec):
    rc = Reconstructor.from_checkpoint(ckpt_dir / "small.pth", graph_assets=assets, joint_regressor=None, device="cuda")
    im = _img(90, 150)
    a, b = rec(im), rc(im)
    assert b.left.verts3d.is_cuda
    assert torch.allclose(a.left.verts3d, b.left.verts3d.cpu(), atol=1e-3)


def test_checkpoint_loads_without_the_encoder_file_it_was_started_from(tmp_path, assets):
    "A run started from MODEL.ENCODER_PRETRAIN_PATH stores that path; loading its checkpoint elsewhere must not need it."
    from intaghand.config import config_to_yaml
    cfg = get_config(preset="small", overrides=["MODEL.ENCODER_PRETRAIN_PATH", str(tmp_path / "gone" / "enc.pth")])
    torch.manual_seed(2)
    m = build_model(get_config(preset="small"), graph_assets=assets)
    atomic_torch_save({"model": m.state_dict(), "config": config_to_yaml(cfg)}, tmp_path / "latest.pth")
    r = Reconstructor.from_checkpoint(tmp_path / "latest.pth", graph_assets=assets, joint_regressor=None)
    assert r.cfg.MODEL.ENCODER_PRETRAIN_PATH == "none"
    w = r.model.encoder.resnet.layer2[0].conv1.weight
    assert torch.equal(w.cpu(), m.encoder.resnet.layer2[0].conv1.weight)


_rel = rel_diff


@pytest.mark.parametrize("engine", ["onnxruntime", "torchscript"])
@pytest.mark.parametrize("batch", [1, 3])
def test_exact_path_equals_the_plain_module(rec, batch, engine):
    "Each engine of the exact path gives the plain module's outputs to float32 rounding, per batch shape."
    r = Reconstructor(rec.model, rec.cfg, engine=engine, build_after=0)     # build on the first call
    ims = [_img(120 + 7 * i, 100, seed=i) for i in range(batch)]
    exact = r(ims)
    plain = Reconstructor(rec.model, rec.cfg, precision="plain")(ims)
    assert r.exact_engine == engine and not r._engines[engine].failed
    if engine == "torchscript":
        assert (batch, 3, r.img_size, r.img_size) in [k[0] for k in r._engines[engine]._graphs]
    for side in ("left", "right"):
        for f in ("verts3d", "verts2d", "scale", "trans2d"):
            assert _rel(getattr(exact[side], f), getattr(plain[side], f)) < 1e-4, (side, f)
    assert _rel(exact.hms, plain.hms) < 1e-4 and exact.frames is not None and exact.space == "image"


def test_onnxruntime_is_the_cpu_default_and_serves_every_batch_size(rec):
    r = Reconstructor(rec.model, rec.cfg, build_after=0)
    assert r.exact_engine == "onnxruntime"              # onnxruntime is a dependency; CPU device
    r([_img(70, 70)])
    out = r([_img(70, 70, seed=s) for s in range(5)])   # another batch size: its own export, same numbers
    plain = Reconstructor(rec.model, rec.cfg, precision="plain")([_img(70, 70, seed=s) for s in range(5)])
    assert _rel(out.right.verts3d, plain.right.verts3d) < 1e-4 and out.right.verts3d.shape[0] == 5
    with pytest.raises(ValueError, match="engine"):
        Reconstructor(rec.model, rec.cfg, engine="tensorrt")


def test_attention_runs_the_plain_module(rec):
    out = rec([_img(90, 90)], return_attention=True)
    assert out.attention is not None and out.attention.num_levels == len(rec.model.decoder.dual_gcn.layers)


def test_engines_build_only_once_the_plain_calls_would_have_paid_for_it(rec):
    r = Reconstructor(rec.model, rec.cfg, build_after=3600)
    for _ in range(3): r([_img(64, 64)])
    eng = r._engines[r.exact_engine]
    assert not eng._graphs and 0 < sum(eng._plain_seconds.values()) < 3600     # still the plain inference copy
    eng.build_after = 0
    r([_img(64, 64)])
    assert list(eng._graphs) == [(1, 3, r.img_size, r.img_size)]


def test_failing_engines_fall_back_in_turn_with_a_warning_each(ckpt_dir, assets, monkeypatch):
    import intaghand.engines as eng
    r = Reconstructor.from_checkpoint(ckpt_dir / "small.pth", graph_assets=assets, joint_regressor=None, build_after=0)
    monkeypatch.setattr(eng.OnnxNetwork, "_build", lambda self, x: (_ for _ in ()).throw(RuntimeError("no export")))
    monkeypatch.setattr(eng.TracedNetwork, "_trace", lambda self, x: (_ for _ in ()).throw(RuntimeError("no trace")))
    with pytest.warns(RuntimeWarning) as caught:
        a = r([_img(64, 64)])
    msgs = [str(w.message) for w in caught]
    assert any(re.search("onnxruntime inference engine failed .*no export.*; using torchscript", m) for m in msgs), msgs
    assert any(re.search("torchscript inference engine failed .*no trace.*the plain module", m) for m in msgs), msgs
    b = Reconstructor(r.model, r.cfg, precision="plain")([_img(64, 64)])
    assert torch.equal(a.left.verts3d, b.left.verts3d) and r.exact_engine == "module"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r([_img(64, 64)])                               # later calls go straight to the plain module, no new warning


def test_fast_path_follows_the_hardware(rec, monkeypatch):
    import intaghand.tensors as tn
    monkeypatch.setattr(tn, "cpu_has_bf16", lambda: False)
    r = Reconstructor(rec.model, rec.cfg, precision="fast")
    assert r.autocast is None                           # no native bfloat16: the exact path
    monkeypatch.setattr(tn, "cpu_has_bf16", lambda: True)
    r = Reconstructor(rec.model, rec.cfg, precision="fast")
    assert r.autocast == torch.bfloat16
    out, ref = r([_img(80, 80)]), rec([_img(80, 80)])
    assert out.left.verts3d.dtype == torch.float32 and _rel(out.left.verts3d, ref.left.verts3d) < 0.1
    with pytest.raises(ValueError, match="precision"):
        Reconstructor(rec.model, rec.cfg, precision="half")


def test_export_onnx_cli_writes_named_outputs_that_match_pytorch(ckpt_dir, tmp_path, capsys):
    import onnxruntime as ort
    from intaghand.cli import main
    out = tmp_path / "small.onnx"
    assert main(["export-onnx", "--checkpoint", str(ckpt_dir / "small.pth"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "left.verts3d" in text and "largest relative difference" in text
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["image"]
    names = [o.name for o in sess.get_outputs()]
    assert {"left.verts3d", "right.verts2d", "left.scale", "hms", "mask", "dense"} <= set(names)
    r = Reconstructor.from_checkpoint(ckpt_dir / "small.pth", precision="plain")
    x, _ = r.preprocess([_img(100, 130, seed=3), _img(90, 90, seed=4)])
    got = dict(zip(names, sess.run(None, {"image": x.numpy()})))
    with torch.no_grad(): ref = r.network(x)
    for side in ("left", "right"):
        assert _rel(torch.from_numpy(got[f"{side}.verts3d"]), ref[side].verts3d) < 1e-4
    assert _rel(torch.from_numpy(got["hms"]), ref.hms) < 1e-4


def test_export_onnx_refuses_and_writes_nothing_beyond_the_tolerance(ckpt_dir, tmp_path, capsys):
    from intaghand.cli import main
    out = tmp_path / "strict.onnx"
    assert main(["export-onnx", "--checkpoint", str(ckpt_dir / "small.pth"), "--out", str(out), "--tol", "1e-12"]) != 0
    err = capsys.readouterr().err
    assert "not written" in err and "differs from PyTorch" in err and not out.exists()
    assert not list(tmp_path.iterdir())                 # no temporary file left behind either
