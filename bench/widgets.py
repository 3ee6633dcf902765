"""Explorer latency: python-side time from a slider change to the updated view, cached vs uncached.

    .venv/bin/python bench/widgets.py [--quick]

`slider_ms` is the median time of the attention explorer's vertex-slider callback (slice the cached
attention, re-colour the other hand's mesh, redraw the image-attention overlay, move the marker).
The baseline `uncached_ms` is the same update when the model has to run again for it (no cache),
measured in the same run; `ratio` = uncached / cached. Also: joint change in the model explorer,
level change (overview + selection) in the attention explorer, data-browser scroll (cached sample),
run-viewer smoothing. The last line is one JSON object.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from intaghand.analysis import AnalysisCache, demo_image, load_default_reconstructor  # noqa: E402
from intaghand.explore_attention import attention_explorer  # noqa: E402
from intaghand.explore_data import data_browser, make_demo_data  # noqa: E402
from intaghand.explore_model import model_explorer  # noqa: E402
from intaghand.explore_runs import run_viewer  # noqa: E402


def timed(fn, reps):
    out = []
    for i in range(reps):
        t0 = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    a = p.parse_args(argv)
    reps, reps_uncached = (10, 2) if a.quick else (40, 4)
    import torch
    torch.set_num_threads(max(1, torch.get_num_threads()))

    t0 = time.perf_counter()
    rec = load_default_reconstructor()
    img = demo_image()
    cache = AnalysisCache(rec)
    ax = attention_explorer(rec, {"demo": img}, cache)
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    verts = rng.integers(0, 778, reps + 1)

    def slider(i): ax.vertex.value = int(verts[i] if verts[i] != ax.vertex.value else (verts[i] + 1) % 778)
    slider(reps)                                          # warm-up
    cached = timed(slider, reps)

    def uncached(i):                                      # what the view costs when the model must run for it
        cache.get(img, use_cache=False)
        slider(i)
    unc = timed(uncached, reps_uncached)

    levels = [o[1] for o in ax.level.options]
    level_ms = timed(lambda i: setattr(ax.level, "value", levels[i % len(levels)] if levels[i % len(levels)] != ax.level.value
                                       else levels[(i + 1) % len(levels)]), max(reps // 4, 3))
    heads = list(ax.head.options)
    head_ms = timed(lambda i: setattr(ax.head, "value", heads[(heads.index(ax.head.value) + 1) % len(heads)]), max(reps // 4, 3))

    mx = model_explorer(rec, {"demo": img}, cache)
    joint_ms = timed(lambda i: setattr(mx.joint, "value", (mx.joint.value + 1) % 42), reps)

    db = data_browser(make_demo_data(n=3))
    for i in range(3): db.index.value = i                 # load each sample once
    data_ms = timed(lambda i: setattr(db.index, "value", (db.index.value + 1) % 3), reps)

    rv = run_viewer()
    smooth_ms = timed(lambda i: setattr(rv.smoothing, "value", round(0.1 + 0.8 * ((i * 7) % 10) / 10, 2)
                                         if round(0.1 + 0.8 * ((i * 7) % 10) / 10, 2) != rv.smoothing.value else 0.0), reps)

    med = statistics.median
    res = {
        "model": rec.source, "img_size": rec.img_size, "levels": ax.analysis.num_levels,
        "slider_ms": round(med(cached), 2), "slider_p90_ms": round(float(np.percentile(cached, 90)), 2),
        "uncached_ms": round(med(unc), 1), "ratio": round(med(unc) / med(cached), 1),
        "level_ms": round(med(level_ms), 2), "head_ms": round(med(head_ms), 2), "joint_ms": round(med(joint_ms), 2),
        "data_slider_ms": round(med(data_ms), 2), "run_smoothing_ms": round(med(smooth_ms), 2),
        "model_run_s": round(ax.analysis.seconds, 2), "build_s": round(build_s, 1),
        "torch_threads": torch.get_num_threads(), "reps": reps,
    }
    print(f"attention vertex slider: {res['slider_ms']} ms median (p90 {res['slider_p90_ms']} ms) with the cache, "
          f"{res['uncached_ms']} ms re-running the model: {res['ratio']}x")
    print(f"level {res['level_ms']} ms, head {res['head_ms']} ms, joint {res['joint_ms']} ms, "
          f"data scroll {res['data_slider_ms']} ms, run smoothing {res['run_smoothing_ms']} ms")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
