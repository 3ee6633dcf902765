"""Rendering: analytic silhouettes, dense colours, projection vs rasterization, fast path vs PyTorch3D,
camera conversions, mesh export round trips, bad inputs."""
import math

import numpy as np
import pytest
import torch
import trimesh

from intaghand.meshes import export_hands, load_mesh, mirror_to_left, plot_hands, toy_hand_mesh
from intaghand.raster import check_faces, check_verts, flip_winding, rasterize_fast
from intaghand.render import (EXPORT_TYPES, LEFT_COLOR, MODES, RIGHT_COLOR, HandRenderer, PerspectiveCamera,
                              WeakPerspectiveCamera, build_scene, composite, default_vertex_colors, rasterize_pytorch3d,
                              resolve_backend)

BACKENDS = ["fast", "pytorch3d"]


def sphere(r=0.05, subdivisions=3):
    m = trimesh.creation.icosphere(subdivisions=subdivisions)
    return torch.tensor(m.vertices, dtype=torch.float32) * r, torch.tensor(m.faces)


def box(extent=0.25):
    m = trimesh.creation.box(extents=[extent, extent, extent])
    return torch.tensor(m.vertices, dtype=torch.float32), torch.tensor(m.faces)


def iou(a, b):
    return float((a & b).sum()) / max(1, float((a | b).sum()))


def rotation(axis_angle):
    return torch.linalg.matrix_exp(torch.tensor([[0.0, -axis_angle[2], axis_angle[1]], [axis_angle[2], 0.0, -axis_angle[0]],
                                                 [-axis_angle[1], axis_angle[0], 0.0]]))


@pytest.fixture(scope="module")
def toy():
    v, f = toy_hand_mesh()
    v = torch.as_tensor(v) - torch.as_tensor(v).mean(0)
    return v, torch.as_tensor(f)


# ---------------------------------------------------------------- analytic silhouettes

@pytest.mark.parametrize("backend", BACKENDS)
def test_box_silhouette_is_exact_square(backend):
    """A cube of side 0.25 at scale 1 on 64 px projects to a 16×16 px square; shifted by a quarter
    pixel so no pixel centre lies on an edge, both backends must cover exactly 256 pixels."""
    v, f = box(0.25)
    S, shift = 64, 0.25
    cam = WeakPerspectiveCamera(torch.ones(1), torch.tensor([[shift / (S / 2), shift / (S / 2)]]), S)
    out = HandRenderer(backend)(v + torch.tensor([0, 0, 5.0]), v, f, cam, modes=("mask",))   # left far behind
    m = out.mask_right[0]
    assert int(m.sum()) == 256
    ys, xs = m.nonzero(as_tuple=True)
    assert (int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())) == (24, 39, 24, 39)
    assert not out.mask_left.any()                                         # fully hidden behind the right cube


def test_fast_tessellated_square_has_no_cracks():
    "Pixel centres on shared edges (integer grid, diagonals through centres) belong to one triangle: no holes."
    n = 8
    g = torch.stack(torch.meshgrid(torch.arange(n + 1.0), torch.arange(n + 1.0), indexing="xy"), -1).reshape(-1, 2) * 2 + 4
    verts = torch.cat([g, torch.full((len(g), 1), 1.0)], -1)[None]
    idx = lambda i, j: j * (n + 1) + i
    faces = []
    for j in range(n):
        for i in range(n):
            a, b, c, d = idx(i, j), idx(i + 1, j), idx(i + 1, j + 1), idx(i, j + 1)
            faces += [[a, b, c], [a, c, d]] if (i + j) % 2 else [[a, b, d], [b, c, d]]
    fr = rasterize_fast(verts, torch.tensor(faces), (32, 32))
    assert int(fr.foreground.sum()) == (2 * n) ** 2
    assert bool(fr.foreground[0, 4:20, 4:20].all())


@pytest.mark.parametrize("backend", BACKENDS)
def test_sphere_silhouette_area_and_bbox(backend):
    r, S, s = 0.05, 80, 3.0
    v, f = sphere(r, 4)
    t = torch.tensor([[0.1, -0.2]])
    cam = WeakPerspectiveCamera(torch.tensor([s]), t, S)
    out = HandRenderer(backend)(v, v + torch.tensor([0.5, 0.0, 0.0]), f, cam, modes=("mask",))
    m = out.mask_left[0]
    radius = S * s * r
    assert abs(float(m.sum()) - math.pi * radius ** 2) < 0.02 * math.pi * radius ** 2
    cx, cy = S / 2 * (1 + t[0, 0]), S / 2 * (1 + t[0, 1])
    ys, xs = m.nonzero(as_tuple=True)
    got = torch.stack([xs.min(), xs.max(), ys.min(), ys.max()]).float() + 0.5
    want = torch.tensor([cx - radius, cx + radius, cy - radius, cy + radius])
    assert (got - want).abs().max() <= 1.0


# ---------------------------------------------------------------- projection vs rasterization

@pytest.mark.parametrize("backend", BACKENDS)
def test_projected_vertices_land_on_their_hand(backend):
    "Per-hand cameras, batch of 2: every camera-facing vertex projects into its own hand's mask at its depth."
    v, f = sphere(0.05, 3)
    cam_l = WeakPerspectiveCamera(torch.tensor([2.0, 2.5]), torch.tensor([[-0.4, 0.1], [-0.3, -0.2]]), 64)
    cam_r = WeakPerspectiveCamera(torch.tensor([3.0, 1.5]), torch.tensor([[0.4, 0.0], [0.35, 0.3]]), 64)
    vb = v[None].expand(2, -1, -1)
    out = HandRenderer(backend)(vb, vb, f, cam_l, cam_r, modes=("mask", "depth"))
    facing = v[:, 2] < -0.7 * 0.05                  # towards the camera (-z), well inside the silhouette
    for cam, mask in ((cam_l, out.mask_left), (cam_r, out.mask_right)):
        uv, z = cam.project(vb)
        centre, _ = cam.project(torch.zeros(2, 1, 3))
        for b in range(2):
            px = uv[b, facing].floor().long()
            assert bool(mask[b, px[:, 1], px[:, 0]].all())
            # depth at those pixel centres: the sphere's analytic depth there (the mesh is inscribed: within 2e-3)
            rho2 = ((px + 0.5 - centre[b]) ** 2).sum(-1) / (64 * cam.scale[b]) ** 2
            want = 10.0 - (0.05 ** 2 - rho2).sqrt()
            assert (out.depth[b, px[:, 1], px[:, 0]] - want).abs().max() < 2e-3
    # the original's weak-perspective formula at 256 px
    X = torch.randn(1, 5, 3) * 0.1
    uv, _ = WeakPerspectiveCamera(torch.tensor([0.7]), torch.tensor([[0.1, -0.3]])).project(X)
    assert torch.allclose(uv, 256 * 0.7 * X[..., :2] + 128 * torch.tensor([0.1, -0.3]) + 128, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dense_colours_at_projected_vertices(backend):
    v, f = sphere(0.05, 3)
    S = 48
    cam = WeakPerspectiveCamera(torch.tensor([3.0]), torch.zeros(1, 2), S)
    vl, vr = v - torch.tensor([0.06, 0, 0]), v + torch.tensor([0.06, 0, 0])
    vc = default_vertex_colors(v)
    out = HandRenderer(backend)(vl, vr, f, cam, modes=("dense", "depth"), v_color=vc)
    uv, z = cam.project(torch.cat([vl, vr])[None])
    px = uv[0].floor().long()
    front = (z[0] - out.depth[0, px[:, 1], px[:, 0]]).abs() < 2e-3
    assert int(front.sum()) > 250
    err = (out.dense[0, px[front, 1], px[front, 0]] - torch.cat([vc, vc])[front]).abs()
    assert float(err.max()) < 0.1 and float(err.mean()) < 0.03


# ---------------------------------------------------------------- cameras vs PyTorch3D

@pytest.mark.parametrize("hw", [(64, 64), (48, 80), (80, 48)])
def test_camera_conversions_match_pytorch3d(hw):
    X = torch.randn(2, 9, 3) * 0.1
    wc = WeakPerspectiveCamera(torch.tensor([0.3, 0.5]), torch.tensor([[0.2, -0.1], [0.0, 0.3]]), hw)
    assert torch.allclose(wc.to_pytorch3d().transform_points_screen(X)[..., :2], wc.project(X)[0], atol=1e-3)
    K = torch.tensor([[[300.0, 0, hw[1] / 2 + 3], [0, 320, hw[0] / 2 - 2], [0, 0, 1]]]).expand(2, 3, 3)
    R = torch.stack([rotation([0.1, -0.2, 0.3]), rotation([0.0, 0.3, -0.1])])
    pc = PerspectiveCamera(K, R, torch.tensor([[0.01, 0.02, 0.5], [0.0, -0.01, 0.6]]), hw)
    uv, z = pc.project(X)
    p3 = pc.to_pytorch3d()
    assert torch.allclose(p3.transform_points_screen(X)[..., :2], uv, atol=1e-3)
    assert torch.allclose(p3.get_world_to_view_transform().transform_points(X)[..., 2], z, atol=1e-5)


def _pytorch3d_mask(mesh_verts, faces, cameras, hw):
    from pytorch3d.renderer import MeshRasterizer, RasterizationSettings
    from pytorch3d.structures import Meshes
    B = mesh_verts.shape[0]
    rast = MeshRasterizer(cameras=cameras, raster_settings=RasterizationSettings(image_size=hw, blur_radius=0.0, faces_per_pixel=1))
    return rast(Meshes(verts=mesh_verts, faces=faces[None].expand(B, -1, -1))).pix_to_face[..., 0] >= 0


@pytest.mark.parametrize("kind", ["weak", "perspective"])
def test_renders_match_pytorch3d_own_camera_pipeline(kind, toy):
    "Our projection + rasterizer draws the mesh where PyTorch3D's MeshRasterizer with the converted camera does."
    v, f = toy
    hw = (48, 64)
    if kind == "weak":
        cam = WeakPerspectiveCamera(torch.tensor([2.5]), torch.tensor([[0.1, -0.05]]), hw)
    else:
        K = torch.tensor([[[260.0, 0, 33], [0, 250, 23], [0, 0, 1]]])
        cam = PerspectiveCamera(K, rotation([0.2, -0.3, 0.1])[None], torch.tensor([[0.0, 0.0, 0.45]]), hw)
    off_image = v + torch.tensor([10.0, 0.0, 5.0])                      # the left hand: out of the picture
    out = HandRenderer("fast")(off_image, v, f, cam, modes=("mask",))
    assert not out.mask_left.any()
    ref = _pytorch3d_mask(v[None], f, cam.to_pytorch3d(), hw)
    assert iou(out.mask_right, ref) > 0.98


# ---------------------------------------------------------------- fast path vs PyTorch3D on hand-like meshes

@pytest.mark.parametrize("kind", ["weak", "perspective"])
def test_fast_matches_pytorch3d_on_hands(kind, toy):
    v, f = toy
    g = torch.Generator().manual_seed(0)
    B, S = 4, 64
    lv0, _ = mirror_to_left(v, f)
    rots = [rotation((torch.rand(3, generator=g) - 0.5).tolist()) for _ in range(2 * B)]
    L = torch.stack([lv0 @ rots[b].T + torch.tensor([-0.045, 0.0, 0.01]) for b in range(B)])
    R = torch.stack([v @ rots[B + b].T + torch.tensor([0.045, 0.0, 0.0]) for b in range(B)])
    if kind == "weak":
        cam = WeakPerspectiveCamera(2.5 + torch.rand(B, generator=g), 0.1 * torch.randn(B, 2, generator=g), S)
    else:
        K = torch.tensor([[200.0, 0, S / 2], [0, 200, S / 2], [0, 0, 1]]).expand(B, 3, 3)
        cam = PerspectiveCamera(K, None, torch.tensor([[0.0, 0.0, 0.4]]).expand(B, 3), S)
    vc = default_vertex_colors(v)
    a = HandRenderer("fast")(L, R, f, cam, modes=MODES, v_color=vc)
    b = HandRenderer("pytorch3d")(L, R, f, cam, modes=MODES, v_color=vc)
    for i in range(B):
        assert iou(a.mask_left[i], b.mask_left[i]) > 0.98
        assert iou(a.mask_right[i], b.mask_right[i]) > 0.98
    both = a.alpha.bool() & b.alpha.bool()
    same = both & (a.fragments.pix_to_face == b.fragments.pix_to_face)
    assert float(same.sum()) / float(both.sum()) > 0.97
    assert float((a.dense - b.dense)[same].abs().max()) < 1e-3
    assert float((a.dense - b.dense)[both].abs().mean()) < 0.01
    # PyTorch3D's CPU zbuf is not always its own barycentric interpolation of the face's z (off by up to ~1e-2
    # at depth 10 with identical faces and barycentrics); ours is. So only the bulk is compared.
    dz = (a.depth - b.depth)[same].abs()
    assert float(dz.median()) < 2e-4 and float(dz.quantile(0.99)) < 5e-3
    assert float((a.shaded - b.shaded)[same].abs().max()) < 1e-2


def test_pytorch3d_backend_is_differentiable(toy):
    v, f = toy
    cam = WeakPerspectiveCamera(torch.tensor([3.0]), torch.zeros(1, 2), 32)
    R = v.clone().requires_grad_(True)
    out = HandRenderer("pytorch3d")(v - torch.tensor([0.08, 0, 0]), R, f, cam, modes=("dense", "shaded"), v_color=default_vertex_colors(v))
    (out.dense.sum() + out.shaded.sum()).backward()
    assert R.grad is not None and float(R.grad.abs().sum()) > 0


def test_auto_backend():
    assert resolve_backend("auto", "cpu") == "fast"
    assert resolve_backend("auto", "cuda") == "pytorch3d"
    v, f = sphere(0.05, 1)
    out = HandRenderer()(v, v + 0.1, f, WeakPerspectiveCamera(torch.ones(1), torch.zeros(1, 2), 16))
    assert out.backend == "fast"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_auto_uses_pytorch3d_and_matches_fast(toy):
    v, f = (t.cuda() for t in toy)
    cam = WeakPerspectiveCamera(torch.tensor([3.0]), torch.zeros(1, 2), 128).to("cuda")
    lv = mirror_to_left(v, f)[0] - torch.tensor([0.05, 0, 0], device="cuda")
    a = HandRenderer()(lv, v, f, cam, modes=("mask", "shaded"))
    b = HandRenderer("fast")(lv, v, f, cam, modes=("mask", "shaded"))
    assert a.backend == "pytorch3d" and a.shaded.is_cuda
    assert iou(a.mask_right, b.mask_right) > 0.98 and iou(a.mask_left, b.mask_left) > 0.98


# ---------------------------------------------------------------- outputs

def test_gt_mask_format_and_overlay():
    v, f = sphere(0.05, 2)
    cam = WeakPerspectiveCamera(torch.tensor([3.0]), torch.zeros(1, 2), 32)
    out = HandRenderer("fast", background=(1.0, 1.0, 1.0))(v - torch.tensor([0.03, 0, 0]), v + torch.tensor([0.03, 0, -0.1]), f, cam,
                                                           modes=("mask", "shaded"))
    gt = out.gt_mask()[0]
    assert gt.dtype == torch.uint8 and set(gt.unique().tolist()) == {0, 255}
    assert torch.equal(gt[..., 2] == 255, out.mask_left[0]) and torch.equal(gt[..., 1] == 255, out.mask_right[0])
    assert int(gt[..., 0].max()) == 0 and not (out.mask_left & out.mask_right).any()
    assert torch.allclose(out.shaded[0][~out.alpha[0].bool()], torch.ones(3))          # configured background
    with pytest.raises(ValueError, match="'dense'"):
        out.gt_dense()
    img = np.full((32, 32, 3), 200, np.uint8)
    ov = out.overlay(img)
    assert torch.allclose(ov[0][~out.alpha[0].bool()], torch.tensor(200 / 255))
    assert torch.allclose(ov[0][out.alpha[0].bool()], out.shaded[0][out.alpha[0].bool()])
    with pytest.raises(ValueError, match="matching the render"):
        composite(np.zeros((16, 16, 3)), out.shaded, out.alpha)


def test_hand_colours_default_to_the_workbench_rgb():
    "RGB pictures by default: the left hand blue and the right red, the original's BGR arrays reversed."
    v, f = sphere(0.05, 2)
    cam = WeakPerspectiveCamera(torch.tensor([3.0]), torch.zeros(1, 2), 32)
    from intaghand.render import Lights
    flat = Lights(ambient=1.0, diffuse=0.0, specular=0.0)
    out = HandRenderer("fast", lights=flat)(v - torch.tensor([0.06, 0, 0]), v + torch.tensor([0.06, 0, 0]), f, cam, modes=("shaded",))
    assert torch.allclose(out.shaded[0][out.mask_left[0]], torch.tensor(LEFT_COLOR[::-1]) / 255.0, atol=1e-5)
    assert torch.allclose(out.shaded[0][out.mask_right[0]], torch.tensor(RIGHT_COLOR[::-1]) / 255.0, atol=1e-5)


# ---------------------------------------------------------------- export

@pytest.mark.parametrize("ext", EXPORT_TYPES)
def test_export_round_trip(ext, tmp_path, toy):
    v, f = toy
    lv, _ = mirror_to_left(v, f)
    path = export_hands(tmp_path / f"hands.{ext}", lv - 0.05, v + 0.05, f)
    verts, faces, cols = load_mesh(path)
    assert np.allclose(verts, torch.cat([lv - 0.05, v + 0.05]).double().numpy(), atol=1e-6)
    assert np.array_equal(faces, np.concatenate([flip_winding(f).numpy(), f.numpy() + len(v)]))
    # mesh files are RGB: the left hand blue and the right red, as the original's pictures show them
    assert cols is not None and cols[0, :3].tolist() == [0, 153, 204] and cols[-1, :3].tolist() == [255, 102, 102]
    assert not list(tmp_path.glob(".*.tmp"))                                    # atomic: no temp files left


def test_plot_hands_with_cameras(toy):
    v, f = toy
    for cam in (WeakPerspectiveCamera(torch.tensor([3.0]), torch.zeros(1, 2)),
                PerspectiveCamera(torch.tensor([[[300.0, 0, 128], [0, 300, 128], [0, 0, 1]]]), None, torch.tensor([[0, 0, 0.5]]))):
        fig = plot_hands(mirror_to_left(v, f)[0] - 0.05, v + 0.05, f, camera=cam)
        assert [t.name for t in fig.data[:3]] == ["left hand", "right hand", "camera"]
        assert len(fig.data[0].x) == len(v)
        # the far rectangle of the drawn view volume projects onto the image corners
        line = fig.data[2]
        pts = torch.tensor([[x, y, z] for x, y, z in zip(line.x, line.y, line.z) if x is not None], dtype=torch.float32)
        uv, _ = cam.project(pts[None])
        corners = torch.tensor([[0.0, 0.0], [256, 0], [256, 256], [0, 256]])
        assert all(((uv[0] - c).norm(dim=-1) < 1e-2).any() for c in corners)


# ---------------------------------------------------------------- bad input

def test_bad_inputs_raise_clear_errors(tmp_path):
    v, f = sphere(0.05, 1)
    cam = WeakPerspectiveCamera(torch.ones(1), torch.zeros(1, 2), 16)
    r = HandRenderer("fast")
    nan = v.clone(); nan[3, 1] = float("nan")
    cases = [
        (lambda: r(v[:0], v, f, cam), "empty"),
        (lambda: r(v, v, f[:0], cam), "0 faces"),
        (lambda: r(nan, v, f, cam), "NaN"),
        (lambda: r(torch.zeros_like(v), v, f, cam), "degenerate"),
        (lambda: r(v, v, torch.tensor([[0, 0, 1]]), cam), "repeat a vertex"),
        (lambda: r(v, v, f + 1000, cam), "face indices"),
        (lambda: r(v[None].expand(2, -1, -1), v[None].expand(3, -1, -1), f, cam), "batch sizes differ"),
        (lambda: r(v[None].expand(2, -1, -1), v[None].expand(2, -1, -1), f,
                   WeakPerspectiveCamera(torch.ones(3), torch.zeros(3, 2))), "batch size"),
        (lambda: WeakPerspectiveCamera(torch.ones(1), torch.zeros(1, 2), 0), "zero-size"),
        (lambda: WeakPerspectiveCamera(torch.ones(1), torch.zeros(1, 2), (16, 0)), "zero-size"),
        (lambda: WeakPerspectiveCamera(torch.ones(2), torch.zeros(3, 2)), "batch size"),
        (lambda: WeakPerspectiveCamera(torch.zeros(1), torch.zeros(1, 2)), "positive"),
        (lambda: PerspectiveCamera(torch.zeros(1, 3, 3)), "focal"),
        (lambda: r(v, v, f, cam, WeakPerspectiveCamera(torch.ones(1), torch.zeros(1, 2), 32)), "image sizes"),
        (lambda: r(v, v, f, cam, modes=("dense",)), "v_color"),
        (lambda: r(v, v, f, cam, modes=("dense",), v_color=torch.rand(5, 3)), "v_color"),
        (lambda: r(v, v, f, cam, modes=("xray",)), "unknown render modes"),
        (lambda: HandRenderer("opengl"), "backend"),
        (lambda: export_hands(tmp_path / "a.stl", v, v, f), "unsupported"),
        (lambda: export_hands(tmp_path / "a.obj", v[None].expand(2, -1, -1), v, f), "one scene"),
        (lambda: check_verts(torch.zeros(4, 2)), "B×N×3"),
        (lambda: check_faces(torch.tensor([[0.5, 1, 2]]), 3), "integers"),
    ]
    for fn, words in cases:
        with pytest.raises(ValueError, match=words):
            fn()


def test_fast_rasterizer_ignores_faces_outside_or_behind():
    v, f = sphere(0.05, 2)
    K = torch.tensor([[[100.0, 0, 16], [0, 100, 16], [0, 0, 1]]])
    # right sphere straddles the camera plane (z from -0.05 to 0.05): faces behind are dropped, not drawn mirrored
    cam = PerspectiveCamera(K, None, torch.tensor([[0.0, 0.0, 0.0]]), 32)
    scene = build_scene(v + torch.tensor([0, 0, 0.5]), v, f, cam)
    fr = rasterize_fast(scene.screen, scene.faces, scene.image_size, perspective_correct=True)
    drawn_right = fr.pix_to_face[fr.foreground] >= scene.n_left_faces
    assert torch.isfinite(fr.zbuf[fr.foreground]).all()
    assert (fr.zbuf[fr.foreground][drawn_right] > 0).all()
