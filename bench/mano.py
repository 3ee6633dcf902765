"""Forward time of intaghand's ManoLayer against smplx's MANO on the same MANO-format pkl (CPU).

    .venv/bin/python bench/mano.py [--quick] [--batches 1 64 1024] [--threads N]

Both run on one CPU thread by default: with several threads on a machine shared with other jobs the timings
swing by 2-10x from run to run; `--threads 0` keeps torch's default.

Both layers read one temporary MANO_RIGHT.pkl written from `random_mano_model` (plain numpy arrays and
a scipy sparse J_regressor, so smplx's plain pickle.load can read it) and get the same axis-angle
pose (B×48, non-flat hand mean), shape and translation. Outputs are compared (vertices must agree),
then the two forwards are timed alternately under `torch.no_grad()` (minimum over repeats). The last line printed is one
JSON object; `speedup` = smplx time / our time at the largest batch.
"""
import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from _timing import time_pair




def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short timings (under a minute)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: stable numbers on a shared machine; 0 = torch's default)")
    args = ap.parse_args(argv)
    if args.threads: torch.set_num_threads(args.threads)
    import smplx
    from intaghand.fixtures import random_mano_model
    from intaghand.mano import ManoLayer, save_mano_pkl

    tmp = Path(tempfile.mkdtemp())
    pkl = save_mano_pkl(random_mano_model(0), tmp / "MANO_RIGHT.pkl")
    ours = ManoLayer(pkl, "right", use_pca=False, flat_hand_mean=False)
    theirs = smplx.MANO(str(pkl), is_rhand=True, use_pca=False, flat_hand_mean=False, num_betas=10,
                        batch_size=1, create_global_orient=False, create_hand_pose=False, create_betas=False,
                        create_transl=False)
    min_time = 0.5 if args.quick else 3.0
    g = torch.Generator().manual_seed(0)
    results = {}
    for B in args.batches:
        pose = 0.4 * torch.randn(B, 48, generator=g)
        betas = torch.randn(B, 10, generator=g)
        trans = 0.1 * torch.randn(B, 3, generator=g)
        with torch.no_grad():
            v_ours, _ = ours(pose, betas, trans)
            v_theirs = theirs(betas=betas, global_orient=pose[:, :3], hand_pose=pose[:, 3:], transl=trans).vertices
            err = (v_ours - v_theirs).abs().max().item()
            assert err < 1e-4, f"outputs differ by {err} m at batch {B}"
            t_ours, t_theirs, reps = time_pair(
                lambda: ours(pose, betas, trans),
                lambda: theirs(betas=betas, global_orient=pose[:, :3], hand_pose=pose[:, 3:], transl=trans), min_time)
        results[str(B)] = {"ours_ms": round(t_ours * 1e3, 3), "smplx_ms": round(t_theirs * 1e3, 3),
                           "ratio": round(t_theirs / t_ours, 2), "reps": reps, "max_vertex_diff_m": float(f"{err:.2e}")}
        print(f"batch {B:5d}: ours {t_ours * 1e3:8.2f} ms   smplx {t_theirs * 1e3:8.2f} ms   "
              f"smplx/ours {t_theirs / t_ours:5.2f}   max |dv| {err:.1e} m", flush=True)
    last = str(max(args.batches))
    print(json.dumps({"bench": "mano", "device": "cpu", "threads": torch.get_num_threads(), "quick": args.quick,
                      "baseline": f"smplx {smplx.__version__ if hasattr(smplx, '__version__') else '0.1.28'} MANO",
                      "batches": results, "speedup_batch": int(last), "speedup": results[last]["ratio"]}))


if __name__ == "__main__":
    main()
