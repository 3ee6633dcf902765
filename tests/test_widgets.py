"""The explorers (`intaghand.explore_model`, `explore_attention`, `explore_data`, `explore_runs`) and the layers under
them, built in code: interactions change the views exactly as the model says."""
import json
import re
import shutil
from pathlib import Path

import cv2
import ipywidgets as W
import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from intaghand import explore_data
from intaghand.analysis import (OTHER, AnalysisCache, ImageAnalysis, analyse_image, checkpoint_choices, cross_matrix, cross_row,
                                demo_image, image_row, level_vertex_parts, load_default_reconstructor, mesh_overlay, network_image,
                                read_rgb, sample_image_paths, scale_attention)
from intaghand.config import resolve_path, save_config
from intaghand.explore_attention import attention_explorer, levels_picture, matrix_picture
from intaghand.explore_data import DataBrowser, data_browser, make_demo_data
from intaghand.explore_model import model_explorer
from intaghand.explore_runs import RunViewer, ema, find_runs, read_scalars, run_viewer
from intaghand.figures import hand_faces, mesh_values, trace_by_name
from intaghand.model import build_model, graph_upsample
from intaghand.pictures import BAR_WIDTH, DISPLAY_SIZE, TILE, heat_overlay, mask_picture, resize_to, to_png, with_colour_bar
from intaghand.meshes import hand_template
from intaghand.widgets import _views, count_widgets


@pytest.fixture(scope="module")
def rec():
    return load_default_reconstructor()


@pytest.fixture(scope="module")
def cache(rec):
    return AnalysisCache(rec)


@pytest.fixture(scope="module")
def demo():
    return demo_image()


@pytest.fixture(scope="module")
def images(demo):
    return {"demo": demo}


def intensity(fig, side):
    v = mesh_values(fig, side)
    assert v is not None, f"the {side} hand is not coloured"
    return v


# --- default model ---------------------------------------------------------------------------------

def test_default_reconstructor_random_fallback_and_checkpoint(rec, tmp_path, demo):
    if rec.source == "random":
        assert "RANDOMLY INITIALISED" in rec.note and "embedded_small.pth" in rec.note
    # a checkpoint with its yaml beside it is used as such, and reproduces the model it was saved from
    ck = tmp_path / "m.pth"
    torch.save({"state_dict": rec.model.state_dict()}, ck)
    save_config(rec.cfg, tmp_path / "m.yaml")
    r2 = load_default_reconstructor(ck)
    assert r2.source == "checkpoint" and "m.pth" in r2.note and r2 is not rec
    a, b = analyse_image(rec, demo), analyse_image(r2, demo)
    np.testing.assert_allclose(a.verts3d["left"], b.verts3d["left"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a.cross_attn[0]["r2l"], b.cross_attn[0]["r2l"], rtol=1e-4, atol=1e-6)
    with pytest.raises(FileNotFoundError, match="nothere.pth"):
        load_default_reconstructor(tmp_path / "nothere.pth")


def test_analysis_matches_a_direct_model_run(rec, cache, demo):
    an = cache.get(demo)
    x, _ = rec.preprocess(demo, rgb=True)
    with torch.inference_mode():
        out = rec.model(x, return_attention=True)
    np.testing.assert_allclose(an.hms, out.hms[0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(an.verts2d["right"], out.right.verts2d[0].numpy(), rtol=1e-5, atol=1e-4)
    for lvl in range(out.attention.num_levels):
        np.testing.assert_allclose(an.cross_attn[lvl]["l2r"], out.attention.cross[lvl]["l2r"][0].numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(an.image_attn[lvl]["left"], out.attention.image[lvl]["left"][0].numpy(), rtol=1e-5, atol=1e-7)
    assert an.image.shape == (rec.img_size, rec.img_size, 3)


def test_cache_hits_and_lru(rec, demo):
    c = AnalysisCache(rec, maxsize=1)
    a = c.get(demo)
    assert c.get(demo.copy()) is a and (c.hits, c.misses) == (1, 1)
    other = np.ascontiguousarray(demo[:, ::-1])
    c.get(other)
    assert len(c) == 1 and c.misses == 2
    c.get(demo)
    assert c.misses == 3                                  # evicted by the other image


def test_vertex_level_index_is_the_networks_mapping(rec):
    "The explorers' mesh vertex → graph vertex map is the network's own path: upsample, then GCN_to_vert."
    dec = rec.model.decoder
    for level, n in enumerate((dec.vNum_in, dec.vNum_in * 2, dec.vNum_out)):
        for side in ("left", "right"):
            sig = torch.randn(1, n, 1)
            net = dec.GCN_to_vert(graph_upsample(sig, dec.vNum_all // n), side)[0, :, 0].numpy()
            idx = rec.model.vertex_level_index(level, side).numpy()
            np.testing.assert_array_equal(net, sig[0, :, 0].numpy()[idx])


def test_read_rgb_sources(tmp_path, demo):
    p = tmp_path / "x.png"
    cv2.imwrite(str(p), demo[..., ::-1])
    np.testing.assert_array_equal(read_rgb(p), demo)
    np.testing.assert_array_equal(read_rgb(demo), demo)
    np.testing.assert_array_equal(read_rgb(p.read_bytes()), demo)


def test_sample_image_paths_prefers_img_folders(tmp_path, demo):
    for d in ("val/img", "val/mask"):
        (tmp_path / d).mkdir(parents=True)
        for i in (0, 1, 10):
            cv2.imwrite(str(tmp_path / d / f"{i}.jpg"), demo)
    found = sample_image_paths(tmp_path)
    assert list(found) == ["val/img/0.jpg", "val/img/1.jpg", "val/img/10.jpg"]
    assert sample_image_paths(tmp_path / "missing") == {}


# --- model explorer -------------------------------------------------------------------------------

def test_model_explorer_views_and_interactions(rec, cache, images, demo, tmp_path):
    ex = model_explorer(rec, images, cache)
    an = ex.analysis
    assert an is cache.get(demo)
    assert count_widgets(ex.widget, go.FigureWidget) == 1 and count_widgets(ex.widget, W.Image) == 5
    assert isinstance(ex.upload, W.FileUpload) and isinstance(ex.path, W.Text)
    ex.crop.value = False                                 # own images as they are (cropping: the test below)
    misses = cache.misses
    for k in (0, 20, 41, "left", "right"):
        ex.joint.value = k
        h = an.hms[k] if isinstance(k, int) else an.hms[:21].max(0) if k == "left" else an.hms[21:].max(0)
        pic = heat_overlay(an.image, h, alpha=0.65)
        assert ex.heatmap.value == to_png(with_colour_bar(pic, h.min(), h.max(), "heatmap"))   # with its colour bar
    assert cache.misses == misses                         # joint changes never run the model
    assert ex.mask.value == to_png(mask_picture(an.mask))
    # a file path: a new image, one model run, the 3D view moves to the new meshes
    img2 = np.ascontiguousarray(demo[40:200, :, :])
    p = tmp_path / "crop.png"
    cv2.imwrite(str(p), img2[..., ::-1])
    ex.path.value = str(p)
    ex.load_button.click()
    assert cache.misses == misses + 1 and ex.analysis is not an
    assert ex.source.value == f"file: {p}" and cache.misses == misses + 1      # the dropdown names it; no second run
    np.testing.assert_array_equal(ex.analysis.image, network_image(img2, rec.img_size))
    np.testing.assert_allclose(np.asarray(trace_by_name(ex.figure, "right hand").y), ex.analysis.placed_verts("right")[:, 1])
    # an upload (FileUpload's value: a tuple of dicts with the file's bytes)
    ex._on_upload({"new": ({"name": "up.png", "content": memoryview(to_png(demo))},)})
    assert ex.analysis is an and "up.png" in ex.status.value and ex.source.value == "upload: up.png"
    ex.path.value = str(tmp_path / "missing.png")
    ex.load_button.click()
    assert "could not load" in ex.status.value and ex.analysis is an
    assert "still show upload: up.png" in ex.status.value and ex.source.value == "upload: up.png"
    # a path relative to the project works from any working folder (the notebooks run in nbs/explore)
    import os
    here = os.getcwd()
    try:
        os.chdir(tmp_path)
        ex.path.value = "data/demo/crop_2.jpg"
        ex.load_button.click()
    finally: os.chdir(here)
    assert ex.source.value == "file: data/demo/crop_2.jpg" and "could not load" not in ex.status.value


def test_model_explorer_crops_own_images_and_switches_checkpoints(rec, cache, images, demo, tmp_path):
    from intaghand.detect import Detection, HandBox
    ex = model_explorer(rec, images, cache)
    big = np.zeros((400, 600, 3), np.uint8); big[100:356, 200:456] = demo            # the hands small in a large frame
    fake = lambda bgr: Detection([HandBox((210.0, 120.0, 440.0, 330.0), 0.9, "left", 0.9)], bgr.shape[:2], "fake")
    ex._detector = (fake, "on")
    p = tmp_path / "big.png"; cv2.imwrite(str(p), big[..., ::-1])
    ex.path.value = str(p); ex.load_button.click()
    from intaghand.detect import crop_square, square_crop_box
    box = square_crop_box([(210.0, 120.0, 440.0, 330.0)], (400, 600), fill=0.8)
    np.testing.assert_array_equal(ex.analysis.image, network_image(crop_square(big, box), rec.img_size))
    assert "detected hand" in ex.status.value
    # another checkpoint from the menu: the same image through the other network
    ck = tmp_path / "other.pth"
    torch.manual_seed(3)
    other = build_model(rec.cfg)
    torch.save(other.state_dict(), ck); save_config(rec.cfg, tmp_path / "other.yaml")
    ex.checkpoints["run: other"] = ck
    ex.checkpoint.options = ["(as given)", *ex.checkpoints]
    before = ex.analysis
    ex.checkpoint.value = "run: other"
    assert ex.rec is not rec and ex.analysis is not before and "other.pth" in ex.note.value
    assert not np.allclose(ex.analysis.verts3d["left"], before.verts3d["left"])
    ex.checkpoint.value = "(as given)"                    # back to the network the explorer was built with
    assert ex.rec is rec and ex.cache is cache and np.allclose(ex.analysis.verts3d["left"], before.verts3d["left"])
    assert "embedded: misc/model/embedded_small.pth" in checkpoint_choices() or not (resolve_path("misc/model/embedded_small.pth")).is_file()


def test_mesh_overlay_renders_with_positive_scale(rec, cache, demo):
    an = cache.get(demo)
    good = ImageAnalysis(**{**an.__dict__, "scale": {"left": 2.0, "right": 2.0},
                               "trans2d": {"left": np.array([-0.3, 0.0]), "right": np.array([0.3, 0.0])}})
    v = np.asarray(hand_template()[0], np.float32)
    good.verts3d = {s: (v - v.mean(0)) / np.ptp(v, 0).max() * 0.4 for s in ("left", "right")}
    pic, note = mesh_overlay(good, hand_faces(rec.cfg))
    assert note == "" and (np.abs(pic.astype(int) - resize_to(an.image).astype(int)).sum(-1) > 30).mean() > 0.02
    _, note = mesh_overlay(ImageAnalysis(**{**an.__dict__, "scale": {"left": -1.0, "right": 1.0}}), hand_faces(rec.cfg))
    assert "scale" in note


# --- attention explorer ---------------------------------------------------------------------------

def test_attention_colours_are_the_models_attention_rows(rec, cache, images, demo):
    ax = attention_explorer(rec, images, cache)
    an = cache.get(demo)
    misses = cache.misses
    model = rec.model
    heads = an.cross_attn[0]["r2l"].shape[0]
    assert list(ax.head.options) == ["mean", *range(heads)]
    for level in range(an.num_levels):
        for head in ("mean", heads - 1):
            ax.level.value, ax.head.value = level, head
            for side, key, other in (("left", "r2l", "right"), ("right", "l2r", "left")):
                ax.hand.value = side
                for m in (0, 389, 777):
                    ax.vertex.value = m
                    q = model.vertex_level_index(level, side).numpy()[m]
                    A = an.cross_attn[level][key]
                    row = (A.mean(0) if head == "mean" else A[head])[q]
                    np.testing.assert_allclose(intensity(ax.figure, other),       # × uniform: weight × number of keys
                                               row[model.vertex_level_index(level, other).numpy()] * len(row), rtol=1e-6)
                    assert mesh_values(ax.figure, side) is None
                    g = (an.image_attn[level][side].mean(0) if head == "mean" else an.image_attn[level][side][head])[q]
                    np.testing.assert_allclose(image_row(an, level, head, side, q), g.reshape(an.grid_size, an.grid_size))
                    marker = ax.figure.data[-1]
                    np.testing.assert_allclose([marker.x[0], marker.y[0], marker.z[0]], an.placed_verts(side)[m])
    assert cache.misses == misses                         # no interaction ran the model


def test_attention_click_and_reverse_direction(rec, cache, images, demo):
    ax = attention_explorer(rec, images, cache)
    an = cache.get(demo)
    ax.level.value, ax.head.value = 0, 1

    class Points:
        point_inds = [612]
    ax.on_click(trace_by_name(ax.figure, "left hand"), Points())
    assert (ax.hand.value, ax.vertex.value) == ("left", 612)
    q = ax.selected()[2]
    ax.direction.value = "attended by"
    col = an.cross_attn[0]["l2r"][1][:, q]                # right vertices (rows) attending to left vertex q
    np.testing.assert_allclose(intensity(ax.figure, "right"), col[rec.model.vertex_level_index(0, "right").numpy()] * len(col))
    pic = cv2.imdecode(np.frombuffer(ax.image_view.value, np.uint8), cv2.IMREAD_COLOR)
    assert pic.shape[:2] == (DISPLAY_SIZE, DISPLAY_SIZE + BAR_WIDTH)   # image attention with its colour bar
    ax.scale.value = "row range"                          # the raw weights, colours stretched over their own range
    tr = trace_by_name(ax.figure, "right hand")
    np.testing.assert_allclose(intensity(ax.figure, "right"), col[rec.model.vertex_level_index(0, "right").numpy()])
    assert tr.cmin == pytest.approx(float(col.min())) and tr.cmax == pytest.approx(float(col.max()))
    assert "min..max" in tr.colorbar.title.text
    Points.point_inds = []
    ax.on_click(trace_by_name(ax.figure, "right hand"), Points())   # a click on nothing keeps the selection
    assert (ax.hand.value, ax.vertex.value) == ("left", 612)
    with pytest.raises(ValueError, match="direction"):
        cross_row(an, 0, 0, "left", 0, "sideways")


def test_attention_overview(rec, cache, images, demo):
    ax = attention_explorer(rec, images, cache)
    an = cache.get(demo)
    ax.level.value, ax.head.value = an.num_levels - 1, "mean"
    ov = ax.overview()
    for side, key in (("left", "r2l"), ("right", "l2r")):
        np.testing.assert_allclose(ov["image"][side], an.image_attn[-1][side].mean(0).mean(0).reshape(an.grid_size, -1), rtol=1e-6)
        share = ov["parts"][side]
        assert abs(share.sum() - 1) < 1e-6 and (share >= 0).all()
        # the shares are the mean attention row summed per part of the other hand's graph vertices
        mean_row = an.cross_attn[-1][key].mean(0).mean(0)
        other = OTHER[side]
        vp = level_vertex_parts(ax.level_index(other, an.num_levels - 1), ax.part, len(mean_row), len(ax.part_names))
        np.testing.assert_allclose(share, [mean_row[vp == p].sum() / mean_row[vp >= 0].sum() for p in range(len(ax.part_names))],
                                   rtol=1e-6)
    # the bars: each part's share against the share uniform attention would give (its share of the vertices)
    np.testing.assert_allclose(np.asarray(ax.parts_figure.data[0].y), ov["parts"]["left"] / ov["vertex_share"]["left"])
    assert abs(ov["vertex_share"]["left"].sum() - 1) < 1e-9 and "index finger" in ax.part_names
    before = ax.overview_left.value
    ax.level.value = 0
    assert ax.overview_left.value != before



def _png(b):
    return cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]


def test_attention_heads_levels_and_matrix_views_follow_the_selection(rec, cache, images, demo):
    ax = attention_explorer(rec, images, cache)
    an = cache.get(demo)
    heads = an.image_attn[0]["left"].shape[0]
    ax.level.value, ax.head.value, ax.hand.value, ax.vertex.value = 1, "mean", "left", 444
    q = ax.selected()[2]
    tiles = _png(ax.heads_view.value)
    assert tiles.shape[:2] == (TILE, TILE * heads)
    for h in range(heads):                         # tile h is head h's image row over the picture (below the label band)
        expected = heat_overlay(an.image, image_row(an, 1, h, "left", q), alpha=0.55, nearest=True, size=TILE)
        np.testing.assert_array_equal(tiles[20:, h * TILE:(h + 1) * TILE], expected[20:])
    levels = _png(ax.levels_view.value)
    assert levels.shape[:2] == (TILE, TILE * an.num_levels + BAR_WIDTH)
    _, values = levels_picture(an, ax.level_index, "left", 444, "mean")
    for level, v in enumerate(values):               # each level's row of the vertex's graph vertex at that level
        row = an.cross_attn[level]["r2l"].mean(0)[ax.level_index("left", level)[444]]
        np.testing.assert_allclose(v, row[ax.level_index("right", level)] * len(row), rtol=1e-6)
    matrix = ax.matrix_view.value
    ax.hand.value = "right"                          # the matrix is the selected hand's rows
    assert ax.matrix_view.value != matrix
    M = cross_matrix(an, 1, "mean", "right")
    rp = level_vertex_parts(ax.level_index("right", 1), ax.part, M.shape[0], len(ax.part_names))
    cp = level_vertex_parts(ax.level_index("left", 1), ax.part, M.shape[1], len(ax.part_names))
    pic, ro, co, vmax = matrix_picture(M, rp, cp)
    assert sorted(ro) == list(range(M.shape[0])) and (np.diff(np.where(rp[ro] < 0, 99, rp[ro])) >= 0).all()
    assert vmax == pytest.approx(max(1.0, float(M.max() * M.shape[1])))
    np.testing.assert_array_equal(_png(ax.matrix_view.value), pic)


# --- data browser ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_demo_data(tmp_path_factory.mktemp("data"), n=2)


def test_data_browser_scrolls_with_ground_truth(tiny_data):
    db = data_browser(tiny_data)
    assert db.splits == ["val"] and db.index.max == 1 and db.note.value == ""
    assert count_widgets(db.widget, go.FigureWidget) == 1 and count_widgets(db.widget, W.Image) == 4
    shown = {}
    for i in (1, 0, 1):
        db.index.value = i
        s = db.sample
        assert s.idx == i
        for side in ("left", "right"):
            tr = trace_by_name(db.figure, f"{side} hand")
            np.testing.assert_allclose(np.c_[tr.x, tr.y, tr.z], s.hands[side]["verts3d"], rtol=1e-6, atol=1e-7)
        shown.setdefault(i, db.image_view.value)
        assert db.image_view.value == shown[i]
    assert shown[0] != shown[1]
    assert len(db._samples) == 2                           # the revisit came from the cache


def test_data_browser_with_a_checkpoint_shows_prediction_and_its_error(rec, tiny_data, tmp_path):
    "With a checkpoint, each sample's prediction error is the evaluation's own per-sample figure for it."
    from intaghand.evaluate import evaluate
    ck = tmp_path / "m.pth"
    torch.save({"state_dict": rec.model.state_dict()}, ck)
    save_config(rec.cfg, tmp_path / "m.yaml")
    db = data_browser(tiny_data, checkpoint=ck)
    assert count_widgets(db.widget, W.Image) == 5 and db.pred_view.value
    db.index.value = 1
    ev = evaluate(ck, tiny_data, "val", batch_size=2, progress=False, protocols=("original",))
    for h in ("left", "right"):
        assert db.errors[h] == pytest.approx(float(ev.results.per_sample[f"original_mpjpe_{h}"][1]), rel=1e-4)
    assert f"left {db.errors['left']:.1f}" in db.info.value
    for k in ("both", "right", 5):
        db.joint.value = k
        pic = cv2.imdecode(np.frombuffer(db.hms_view.value, np.uint8), cv2.IMREAD_COLOR)
        assert pic.shape[1] == DISPLAY_SIZE + BAR_WIDTH                 # one joint or a maximum, with its bar


def test_data_browser_errors_and_default_note(tmp_path, monkeypatch, tiny_data):
    with pytest.raises(FileNotFoundError, match="no processed samples"):
        DataBrowser(tmp_path)
    monkeypatch.setattr(explore_data, "find_processed_root", lambda candidates=None: None)
    monkeypatch.setattr(explore_data, "make_demo_data", lambda out=None, n=4: tiny_data)
    db = data_browser()
    assert "no processed data found" in db.note.value and db.root == tiny_data


# --- run viewer -----------------------------------------------------------------------------------

def _write_run(d, values, tag="loss/total", step=5):
    from torch.utils.tensorboard import SummaryWriter
    w = SummaryWriter(str(d))
    for i, v in enumerate(values): w.add_scalar(tag, v, i * step)
    w.close()


def test_read_scalars_and_compare_runs(tmp_path):
    _write_run(tmp_path / "a", [3.0, 2.0, 1.5, 1.0])
    _write_run(tmp_path / "b", [4.0, 1.0])
    (tmp_path / "b" / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in
        [{"step": 10, "mpjpe": 30.5, "note": "x"}, {"step": 0, "mpjpe": 40.0}, "garbage"]).replace('"garbage"', "not json"))
    runs = find_runs(tmp_path)
    assert sorted(runs) == ["a", "b"]
    sc = read_scalars(runs["a"])
    np.testing.assert_array_equal(sc["loss/total"][0], [0, 5, 10, 15])
    np.testing.assert_allclose(sc["loss/total"][1], [3.0, 2.0, 1.5, 1.0])
    sb = read_scalars(runs["b"])
    np.testing.assert_allclose(sb["mpjpe"][1], [40.0, 30.5])              # sorted by step
    rv = RunViewer(runs)
    assert rv.tag_select.value == ("loss/total",) and len(rv.figure.data) == 2
    assert {t.name for t in rv.figure.data} == {"a: loss/total", "b: loss/total"}
    rv.run_select.value = ("b",)
    rv.tag_select.value = ("loss/total", "mpjpe")
    assert [t.name for t in rv.figure.data] == ["b: loss/total", "b: mpjpe"]
    # one panel per tag: a loss and an error in mm never share a y axis; integer steps on the shared x axis
    assert [t.yaxis for t in rv.figure.data] == ["y", "y2"]
    assert rv.figure.layout.yaxis.title.text == "loss/total" and rv.figure.layout.yaxis2.title.text == "mpjpe"
    assert rv.figure.layout.xaxis.anchor == "y2" and rv.figure.layout.xaxis.tickformat == "d"
    assert "30.5 @ 10" in rv.table.value                                   # best (lowest) MPJPE
    rv.log_y.value = True
    assert rv.figure.layout.yaxis.type == "log"
    assert rv.figure.layout.yaxis2.type == "log"
    rv.xaxis.value = "wall time (min)"
    assert min(rv.figure.data[0].x) == 0.0 and rv.figure.layout.xaxis.exponentformat == "none"
    rv.tag_select.value = ("mpjpe",)
    assert rv.figure.layout.yaxis2.visible is False and [t.yaxis for t in rv.figure.data] == ["y"]
    with pytest.raises(FileNotFoundError):
        find_runs(tmp_path / "nope")


def test_trainer_layout_is_one_run(tmp_path):
    "`intaghand.train` writes <run>/train_log.jsonl and <run>/tb/events...: one run, log numbers not in TB added."
    run = tmp_path / "exp1"
    _write_run(run / "tb", [2.0, 1.0], tag="train/loss_total")
    recs = [{"kind": "train", "step": 0, "epoch": 0, "train/loss_total": 2.0, "learning_rate": 1e-3},
            {"kind": "val", "step": 5, "epoch": 1, "val/mpjpe_all": 25.0}]
    (run / "train_log.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + '\n{"kind": "tra')
    runs = find_runs(tmp_path)
    assert runs == {"exp1": run}
    sc = read_scalars(run)
    assert sorted(sc) == ["learning_rate", "train/loss_total", "val/mpjpe_all"]
    np.testing.assert_allclose(sc["train/loss_total"][1], [2.0, 1.0])       # from TensorBoard, not duplicated
    np.testing.assert_allclose(sc["val/mpjpe_all"][1], [25.0])


def test_run_viewer_default_demo_runs():
    rv = run_viewer()
    assert "demo runs" in rv.note.value and len(rv.runs) == 2
    assert len(rv.figure.data) == 2 and all(len(t.y) == 40 for t in rv.figure.data)


def test_ema_matches_tensorboard_debiasing():
    v = np.array([1.0, 3.0, 2.0])
    w = 0.5
    # acc_1 = 0.5, norm_1 = 0.5 -> 1; acc_2 = 0.25 + 1.5 = 1.75, norm_2 = 0.75 -> 2.333; acc_3 = 0.875 + 1 = 1.875, norm 0.875
    np.testing.assert_allclose(ema(v, w), [1.0, 1.75 / 0.75, 1.875 / 0.875])
    np.testing.assert_array_equal(ema(v, 0.0), v)


def test_scale_attention():
    row = np.array([0.2, 0.3, 0.5])
    v, lo, hi, title = scale_attention(row, 3)
    np.testing.assert_allclose(v, row * 3)
    assert (lo, hi) == (0.0, 1.5) and "1 = uniform" in title
    v, lo, hi, title = scale_attention(np.full(4, 0.25), 4)
    assert hi == 1.0 and np.allclose(v, 1.0)                 # a uniform row reads as 1 everywhere
    v, lo, hi, _ = scale_attention(row, 3, "row range")
    assert (lo, hi) == (0.2, 0.5) and np.array_equal(v, row)
    with pytest.raises(ValueError):
        scale_attention(row, 3, "log")


def test_explorers_leave_a_static_picture_that_follows_the_view(rec, cache, images, demo):
    "A saved notebook keeps a plain PNG of the last view: made from the live pictures, updated on each interaction."
    ax = attention_explorer(rec, images, cache)

    class Handle:
        shown = []
        def update(self, obj): self.shown.append(obj)
    ax._still = Handle()
    ax.vertex.value = 10
    ax.vertex.value = 600
    assert len(Handle.shown) >= 2
    sheet = cv2.imdecode(np.frombuffer(Handle.shown[-1].data, np.uint8), cv2.IMREAD_COLOR)
    before = cv2.imdecode(np.frombuffer(Handle.shown[0].data, np.uint8), cv2.IMREAD_COLOR)
    assert sheet.shape[1] == 1000 and sheet.shape[0] > 400 and not np.array_equal(sheet, before)
    heads = _png(ax.heads_view.value)                   # the current heads strip is on the sheet, pixel for pixel
    h, w = heads.shape[:2]
    found = cv2.matchTemplate(sheet[..., ::-1].astype(np.float32), heads.astype(np.float32), cv2.TM_SQDIFF)
    assert found.min() / (h * w) < 1.0
    titles = [t for t, _ in _views(ax.widget)]
    assert sum("every head" in t for t in titles) == 1 and sum("cross-hand attention" in t for t in titles) == 1


def test_export_view_writes_the_pictures_and_the_arrays_shown(rec, cache, images, demo, tmp_path):
    mx = model_explorer(rec, images, cache)
    folder = mx.export_view(tmp_path / "mx")
    names = sorted(p.name for p in folder.iterdir())
    assert "view.png" in names and "arrays.npz" in names and sum(n.endswith(".png") for n in names) >= 7
    assert not [n for n in names if n.startswith(".")]                  # no temporary files left
    saved = np.load(folder / "arrays.npz")
    an = mx.analysis
    np.testing.assert_array_equal(saved["right_verts3d"], an.verts3d["right"])
    np.testing.assert_array_equal(saved["hms"], an.hms)
    overlay = next(n for n in names if "meshes_on_the_image" in n)
    np.testing.assert_array_equal(cv2.imread(str(folder / overlay))[..., ::-1], _png(mx.overlay.value))
    ax = attention_explorer(rec, images, cache)
    ax.level.value, ax.head.value, ax.hand.value, ax.vertex.value = 1, 0, "left", 200
    ax.export_button.click()                                          # the button writes under the project's output/
    where = ax.export_status.value
    assert "written to" in where
    out = Path(re.search(r"written to (.+?)<", where).group(1))
    try:
        a = np.load(out / "arrays.npz")
        side, m, q = ax.selected()
        np.testing.assert_allclose(a["image_attention"], image_row(cache.get(demo), 1, 0, "left", q))
        np.testing.assert_allclose(a["cross_attention_on_other_mesh"], ax.vertex_colours())
        assert a["cross_matrix"].shape == cross_matrix(cache.get(demo), 1, 0, "left").shape and int(a["mesh_vertex"]) == 200
    finally:
        shutil.rmtree(out)
