"""CPU inference speed of the IntagHand network, plain eager vs the optimised path, with parameter count and FLOPs.

    .venv/bin/python bench/model.py [--quick] [--threads N]

Measures images/s of the default model (ResNet-50, 256², official graph sizes 63/126/252 from synthetic
assets) at batch 1 and 8 and of the `small` preset, for a ladder of output-preserving optimisations applied
one after the other:
  eager      torch.no_grad, explicit attention (the original's matmul/softmax), every mid-model map computed
  +inference torch.inference_mode
  +sdpa      fused F.scaled_dot_product_attention (no attention matrices materialised)
  +skip      skip the mid model's 64×64 map that the decoder never reads (eval only)
  +bnfold    BatchNorm folded into the preceding convolutions of the ResNet backbone
  +cl        channels-last memory format (= intaghand.model.optimize_for_inference)
  +trace     the above traced to TorchScript per input shape and frozen (`intaghand.engines.TracedNetwork`: the
             exact path of intaghand.inference.Reconstructor on CUDA and where ONNX Runtime is missing)
  +onnx      the +cl network exported to ONNX and run by ONNX Runtime's CPU provider
             (`intaghand.engines.OnnxNetwork`: the exact path on a CPU)
  autocast   the +cl network under bfloat16 autocast (where the CPU has native bfloat16: AMX / AVX-512-BF16)
  fast       the fast path (`intaghand.engines.ReducedNetwork`): the image encoder in bfloat16, the graph decoder
             in float32, traced; on CPUs without native bfloat16 the fast path is the exact path and is not timed
             again
Every variant's outputs are compared with the eager ones (max difference relative to the output's size).
Variants are timed in interleaved rounds (best of the rounds per variant, median shown too), so load from other
processes hits all alike.
The last printed line is one JSON object: `images_per_s` (default model, batch 1, exact path: +onnx, or +trace
without ONNX Runtime), `speedup` (exact path over plain eager, same run), `fast_speedup` (fast path over plain
eager), `trace_speedup` (the TorchScript engine over plain eager) and `hardware_fraction` (the exact path's FLOP
rate over the CPU's float32 peak, `--peak_gflops`, default: cores × threads-used × 2.0 GHz × 32 FLOP/cycle).
Where the fast path differs from the exact one, `fast_accuracy` is its cost on the embedded checkpoint over the
shipped synthetic samples (`--accuracy_data`, split test): the mean and largest vertex distance from the exact path
(mm: the network's output is in metres at a mean hand size) and the MPJPE of both (original protocol).
"""
import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from intaghand.config import get_config  # noqa: E402
from intaghand.engines import OnnxNetwork, TracedNetwork, onnxruntime_available, rel_diff as _rel  # noqa: E402
from intaghand.fixtures import make_synthetic_graph_assets  # noqa: E402
from intaghand.model import _fuse_resnet_bn, build_model  # noqa: E402
from intaghand.engines import ReducedNetwork  # noqa: E402
from intaghand.tensors import cpu_has_bf16  # noqa: E402


def variants(model):
    "name -> (model, run function, channels_last input), each step adding one optimisation to the previous."
    def no_grad(m, x):
        with torch.no_grad(): return m(x)

    def inference(m, x):
        with torch.inference_mode(): return m(x)

    eager = copy.deepcopy(model).eval().set_fast_attention(False)
    eager.mid_model.skip_unused = False
    sdpa = copy.deepcopy(eager).set_fast_attention(True)
    skip = copy.deepcopy(sdpa); skip.mid_model.skip_unused = True
    fold = copy.deepcopy(skip); _fuse_resnet_bn(fold.encoder.resnet)
    cl = copy.deepcopy(fold).to(memory_format=torch.channels_last)
    out = {"eager": (eager, no_grad, False), "+inference": (eager, inference, False), "+sdpa": (sdpa, inference, False),
           "+skip": (skip, inference, False), "+bnfold": (fold, inference, False), "+cl": (cl, inference, True),
           "+trace": (TracedNetwork(sdpa, build_after=0), inference, True)}    # engines build in the warm-up
    if onnxruntime_available(): out["+onnx"] = (OnnxNetwork(sdpa, build_after=0), inference, True)
    if cpu_has_bf16():
        def bf16(m, x):
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16): return m(x)
        out["autocast"] = (cl, bf16, True)
        out["fast"] = (ReducedNetwork(sdpa, build_after=0, dtype=torch.bfloat16), inference, True)
    return out


def fast_accuracy(data_path: Path, split: str = "test") -> dict:
    "The fast path against the exact one on the embedded checkpoint: vertex distance (mm) and MPJPE of both."
    from intaghand.evaluate import evaluate
    from intaghand.inference import Reconstructor
    images = sorted((data_path / split / "img").glob("*.jpg"), key=lambda f: int(f.stem))
    verts, mpjpe = {}, {}
    rec = Reconstructor.embedded(device="cpu", build_after=0)           # loaded once, run on both paths
    for p in ("exact", "fast"):
        rec.precision = p
        o = rec(images, space="network")
        verts[p] = torch.cat([o.left.verts3d, o.right.verts3d], 1)
        mpjpe[p] = evaluate(rec, data_path, split, progress=False, precision=p).summary["protocols"]["original"]["mpjpe"]["all"]
    dist = (verts["fast"] - verts["exact"]).norm(dim=-1) * 1000
    return {"data": f"{data_path.name}/{split}", "samples": len(images), "vertex_mm_mean": round(float(dist.mean()), 4),
            "vertex_mm_max": round(float(dist.max()), 4), "mpjpe_exact": round(mpjpe["exact"], 3),
            "mpjpe_fast": round(mpjpe["fast"], 3), "mpjpe_change": round(mpjpe["fast"] - mpjpe["exact"], 3)}


def outputs(out):
    return {"verts3d": torch.cat([out.left.verts3d, out.right.verts3d]), "verts2d": torch.cat([out.left.verts2d, out.right.verts2d]),
            "hms": out.hms, "mask": out.mask, "dense": out.dense}


def rel_diff(a, b):
    "Largest |a − b| over all outputs, relative to each output's largest magnitude."
    return max(_rel(a[k], b[k]) for k in a)


def bench(vs: dict, batch: int, img_size: int, rounds: int, warmup: int = 1) -> dict:
    x = torch.randn(batch, 3, img_size, img_size, generator=torch.Generator().manual_seed(0))
    xcl = x.contiguous(memory_format=torch.channels_last)
    ref, res = None, {}
    for name, (m, run, cl) in vs.items():
        for _ in range(warmup): out = run(m, xcl if cl else x)
        o = outputs(out)
        ref = ref or o
        res[name] = {"times": [], "rel_diff": rel_diff(o, ref)}
    for _ in range(rounds):
        for name, (m, run, cl) in vs.items():
            inp = xcl if cl else x
            t0 = time.perf_counter(); run(m, inp); res[name]["times"].append(time.perf_counter() - t0)
    for name, r in res.items():
        times = r.pop("times")
        r["s_per_batch"] = min(times)            # least disturbed by other processes (as timeit advises)
        r["s_median"] = statistics.median(times)
        r["images_per_s"] = batch / r["s_per_batch"]
    return res


def flops(model, img_size: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode
    m = copy.deepcopy(model).eval().set_fast_attention(False)     # explicit attention: every matmul is counted
    m.mid_model.skip_unused = False
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        m(torch.zeros(1, 3, img_size, img_size))
    return counter.get_total_flops()


def show(title, res, base="eager"):
    print(f"\n{title}")
    for name, r in res.items():
        print(f"  {name:<11} {r['images_per_s']:7.2f} img/s  {r['s_per_batch'] * 1000:8.1f} ms/batch "
              f"(median {r['s_median'] * 1000:8.1f})  "
              f"x{r['images_per_s'] / res[base]['images_per_s']:.2f}  max rel diff {r['rel_diff']:.1e}")


def cpu_peak_gflops(threads: int) -> float:
    """Float32 peak of `threads` cores from /proc/cpuinfo: clock × FLOP per cycle (two FMA units: 64 with AVX-512,
    32 with AVX2+FMA, else 16). An estimate: turbo and AVX-512 clock offsets move it both ways."""
    try: info = Path("/proc/cpuinfo").read_text()
    except OSError: info = ""
    mhz = [float(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu MHz")]
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "").split()
    per_cycle = 64 if "avx512f" in flags else 32 if {"avx2", "fma"} <= set(flags) else 16
    return round(threads * (max(mhz) if mhz else 2000.0) / 1000 * per_cycle, 1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds (under a minute)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--peak_gflops", type=float, default=None,
                    help="the CPU's float32 peak for the threads used (default: estimated from /proc/cpuinfo)")
    ap.add_argument("--accuracy_data", type=Path, default=Path(__file__).resolve().parents[1] / "data" / "synthetic_samples",
                    help="processed synthetic data whose test split measures the fast path's accuracy cost")
    args = ap.parse_args(argv)
    if args.threads: torch.set_num_threads(args.threads)
    peak = args.peak_gflops or cpu_peak_gflops(torch.get_num_threads())
    rounds1, rounds8 = (3, 1) if args.quick else (9, 3)
    t_start = time.time()
    torch.manual_seed(0)
    assets = make_synthetic_graph_assets()           # official graph sizes, no asset files needed
    cfg, small_cfg = get_config(), get_config(preset="small")
    model = build_model(cfg, graph_assets=assets).eval()
    small = build_model(small_cfg, graph_assets=assets).eval()
    params = {"default": sum(p.numel() for p in model.parameters()), "small": sum(p.numel() for p in small.parameters())}
    fl = {"default": flops(model, cfg.MODEL.IMG_SIZE), "small": flops(small, small_cfg.MODEL.IMG_SIZE)}
    print(f"threads {torch.get_num_threads()}, torch {torch.__version__}, load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs (other processes slow every variant alike; compare ratios)")
    print(f"parameters: default {params['default']:,}, small {params['small']:,}")
    print(f"FLOPs per image: default {fl['default'] / 1e9:.2f} G, small {fl['small'] / 1e9:.3f} G")

    vs = variants(model)
    d1 = bench(vs, 1, cfg.MODEL.IMG_SIZE, rounds1)
    show("default model (resnet50, 256²), batch 1", d1)
    exact = "+onnx" if "+onnx" in vs else "+trace"
    best = "fast" if "fast" in vs else exact
    keep = ("eager", "+trace", exact, "autocast", best)
    pair = {k: vs[k] for k in dict.fromkeys(keep) if k in vs}
    d8 = bench(pair, 8, cfg.MODEL.IMG_SIZE, rounds8)
    show("default model, batch 8", d8)
    svs = variants(small)
    spair = {k: svs[k] for k in dict.fromkeys(keep) if k in svs}
    s1 = bench(spair, 1, small_cfg.MODEL.IMG_SIZE, rounds1 * 2)
    show(f"small preset ({small_cfg.MODEL.ENCODER_TYPE}, {small_cfg.MODEL.IMG_SIZE}²), batch 1", s1)
    s8 = bench(spair, 8, small_cfg.MODEL.IMG_SIZE, rounds8 * 2)
    show("small preset, batch 8", s8)

    r = lambda x: round(x, 3)
    result = {
        "images_per_s": r(d1[exact]["images_per_s"]),
        "speedup": r(d1[exact]["images_per_s"] / d1["eager"]["images_per_s"]),
        "fast_speedup": r(d1[best]["images_per_s"] / d1["eager"]["images_per_s"]),
        "trace_speedup": r(d1["+trace"]["images_per_s"] / d1["eager"]["images_per_s"]),
        "exact_path": {"+onnx": "onnxruntime", "+trace": "torchscript"}[exact],
        "fast_path": "bfloat16 encoder, float32 decoder (traced)" if best == "fast" else "the exact path (this CPU has no native bfloat16)",
        "autocast_speedup": r(d1["autocast"]["images_per_s"] / d1["eager"]["images_per_s"]) if "autocast" in d1 else None,
        "hardware_fraction": r(fl["default"] * d1[exact]["images_per_s"] / (peak * 1e9)),
        "peak_gflops": peak,
        "baseline_images_per_s": r(d1["eager"]["images_per_s"]),
        "ladder_batch1": {k: r(v["images_per_s"]) for k, v in d1.items()},
        "max_rel_diff": float(f"{max(v['rel_diff'] for res in (d1, d8, s1, s8) for k, v in res.items() if k not in ('fast', 'autocast')):.2e}"),
        "fast_rel_diff": None if best != "fast" else float(f"{max(res['fast']['rel_diff'] for res in (d1, d8, s1, s8)):.2e}"),
        "fast_accuracy": fast_accuracy(args.accuracy_data) if best == "fast" else None,
        "fast_choice": None if best != "fast" else {f"{name} batch {key[0][0]}": choice for name, v in (("default", vs), ("small", svs))
                                                    for key, choice in v["fast"][0].choice.items()},
        **{name: {"images_per_s": r(res[exact]["images_per_s"]), "baseline": r(res["eager"]["images_per_s"]),
                  "speedup": r(res[exact]["images_per_s"] / res["eager"]["images_per_s"]),
                  "trace_speedup": r(res["+trace"]["images_per_s"] / res["eager"]["images_per_s"]),
                  "hardware_fraction": r(fl[name.split("_")[0]] * res[exact]["images_per_s"] / (peak * 1e9)),
                  "fast_speedup": r(res[best]["images_per_s"] / res["eager"]["images_per_s"])}
           for name, res in (("default_batch8", d8), ("small_batch1", s1), ("small_batch8", s8))},
        "params": params, "gflops_per_image": {k: r(v / 1e9) for k, v in fl.items()},
        "threads": torch.get_num_threads(), "load_avg_1min": round(os.getloadavg()[0], 2), "device": "cpu", "quick": args.quick, "wall_s": round(time.time() - t_start, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
