"""Images per second for a batch of two-hand renders: intaghand's batched renderer vs a plain per-image PyTorch3D loop.

    .venv/bin/python bench/render.py [--quick] [--batch 16] [--size 256] [--device cpu|cuda] [--threads N]

Scenes: `--batch` two-hand scenes (the embedded hand model when present, else `toy_hand_mesh`, a
hand-like mesh of about the same size; left = mirrored right), each hand randomly rotated and with its
own weak-perspective camera (scale, trans2d) like the network's output. Both sides produce the same
products: a shaded colour render with hand colours and its alpha (masks).

- ours: `HandRenderer(backend='auto')`, the whole batch in one call ('fast' z-buffer on CPU,
  PyTorch3D on CUDA), modes ('mask', 'shaded').
- baseline: the original's way, one image at a time: per scene a `Meshes` of both hands (right hand
  mapped into the left hand's orthographic camera as `render_rgb_orth` does), `MeshRenderer` with
  `MeshRasterizer` + `HardPhongShader`, a point light at (0, 0, -1).

The two are timed alternately (the minimum over repeats; --quick times the loop on the first 4 scenes,
since its cost is per image anyway); the alpha masks of both are compared
(IoU) to show they drew the same scenes. The last line printed is one JSON object; `ratio` =
our images/s over the per-image PyTorch3D loop's.
"""
import argparse
import json
import time
from pathlib import Path

import torch


def make_scenes(B: int, size: int, device, seed: int = 0):
    from intaghand.meshes import hand_template, mirror_to_left
    from intaghand.render import WeakPerspectiveCamera
    v, f, source = hand_template()
    v = torch.as_tensor(v) - torch.as_tensor(v).mean(0)
    f = torch.as_tensor(f)
    ext = float((v.amax(0) - v.amin(0)).max())
    g = torch.Generator().manual_seed(seed)

    def rot(n):
        aa = (torch.rand(n, 3, generator=g) - 0.5) * 1.2
        K = torch.zeros(n, 3, 3)
        K[:, 0, 1], K[:, 0, 2], K[:, 1, 2] = -aa[:, 2], aa[:, 1], -aa[:, 0]
        return torch.linalg.matrix_exp(K - K.transpose(1, 2))

    lv0, _ = mirror_to_left(v, f)
    left = torch.einsum("bij,nj->bni", rot(B), lv0) + torch.tensor([0.0, 0.0, 0.02]) * ext
    right = torch.einsum("bij,nj->bni", rot(B), v)
    s_l = (0.4 + 0.1 * torch.rand(B, generator=g)) / ext
    s_r = s_l * (0.9 + 0.2 * torch.rand(B, generator=g))
    t_l = torch.stack([-0.35 + 0.1 * torch.randn(B, generator=g), 0.1 * torch.randn(B, generator=g)], -1)
    t_r = torch.stack([0.35 + 0.1 * torch.randn(B, generator=g), 0.1 * torch.randn(B, generator=g)], -1)
    cams = (WeakPerspectiveCamera(s_l, t_l, size).to(device), WeakPerspectiveCamera(s_r, t_r, size).to(device))
    return left.to(device), right.to(device), f.to(device), cams, Path(source).name, (len(v), len(f))


def pytorch3d_loop(left, right, faces, cam_l, cam_r, size):
    "The original's renderer, one scene at a time: returns (B×H×W×3 rgb, B×H×W alpha)."
    from pytorch3d.renderer import (HardPhongShader, MeshRasterizer, MeshRenderer, OrthographicCameras, PointLights,
                                    RasterizationSettings, TexturesVertex)
    from pytorch3d.structures import Meshes
    from intaghand.raster import flip_winding
    from intaghand.render import LEFT_COLOR, RIGHT_COLOR
    dev = left.device
    faces_all = torch.cat([flip_winding(faces), faces + left.shape[1]])
    cols = torch.cat([torch.tensor(LEFT_COLOR, dtype=torch.float32).expand(left.shape[1], 3),
                      torch.tensor(RIGHT_COLOR, dtype=torch.float32).expand(right.shape[1], 3)]).to(dev) / 255.0
    settings = RasterizationSettings(image_size=size, blur_radius=0.0, faces_per_pixel=1)
    lights = PointLights(location=[[0.0, 0.0, -1.0]], device=dev)
    R = torch.diag(torch.tensor([-1.0, -1.0, 1.0], device=dev))[None]
    T = torch.tensor([[0.0, 0.0, 10.0]], device=dev)
    rgbs, alphas = [], []
    for b in range(left.shape[0]):
        sl, sr, tl, tr = cam_l.scale[b], cam_r.scale[b], cam_l.trans2d[b], cam_r.trans2d[b]
        vr = right[b] * (sr / sl)                                     # render_rgb_orth: right hand into the left camera
        vr = torch.cat([vr[:, :2] + (tr - tl) / (2 * sl), vr[:, 2:]], 1)
        mesh = Meshes(verts=[torch.cat([left[b], vr])], faces=[faces_all], textures=TexturesVertex([cols]))
        cams = OrthographicCameras(focal_length=2 * sl.expand(1, 2), principal_point=-tl[None], R=R, T=T, device=dev)
        renderer = MeshRenderer(MeshRasterizer(cameras=cams, raster_settings=settings),
                                HardPhongShader(device=dev, cameras=cams, lights=lights))
        img = renderer(mesh)
        rgbs.append(img[..., :3]); alphas.append(img[..., 3])
    return torch.cat(rgbs), torch.cat(alphas)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one baseline pass (under a minute on 2 CPU cores)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.threads: torch.set_num_threads(args.threads)
    from intaghand.render import HandRenderer
    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    left, right, faces, (cam_l, cam_r), source, (nv, nf) = make_scenes(args.batch, args.size, dev)
    renderer = HandRenderer("auto")

    def ours():
        out = renderer(left, right, faces, cam_l, cam_r, modes=("mask", "shaded")); sync(); return out

    n_base = min(args.batch, 4) if args.quick else args.batch          # the loop's cost is per image: --quick times 4

    def baseline():
        out = pytorch3d_loop(left[:n_base], right[:n_base], faces, cam_l, cam_r, args.size); sync(); return out

    def timed(fn):
        t0 = time.perf_counter(); out = fn(); return time.perf_counter() - t0, out

    with torch.no_grad():
        _, ref = timed(ours)
        pytorch3d_loop(left[:1], right[:1], faces, cam_l, cam_r, args.size)      # warm-up: one scene
        base_reps, our_reps = (1, 5) if args.quick else (2, 20)
        t_ours, t_base = [], []
        for _ in range(base_reps):
            for _ in range(our_reps // base_reps): t_ours.append(timed(ours)[0])
            dt, (rgb, alpha) = timed(baseline)
            t_base.append(dt / n_base)
    a, b = ref.alpha.bool().cpu()[:n_base], alpha.cpu() > 0.5
    iou = float((a & b).sum()) / max(1.0, float((a | b).sum()))
    both = a & b
    rgb_err = float((ref.shaded.cpu()[:n_base] - rgb.cpu())[both].abs().mean())
    ours_ips, base_ips = args.batch / min(t_ours), 1.0 / min(t_base)
    print(f"{args.batch} two-hand scenes ({source}: {nv} vertices, {nf} faces per hand) at {args.size}x{args.size} on {dev}")
    print(f"ours ({ref.backend}, batched): {ours_ips:8.2f} img/s   (best of {len(t_ours)}: {min(t_ours) * 1e3:.1f} ms)")
    print(f"PyTorch3D per-image loop:      {base_ips:8.2f} img/s   (best of {len(t_base)} passes over {n_base} scenes: {min(t_base):.2f} s per image)")
    print(f"ratio {ours_ips / base_ips:.1f}x; alpha IoU between the two {iou:.4f}, mean |rgb diff| on common pixels {rgb_err:.3f}")
    assert iou > 0.98, f"the two renderers disagree on the scenes (alpha IoU {iou:.4f})"
    print(json.dumps({"bench": "render", "device": str(dev), "threads": torch.get_num_threads(), "quick": args.quick,
                      "batch": args.batch, "image_size": args.size, "mesh": source, "verts_per_hand": nv, "faces_per_hand": nf,
                      "ours_backend": ref.backend, "ours_img_per_s": round(ours_ips, 2),
                      "pytorch3d_loop_img_per_s": round(base_ips, 3), "ratio": round(ours_ips / base_ips, 2),
                      "alpha_iou": round(iou, 4), "rgb_mean_abs_diff": round(rgb_err, 4)}))


if __name__ == "__main__":
    main()
