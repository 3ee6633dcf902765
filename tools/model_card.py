"""Figures for the README's model card of a checkpoint, on processed test data it never saw.

    .venv/bin/python tools/model_card.py --checkpoint misc/model/embedded_small.pth --data_path DIR [--n 200] [--out DIR]

Prints one JSON object: MPJPE / MPVPE (original protocol, mm) of the model and of the constant mean-hand baseline
(both from `intaghand.evaluate`), mesh quality (predicted edge lengths against the ground truth's, normal consistency
of neighbouring faces, predicted vs GT), and the silhouette IoU of the prediction rendered with its own cameras
against the GT meshes rendered with their fitted weak-perspective cameras. With --out, also a picture grid.

Two figures say whether the model looks at the image at all (a model that predicts one mesh for every input can
still beat the mean-hand baseline, by predicting the data's mean):
- `best_constant_mpjpe_all`: MPJPE of the best constant prediction in hindsight, the test set's own mean
  root-aligned GT mesh for every sample (an oracle no constant model can beat);
- `image_dependence`: how much the predicted root-relative vertices vary between test images, as a share of how
  much the ground truth varies (mean over vertex coordinates of their standard deviations; 0 = the same mesh for
  every image).
"""
import argparse
import json
import sys

import numpy as np
import torch


def face_normals(v: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    "B×F×3 unit normals of B×V×3 meshes (from the losses' face edges)."
    from intaghand.losses import face_edges
    e = face_edges(v, faces)
    return torch.nn.functional.normalize(torch.linalg.cross(e[:, :, 0], e[:, :, 1], dim=-1), dim=-1)


def face_pairs(faces: torch.Tensor) -> torch.Tensor:
    "P×2 indices of faces sharing an edge."
    seen, pairs = {}, []
    for fi, f in enumerate(faces.tolist()):
        for a, b in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0])):
            k = (min(a, b), max(a, b))
            if k in seen: pairs.append((seen[k], fi))
            else: seen[k] = fi
    return torch.tensor(pairs)


def normal_consistency(v, faces, pairs) -> torch.Tensor:
    "Per mesh: mean cosine between the normals of neighbouring faces (1 = flat, a smooth hand ≈ 0.9, noise ≈ 0)."
    n = face_normals(v, faces)
    return (n[:, pairs[:, 0]] * n[:, pairs[:, 1]]).sum(-1).mean(1)


def edge_ratio(v, g, faces) -> torch.Tensor:
    "B×3F predicted / GT edge lengths."
    from intaghand.losses import face_edges
    e = lambda x: torch.linalg.norm(face_edges(x, faces), dim=-1).flatten(1)
    return e(v) / e(g).clamp_min(1e-9)


def root_of(v: torch.Tensor, J: torch.Tensor) -> torch.Tensor:
    "B×1×3 root joint (joint 9, the protocol's root) of B×V×3 meshes."
    return torch.matmul(J.to(v), v)[:, 9:10]


def best_constant_mpjpe(ds, n, layers) -> float:
    "MPJPE (mm, original protocol, mean of both hands) of predicting the test set's mean root-aligned GT mesh everywhere."
    from intaghand.dataset import EvalSamples
    from intaghand.protocol import sample_errors
    items = EvalSamples(ds, limit=n)
    gts = [items[i][1] for i in range(len(items))]                  # each sample read once, both hands
    errs = []
    for h in ("left", "right"):
        J = layers[h].joint_regressor.float()
        gt = torch.stack([g[h] for g in gts]).float()
        const = (gt - root_of(gt, J)).mean(0, keepdim=True).expand_as(gt)
        errs.append(float(sample_errors(const, gt, J)[0].mean()))
    return float(np.mean(errs))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data_path", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--out", default=None, help="folder for card.json and pictures.png")
    a = p.parse_args(argv)
    from pathlib import Path
    from intaghand.dataset import HandDataset, collate_samples
    from intaghand.evaluate import evaluate, load_for_eval
    from intaghand.mano import mano_layers
    from intaghand.mano import HANDS
    from intaghand.render import HandRenderer, WeakPerspectiveCamera
    from intaghand.head_init import fit_weak_perspective
    model, cfg = load_for_eval(a.checkpoint)
    layers = mano_layers(cfg)
    ev = evaluate(model, a.data_path, a.split, cfg=cfg, layers=layers, progress=False, max_samples=a.n,
                  out=Path(a.out) / "eval" if a.out else None)
    ds = HandDataset(a.data_path, a.split, cfg=cfg, mano_layers=layers, train=False)
    n = min(a.n, len(ds))
    faces = {h: layers[h].faces.long() for h in HANDS}
    pairs = {h: face_pairs(faces[h]) for h in HANDS}
    S, R = int(cfg.MODEL.IMG_SIZE), 256
    renderer = HandRenderer("fast")
    nc_p, nc_g, ratios, ious, shown = [], [], [], [], []
    rooted = {h: {"pred": [], "gt": []} for h in HANDS}          # root-relative (joint 9) meshes, for the spreads
    for k in range(0, n, 16):
        b = collate_samples([ds[i] for i in range(k, min(n, k + 16))])
        with torch.no_grad(): o = model(b.img)
        for h in HANDS:
            pv, gv = getattr(o, h).verts3d.float(), getattr(b, h).verts3d.float()
            nc_p.append(normal_consistency(pv, faces[h], pairs[h])); nc_g.append(normal_consistency(gv, faces[h], pairs[h]))
            ratios.append(edge_ratio(pv, gv, faces[h]).flatten())
            for kind, v in (("pred", pv), ("gt", gv)): rooted[h][kind].append(v - root_of(v, layers[h].joint_regressor))
        cam = lambda s, t: WeakPerspectiveCamera(s.float().clamp_min(1e-6), t.float(), R)   # a non-positive scale draws a dot: IoU ≈ 0
        pred = renderer(o.left.verts3d.float(), o.right.verts3d.float(), faces["right"], cam(o.left.scale, o.left.trans2d),
                        cam(o.right.scale, o.right.trans2d), faces_left=faces["left"], modes=("mask", "shaded"))
        gl = b.left.verts3d.float(); gr = b.right.verts3d.float() + b.root_rel.float()[:, None]
        sl, tl = fit_weak_perspective(gl, b.left.verts2d.float(), S); sr, tr = fit_weak_perspective(gr, b.right.verts2d.float(), S)
        gt = renderer(gl, gr, faces["right"], cam(sl, tl), cam(sr, tr), faces_left=faces["left"], modes=("mask",))
        pa, ga = pred.alpha > 0, gt.alpha > 0
        ious.append(((pa & ga).sum((1, 2)) / (pa | ga).sum((1, 2)).clamp_min(1)).float())
        if len(shown) < 8:
            for i in range(min(8 - len(shown), pa.shape[0])):
                img = torch.nn.functional.interpolate(b.ori_img[i:i + 1].float(), size=(R, R), mode="bilinear")[0]
                rgb = img.permute(1, 2, 0).numpy()[..., ::-1]
                ov = pred.overlay(torch.from_numpy(np.ascontiguousarray(rgb)).float()[None].expand(pa.shape[0], -1, -1, -1), opacity=0.6)[i]
                shown.append((rgb, ov.numpy(), ga[i].numpy()))
    r = torch.cat(ratios); sym = torch.maximum(r, 1 / r.clamp_min(1e-9))
    spread = lambda xs: torch.cat(xs).std(0).mean()
    dependence = float(np.mean([float(spread(rooted[h]["pred"]) / spread(rooted[h]["gt"])) for h in HANDS]))
    best_const = best_constant_mpjpe(ds, n, layers)
    o = ev.summary["protocols"]["original"]; bo = ev.summary["baseline"]["protocols"]["original"]
    card = {"checkpoint": str(a.checkpoint), "data_path": str(a.data_path), "split": a.split, "n": n,
            "mpjpe_all": o["mpjpe"]["all"], "mpvpe_all": o["mpvpe"]["all"], "mpjpe_left": o["mpjpe"]["left"], "mpjpe_right": o["mpjpe"]["right"],
            "baseline_mpjpe_all": bo["mpjpe"]["all"], "baseline_mpvpe_all": bo["mpvpe"]["all"],
            "best_constant_mpjpe_all": best_const, "image_dependence": dependence,
            "edge_ratio_within_2x": float((sym <= 2).float().mean()), "edge_ratio_p99": float(sym.quantile(0.99)),
            "normal_consistency_pred": float(torch.cat(nc_p).mean()), "normal_consistency_gt": float(torch.cat(nc_g).mean()),
            "silhouette_iou": float(torch.cat(ious).mean())}
    if a.out:
        import matplotlib; matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
        fig, axs = plt.subplots(3, len(shown), figsize=(2 * len(shown), 6.2))
        for c, (rgb, ov, g) in enumerate(shown):
            axs[0, c].imshow(rgb.clip(0, 1)); axs[1, c].imshow(ov.clip(0, 1)); axs[2, c].imshow(g, cmap="gray")
        for ax, t in zip(axs[:, 0], ("input", "prediction", "GT silhouette")): ax.set_ylabel(t)
        for ax in axs.flat: ax.set_xticks([]); ax.set_yticks([])
        fig.tight_layout(); fig.savefig(out / "pictures.png", dpi=80)
        (out / "card.json").write_text(json.dumps(card, indent=1))
    print(json.dumps(card))
    return 0


if __name__ == "__main__":
    sys.exit(main())
