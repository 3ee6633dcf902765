"""Pretrain the ResNet encoder on the training data by direct regression, to start `intaghand train` from it.

    .venv/bin/python tools/pretrain_encoder.py --data_path DIR --out misc/model/encoder_pretrain.pth \\
        [--preset embedded] [--steps 2000] [--batch 16] [--lr 1e-3] [--n 0]

The original starts its encoder from ImageNet weights; there are none on an offline machine, and from scratch the
full network stays at the data's mean mesh for thousands of CPU steps (see the README's model card). This is the
stand-in: a plain ResNet (the preset's `MODEL.ENCODER_TYPE` at `MODEL.IMG_SIZE`), global average pooling and one
linear layer regress every label the trainer uses for the meshes (both hands' root-relative 3D vertices and their 2D
vertices), each standardised by its mean and standard deviation over the training split, with an L1 loss. Only the
ResNet is kept: its state dict (torchvision layout, the classifier untouched) is what `MODEL.ENCODER_PRETRAIN_PATH`
loads. Prints one JSON line per evaluation (training and validation error in mm, 3D vertices, against the mean).
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def load_split(root, split, cfg, n=0):
    "(images B×3×S×S, targets B×D) of a processed split, without augmentation."
    from intaghand.dataset import HandDataset, collate_samples
    ds = HandDataset(root, split, cfg=cfg, train=False)
    n = len(ds) if not n else min(n, len(ds))
    S = float(cfg.MODEL.IMG_SIZE)
    X, Y = [], []
    for s in range(0, n, 200):
        b = collate_samples([ds[i] for i in range(s, min(n, s + 200))])
        X.append(b.img)
        Y.append(torch.cat([b.left.verts3d.flatten(1), b.right.verts3d.flatten(1),
                            b.left.verts2d.flatten(1) / S * 2 - 1, b.right.verts2d.flatten(1) / S * 2 - 1], 1))
    return torch.cat(X), torch.cat(Y)


def vertex_error_mm(pred, y, n3d):
    "Mean 3D vertex distance (label units → mm: the labels are bone-normalised metres) over the 3D part."
    return float((pred[:, :n3d] - y[:, :n3d]).reshape(len(y), -1, 3).norm(dim=-1).mean()) * 1000


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_path", required=True, help="processed data with train (and val) splits")
    p.add_argument("--out", required=True, help="where to write the ResNet state dict (.pth)")
    p.add_argument("--preset", default="embedded")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--n", type=int, default=0, help="use only the first N training samples (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval_every", type=int, default=250)
    a = p.parse_args(argv)
    from intaghand.config import get_config
    from intaghand.io import atomic_torch_save
    from intaghand.model import RESNETS
    if a.steps < 1 or a.batch < 1: p.error("--steps and --batch must be ≥ 1")
    cfg = get_config(preset=a.preset)
    torch.manual_seed(a.seed)
    Xtr, Ytr = load_split(a.data_path, "train", cfg, a.n)
    has_val = (Path(a.data_path) / "val").is_dir()
    Xva, Yva = load_split(a.data_path, "val", cfg) if has_val else (Xtr[:200], Ytr[:200])
    n3d = 2 * 778 * 3
    mu, sd = Ytr.mean(0), Ytr.std(0).clamp_min(1e-4)
    net = RESNETS[cfg.MODEL.ENCODER_TYPE](weights=None)
    width = net.fc.in_features
    head = torch.nn.Linear(width, Ytr.shape[1])
    torch.nn.init.zeros_(head.weight); torch.nn.init.zeros_(head.bias)
    def features(x):
        r = net
        x = r.maxpool(r.relu(r.bn1(r.conv1(x))))
        return torch.flatten(r.avgpool(r.layer4(r.layer3(r.layer2(r.layer1(x))))), 1)
    params = list(net.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, a.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=a.steps, pct_start=0.05)
    g = torch.Generator().manual_seed(a.seed)
    t0 = time.time()
    mean_err = vertex_error_mm(mu.expand_as(Yva), Yva, n3d)
    for step in range(1, a.steps + 1):
        net.train()
        i = torch.randint(0, len(Xtr), (a.batch,), generator=g)
        loss = F.l1_loss(head(features(Xtr[i])), (Ytr[i] - mu) / sd)
        opt.zero_grad(); loss.backward(); opt.step(); sched.step()
        if not torch.isfinite(loss): sys.exit(f"pretraining diverged at step {step} (loss {float(loss)}); lower --lr")
        if step % a.eval_every == 0 or step == a.steps:
            net.eval()
            with torch.no_grad():
                va = torch.cat([head(features(Xva[k:k + 100])) for k in range(0, len(Xva), 100)]) * sd + mu
                tr = head(features(Xtr[:200])) * sd + mu
            print(json.dumps({"step": step, "seconds": round(time.time() - t0, 1), "loss": round(float(loss.detach()), 4),
                              "train_mm": round(vertex_error_mm(tr, Ytr[:200], n3d), 2),
                              "val_mm": round(vertex_error_mm(va, Yva, n3d), 2), "val_mean_mm": round(mean_err, 2)}), flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(net.state_dict(), a.out)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
