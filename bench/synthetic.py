"""Synthetic data generator throughput: samples/s written to disk (all files of the processed layout).

    .venv/bin/python bench/synthetic.py [--quick] [--workers 2] [--n N]

Main run: `make_synthetic` with the fast CPU renderer, batches of 8, `--workers` processes.
Baseline, same run: the same samples made one at a time in one process with PyTorch3D's rasterizer
(what generation would cost without the fast renderer and batching). Also the CPU time of one sample
in this process, which gives the rate on idle cores when the machine is shared. The last line is JSON.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--n", type=int, default=None, help="samples in the main run (default 160, quick 32)")
    p.add_argument("--baseline_n", type=int, default=None, help="samples in the baseline (default 8, quick 2)")
    a = p.parse_args(argv)
    n = a.n or (32 if a.quick else 160)
    nb = a.baseline_n or (2 if a.quick else 8)
    nc = 16 if a.quick else 32
    import torch
    from intaghand.config import AssetNotFoundError
    from intaghand.fixtures import random_mano_layers
    from intaghand.mano import mano_layers
    from intaghand.synthetic import SyntheticGenerator, default_v_color, make_synthetic
    try: layers, model = mano_layers(), "config (embedded or MANO)"
    except AssetNotFoundError: layers, model = random_mano_layers(0), "random MANO-format fixture"
    v_color = default_v_color(None, layers)
    tmp = Path(tempfile.mkdtemp(prefix="bench_synth_"))
    try:
        # warm-up: start the worker pool machinery and import paths once (not timed)
        make_synthetic(tmp / "warm", 2 * a.workers, seed=1, splits=["train"], layers=layers, v_color=v_color,
                       workers=a.workers, progress=False)
        t = time.perf_counter()
        make_synthetic(tmp / "main", n, seed=0, splits=["train"], layers=layers, v_color=v_color, workers=a.workers,
                       batch=8, progress=False)
        main_s = time.perf_counter() - t
        # CPU cost of one sample (fast renderer, batch 8, writes included) in this process: what an idle core gives
        torch.set_num_threads(1)
        from intaghand.layout import write_sample
        fast = SyntheticGenerator(layers, v_color, 256, backend="fast", seed=0)
        fast.make("train", [0])
        c = time.process_time()
        for k in range(0, nc, 8):
            for s in fast.make("train", list(range(k, k + 8))):
                write_sample(tmp / "cpu", "train", s["idx"], s["img"], s["anno"], s["mask"], s["dense"], s["hms"])
        cpu_ms = (time.process_time() - c) / nc * 1000
        # baseline: one process, batch 1, PyTorch3D rasterizer
        gen = SyntheticGenerator(layers, v_color, 256, backend="pytorch3d", seed=0)
        gen.make("train", [0])
        t = time.perf_counter()
        for i in range(nb):
            s = gen.make("train", [i])[0]
            write_sample(tmp / "base", "train", i, s["img"], s["anno"], s["mask"], s["dense"], s["hms"])
        base_s = time.perf_counter() - t
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sps, base_sps = n / main_s, nb / base_s
    print(f"hand model: {model}; cpus: {os.cpu_count()}; torch threads per worker: 1")
    print(f"main: {n} samples in {main_s:.2f} s with {a.workers} workers (fast renderer, batch 8): {sps:.1f} samples/s")
    print(f"baseline: {nb} samples in {base_s:.2f} s, one process, batch 1, PyTorch3D rasterizer: {base_sps:.2f} samples/s")
    print(f"CPU time per sample (fast renderer, batch 8, files written): {cpu_ms:.0f} ms -> {a.workers} idle cores would "
          f"give about {a.workers * 1000 / cpu_ms:.0f} samples/s (load average now {os.getloadavg()[0]:.1f})")
    print(json.dumps({"bench": "synthetic", "samples_per_s": round(sps, 2), "baseline_samples_per_s": round(base_sps, 3),
                      "ratio": round(sps / base_sps, 2), "cpu_ms_per_sample": round(cpu_ms, 1),
                      "idle_estimate_samples_per_s": round(a.workers * 1000 / cpu_ms, 1),
                      "load_average": round(os.getloadavg()[0], 2), "workers": a.workers, "n": n, "quick": a.quick}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
