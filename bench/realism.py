"""How hand-like the synthetic images are, judged by the shipped offline hand detector (MediaPipe's palm and
landmark models, trained on real photographs): the share of images where it finds at least one hand and both.

    .venv/bin/python bench/realism.py [--quick] [--n N] [--seed S]

Main run: `SyntheticGenerator` as shipped (forearms on) on test samples of a seed no training set uses.
Baseline, same run and same scenes: forearms off (the hands end at MANO's open wrist, as in the first version).
"Both visible" restricts to images where each hand shows at least 40 % as many pixels as the other (the other
hand hides it less), the cases where a person would see two hands. The last line is JSON.
"""
import argparse
import json
import os
import sys


def detector_rates(det, images, masks) -> dict:
    "Share of images with ≥ 1 and with 2 detected hands, over all images and over those where both hands are visible."
    import numpy as np
    found = np.array([min(det(im).count, 2) for im in images])
    area = np.array([[(m[..., 2] > 127).sum(), (m[..., 1] > 127).sum()] for m in masks], np.float64)
    both_vis = area.min(1) >= 0.4 * area.max(1)
    rate = lambda sel, k: float((found[sel] >= k).mean()) if sel.any() else float("nan")
    every = np.ones(len(found), bool)
    return {"one_or_more": rate(every, 1), "both": rate(every, 2), "both_visible_n": int(both_vis.sum()),
            "both_visible_one_or_more": rate(both_vis, 1), "both_visible_both": rate(both_vis, 2)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    p.add_argument("--n", type=int, default=None, help="images (default 200, quick 32)")
    p.add_argument("--seed", type=int, default=9001, help="generator seed (not one used for training)")
    a = p.parse_args(argv)
    n = a.n or (32 if a.quick else 200)
    import torch
    torch.set_num_threads(1)
    from intaghand.detect import load_detector
    from intaghand.mano import mano_layers
    from intaghand.synthetic import SyntheticGenerator, default_v_color
    layers = mano_layers()
    v_color = default_v_color(None, layers)
    det = load_detector(threads=1)
    out = {}
    for name, arms in (("main", True), ("baseline", False)):
        gen = SyntheticGenerator(layers, v_color, 256, backend="fast", seed=a.seed, forearms=arms)
        images, masks = [], []
        for k in range(0, n, 8):
            for s in gen.make("test", list(range(k, min(n, k + 8)))): images.append(s["img"]); masks.append(s["mask"])
        out[name] = detector_rates(det, images, masks)
        r = out[name]
        print(f"{name} (forearms {'on' if arms else 'off'}): ≥1 hand {r['one_or_more']:.0%}, both {r['both']:.0%}; "
              f"both visible ({r['both_visible_n']} of {n}): ≥1 {r['both_visible_one_or_more']:.0%}, both {r['both_visible_both']:.0%}")
    m, b = out["main"], out["baseline"]
    print(json.dumps({"bench": "realism", "n": n, "seed": a.seed, "detector": det.name, "main": m, "baseline": b,
                      "ratio": round(m["one_or_more"] / max(b["one_or_more"], 1e-9), 2),
                      "load_average": round(os.getloadavg()[0], 2), "quick": a.quick}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
