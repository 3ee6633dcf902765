"""End-to-end images per second of `intaghand demo` on a folder, without and with the hand detector, and the split.

    .venv/bin/python bench/demo.py [--quick] [--n 24] [--device cpu|cuda] [--threads 1] [--checkpoint PATH]

Inputs: the shipped sample images (`data/demo`: 256² crops and 640×480 frames with the hands somewhere
in them) plus, beyond --quick, more frames made from them: each crop pasted at a random place and size
into a 640×480 or 1280×960 frame, as photos in the wild are. Model: the embedded checkpoint when it
exists, else an untrained small-preset one (`intaghand.demo.small_checkpoint`; same architecture and
cost as the embedded one). Everything the demo does per image is timed: read (load), hand detection
(detect), network (model), overlay + views rendering (render), and writing the overlay, views,
OBJ/PLY/GLB meshes and JSON (write).

The two runs (detector off, the baseline, and on) alternate over the rounds and the best round of
each counts. The last line printed is one JSON object: `images_per_s` (end to end, detector off),
`images_per_s_detect` (detector on) and `ratio` = detector on over off (below 1: what detection costs).

Video mode (always run; `--video_frames`): a 640×480 clip with a sample crop moving across it goes through
`intaghand.video.run_video` (read, detect, crop + network, overlay, write; no views, no mesh files), after an
untimed 3-frame warm-up that builds the inference engine: once with the detector on every frame and the z-buffer
overlay (the baseline, the demo's first video path), once detecting every 5th frame and tracking in between with
the z-buffer overlay (`fps_render_overlay`), once the same with the painted overlay (`fps_sequential`), and twice
with the stages overlapped as `intaghand demo --video/--live_demo` runs them by default (`intaghand.pipeline`: the
detector in its own thread, here 2 frames behind (`--detect_lag 2`; the command's default is 1), and the next frame reconstructed while this one is drawn and written),
detecting every 5th frame (`fps`) and every 10th, with landmark tracking on as in the command (on this clip the
detector finds one hand, so each detection is a full one). Then a second clip, the two-hand frame `wild_1.jpg` swaying
sideways, overlapped and detecting every 5th: once with the palm model at every detection (`fps_two_hands`, as
`--no-tracking`) and once tracking the hands with the landmark model alone between palm detections
(`fps_two_hands_tracked`). `fps_ratio` = `fps` / `fps_baseline`; `video_stage_ms` splits each frame into capture,
detect, model, smooth, overlay and write.
"""
import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("load", "detect", "model", "render", "write")


def make_inputs(folder: Path, n: int, seed: int = 0) -> list:
    "The sample images, then frames with a sample crop pasted in, up to `n` files in `folder`."
    folder.mkdir(parents=True, exist_ok=True)
    samples = sorted((ROOT / "data" / "demo").glob("*.jpg"))
    if not samples: raise SystemExit("bench/demo.py: no sample images in data/demo")
    files = []
    for p in samples[:n]:
        shutil.copy(p, folder / p.name); files.append(folder / p.name)
    crops = [cv2.imread(str(p)) for p in samples if p.name.startswith("crop_")]
    rng = np.random.default_rng(seed)
    k = 0
    while len(files) < n:
        H, W = ((480, 640), (960, 1280))[k % 2]
        frame = np.empty((H, W, 3), np.uint8); frame[:] = rng.integers(30, 220, 3)
        s = int(rng.uniform(0.4, 0.7) * H)
        x, y = int(rng.integers(0, W - s)), int(rng.integers(0, H - s))
        frame[y:y + s, x:x + s] = cv2.resize(crops[k % len(crops)], (s, s))
        p = folder / f"frame_{k:03d}.jpg"
        cv2.imwrite(str(p), frame, [cv2.IMWRITE_JPEG_QUALITY, 90]); files.append(p)
        k += 1
    return files


def make_clip(path: Path, n: int, seed: int = 0, two_hands: bool = False) -> Path:
    """A 640×480 MJPG clip of `n` frames: a sample crop (hands) at 300 px drifting across a plain background, or with
    `two_hands` the 640×480 sample `wild_1.jpg` (two hands the detector finds) swaying sideways, up to 60 px either way
    at up to 3 px a frame (a hand moving at a walking pace before a webcam)."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (640, 480))
    if two_hands:
        wild = cv2.imread(str(ROOT / "data" / "demo" / "wild_1.jpg"))
        for k in range(n):
            dx = 60 * np.sin(0.05 * k)
            w.write(cv2.warpAffine(wild, np.float32([[1, 0, dx], [0, 1, 0]]), (640, 480), borderMode=cv2.BORDER_REPLICATE))
        w.release()
        return path
    crop = cv2.resize(cv2.imread(str(sorted((ROOT / "data" / "demo").glob("crop_*.jpg"))[0])), (300, 300))
    bg = np.full((480, 640, 3), np.random.default_rng(seed).integers(40, 200, 3), np.uint8)
    for k in range(n):
        f = bg.copy(); x = 40 + int(260 * k / max(n - 1, 1)); f[90:390, x:x + 300] = crop
        w.write(f)
    w.release()
    return path


def run_video_once(demo, clip: Path, out: Path, detect_every: int, overlay: str = "paint", pipeline: bool = False,
                   detect_lag: int = 0, track_landmarks: bool = False) -> dict:
    from intaghand.video import run_video
    s = run_video(demo, clip, out, detect_every=detect_every, log=lambda *a: None, overlay=overlay, pipeline=pipeline,
                  detect_lag=detect_lag, track_landmarks=track_landmarks)
    if s["failed"]: raise SystemExit(f"bench/demo.py: {s['failed']} video frames failed")
    found = [f["detection"] for f in s["per_frame"]]
    return {"frames": s["frames"], "frames_per_s": s["frames_per_s"], "stage_ms": s["stage_ms"],
            "detector_calls": s["detector_calls"], "tracked_calls": s["tracked_calls"],
            "two_hands_share": round(sum(d == "two_hands" for d in found) / len(found), 3)}


def run_once(demo, inputs: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    s = demo.run_images(inputs, out, log=lambda *a: None)
    dt = time.perf_counter() - t0
    if s["failed"]: raise SystemExit(f"bench/demo.py: {s['failed']} images failed: {s['failures'][:2]}")
    split = {k: sum(r["timing_s"].get(k, 0.0) for r in s["results"]) / s["images"] for k in STAGES}
    det = s["detection"]
    return {"images": s["images"], "time_s": dt, "images_per_s": s["images"] / dt, "split_s_per_image": split,
            "detection": det}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the 6 sample images, one round (under a minute on 2 CPU cores)")
    ap.add_argument("--n", type=int, default=24, help="images per run (without --quick)")
    ap.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 1 with --quick, else 2)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: steady timings on a shared machine; 0: torch's choice)")
    ap.add_argument("--checkpoint", default=None, help="default: the embedded checkpoint if present, else an untrained small one")
    ap.add_argument("--video_frames", type=int, default=None, help="frames of the video mode (default 20 with --quick, else 90)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads); cv2.setNumThreads(a.threads)
    from intaghand.config import EMBEDDED_CHECKPOINT, PROJECT_ROOT
    from intaghand.demo import Demo, make_detector, small_checkpoint
    from intaghand.tensors import resolve_device
    from intaghand.inference import Reconstructor
    tmp = Path(tempfile.mkdtemp(prefix="intaghand_bench_demo_"))
    try:
        n = 6 if a.quick else a.n
        rounds = a.rounds or (1 if a.quick else 2)
        inputs = tmp / "in"
        files = make_inputs(inputs, n)
        ckpt = a.checkpoint or (PROJECT_ROOT / EMBEDDED_CHECKPOINT)
        which = "given" if a.checkpoint else "embedded"
        if not Path(ckpt).is_file():
            ckpt, which = small_checkpoint(tmp), "untrained small preset (embedded checkpoint not present)"
        rec = Reconstructor.from_checkpoint(ckpt, device=resolve_device(a.device))
        detector, det_status = make_detector(None, log=lambda *x: None)
        plain = Demo(rec, None, detector_status="disabled")
        with_det = Demo(rec, detector, detector_status=det_status) if detector is not None else None
        # warm-up: one image through each
        warm = tmp / "warm"; warm.mkdir(); shutil.copy(files[0], warm / files[0].name)
        run_once(plain, warm, tmp / "warm_out")
        if with_det: run_once(with_det, warm, tmp / "warm_out")
        best_off = best_on = None
        for _ in range(rounds):
            r = run_once(plain, inputs, tmp / "out_off")
            if best_off is None or r["images_per_s"] > best_off["images_per_s"]: best_off = r
            if with_det:
                r = run_once(with_det, inputs, tmp / "out_on")
                if best_on is None or r["images_per_s"] > best_on["images_per_s"]: best_on = r
        vid = with_det or plain
        rec.build_after = 0                             # as `intaghand demo --video` does: the engine from the first frame
        clip = make_clip(tmp / "clip.avi", a.video_frames or (20 if a.quick else 90))
        run_video_once(vid, make_clip(tmp / "warm.avi", 3), tmp / "v_warm.avi", 1)     # builds the engine, untimed
        base_v = run_video_once(vid, clip, tmp / "v_base.avi", 1, overlay="render")
        track_v = run_video_once(vid, clip, tmp / "v_track.avi", 5)
        render_v = run_video_once(vid, clip, tmp / "v_render.avi", 5, overlay="render")
        pipe_v = run_video_once(vid, clip, tmp / "v_pipe.avi", 5, pipeline=True, detect_lag=2, track_landmarks=True)
        pipe10_v = run_video_once(vid, clip, tmp / "v_pipe10.avi", 10, pipeline=True, detect_lag=2, track_landmarks=True)
        clip2 = make_clip(tmp / "clip2.avi", a.video_frames or (20 if a.quick else 90), two_hands=True)
        two_v = run_video_once(vid, clip2, tmp / "v_two.avi", 5, pipeline=True, detect_lag=2)
        two_tr_v = run_video_once(vid, clip2, tmp / "v_two_tr.avi", 5, pipeline=True, detect_lag=2, track_landmarks=True)
        fmt = lambda r: ", ".join(f"{k} {1000 * v:.0f} ms" for k, v in r["split_s_per_image"].items() if k != "detect" or v)
        print(f"{n} images ({', '.join(sorted({f'{cv2.imread(str(f)).shape[1]}x{cv2.imread(str(f)).shape[0]}' for f in files}))}), "
              f"checkpoint: {which}, device {rec.device}, {torch.get_num_threads()} threads")
        print(f"detector off: {best_off['images_per_s']:.2f} images/s ({fmt(best_off)})")
        if best_on:
            print(f"detector on:  {best_on['images_per_s']:.2f} images/s ({fmt(best_on)}); found {best_on['detection']}")
        else:
            print(f"detector on:  not measured (detector model files not installed: intaghand.detect.install_detector_models)")
        vfmt = lambda r: ", ".join(f"{k} {v:.1f} ms" for k, v in r["stage_ms"].items() if k != "total")
        print(f"video ({base_v['frames']} frames, 640x480, detector {'on' if with_det else 'off'}): "
              f"detect every frame, z-buffer overlay {base_v['frames_per_s']:.1f} FPS ({vfmt(base_v)}); "
              f"every 5th + tracking, z-buffer overlay {render_v['frames_per_s']:.1f} FPS; "
              f"every 5th + tracking, painted overlay {track_v['frames_per_s']:.1f} FPS ({vfmt(track_v)})")
        print(f"video, stages overlapped (detector in its own thread 2 frames behind, the next frame reconstructed while "
              f"this one is drawn and written): every 5th {pipe_v['frames_per_s']:.1f} FPS, every 10th "
              f"{pipe10_v['frames_per_s']:.1f} FPS ({vfmt(pipe_v)}; stages overlap, so they add up to more than a frame)")
        print(f"video of two hands the detector finds (wild_1.jpg swaying), overlapped, every 5th: palm model at every "
              f"detection {two_v['frames_per_s']:.1f} FPS (detect {two_v['stage_ms']['detect']:.1f} ms), landmark tracking "
              f"{two_tr_v['frames_per_s']:.1f} FPS (detect {two_tr_v['stage_ms']['detect']:.1f} ms; "
              f"{two_tr_v['tracked_calls']} of {two_tr_v['detector_calls']} detections tracked; both hands in "
              f"{100 * two_v['two_hands_share']:.0f} % / {100 * two_tr_v['two_hands_share']:.0f} % of the frames)")
        result = {"bench": "demo", "images": n, "rounds": rounds, "quick": a.quick, "device": str(rec.device),
                  "threads": torch.get_num_threads(), "checkpoint": which,
                  "images_per_s": round(best_off["images_per_s"], 4),
                  "images_per_s_detect": None if not best_on else round(best_on["images_per_s"], 4),
                  "ratio": None if not best_on else round(best_on["images_per_s"] / best_off["images_per_s"], 4),
                  "ratio_is": "images/s with the hand detector over images/s without it (baseline)",
                  "split_s_per_image": {"detect_off": {k: round(v, 4) for k, v in best_off["split_s_per_image"].items()},
                                        "detect_on": None if not best_on else
                                        {k: round(v, 4) for k, v in best_on["split_s_per_image"].items()}},
                  "detections": None if not best_on else best_on["detection"],
                  "fps": round(pipe_v["frames_per_s"], 3), "fps_baseline": round(base_v["frames_per_s"], 3),
                  "fps_ratio": round(pipe_v["frames_per_s"] / base_v["frames_per_s"], 3),
                  "fps_sequential": round(track_v["frames_per_s"], 3),
                  "fps_pipeline_detect_every_10": round(pipe10_v["frames_per_s"], 3),
                  "fps_render_overlay": round(render_v["frames_per_s"], 3),
                  "fps_two_hands": round(two_v["frames_per_s"], 3),
                  "fps_two_hands_tracked": round(two_tr_v["frames_per_s"], 3),
                  "tracked_calls": [two_tr_v["tracked_calls"], two_tr_v["detector_calls"]],
                  "two_hands_share": {"palm_every_detection": two_v["two_hands_share"],
                                      "landmark_tracking": two_tr_v["two_hands_share"]},
                  "fps_is": "video frames/s end to end as `intaghand demo --video --detect_every 5 --detect_lag 2` runs: "
                            "detector every 5th frame in its own thread, 2 frames behind, tracking between, painted overlay, "
                            "the next frame reconstructed while this one is drawn and written; baseline: one stage after "
                            "the other, detector every frame, z-buffer overlay; fps_sequential: as fps without the "
                            "threads and the lag; fps_render_overlay: sequential tracking, z-buffer overlay; "
                            "fps_two_hands(_tracked): as fps on a clip of two hands the detector finds, the palm model "
                            "at every detection (--no-tracking) or landmark tracking (the command's default; "
                            "tracked_calls: tracked / all detector calls)",
                  "video_frames": track_v["frames"], "video_detector": bool(with_det),
                  "video_stage_ms": {"pipelined": pipe_v["stage_ms"], "tracked": track_v["stage_ms"],
                                     "two_hands": two_v["stage_ms"], "two_hands_tracked": two_tr_v["stage_ms"],
                                     "tracked_render": render_v["stage_ms"],
                                     "baseline": base_v["stage_ms"]}}
        print(json.dumps(result))
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
