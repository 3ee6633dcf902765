"""Training throughput on CPU (samples/s): the trainer's steps for the small preset and the default model.

    .venv/bin/python bench/train.py [--quick] [--threads N] [--batch_small 8] [--batch_default 2]

Each configuration trains on synthetic data (made once in a temporary folder at 256², the processed crop size)
with `intaghand.train.Trainer`: data loading and augmentation, forward, every loss term, backward, the Adam step
and the per-step log line (no TensorBoard, no validation). The baseline is the bare loop on the same network:
forward, `compute_losses`, backward and step on one batch already in memory. The two are timed alternately
(so both see the same machine load); the minimum per step over the repeats is reported. One CPU thread by
default: on a shared machine several threads make the numbers swing by 2-10x; `--threads 0` keeps torch's
default. The last line printed is one JSON object: `samples_per_s` is the trainer on the small preset,
`ratio` = trainer / bare loop on the small preset (the cost of the data pipeline and bookkeeping; ≤ 1).
Where the CPU has native bfloat16 (AMX / AVX-512-BF16) the small preset is also timed with `--amp` (bfloat16
autocast of the encoder, as the trainer does there; its bare loop too): `small_bf16`, `bf16_speedup`; elsewhere
they are null (bfloat16 would be emulated and slower).
"""
import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from _timing import time_pair




def measure(cfg, data, out, min_time, min_reps, amp: bool = False):
    from intaghand.losses import LossPrediction, LossTarget, compute_losses
    from intaghand.train import Trainer
    t = Trainer(cfg, data, out, device="cpu", progress=False, tensorboard=False, images=False, val_samples=0, amp=amp)
    t._set_train_mode()
    it = {"it": None}

    def next_batch():
        if it["it"] is None: it["it"] = iter(t.loader)
        try: return next(it["it"])
        except StopIteration:
            t.sampler.set_epoch(t.sampler.epoch + 1)
            it["it"] = iter(t.loader)
            return next(it["it"])

    def trainer_step():
        scalars, _, _ = t.train_step(next_batch())
        t._record_step(scalars, None, None)
        t.step += 1

    fixed = next_batch()

    def bare_step():
        t.net.encoder_autocast = t.amp_dtype if t.amp else None      # the precision the trainer's step uses
        try: out = t.model(fixed.img)
        finally: t.net.encoder_autocast = None
        loss = compute_losses(LossPrediction.from_output(out), LossTarget.from_sample(fixed), t.specs, t.weights,
                              epoch=0, img_size=t.img_size)
        t.optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        t.optimizer.step()

    ts, tb, reps = time_pair(trainer_step, bare_step, min_time, min_reps)
    B = t.batch_size
    t.close()
    return {"encoder": cfg.MODEL.ENCODER_TYPE, "img_size": int(cfg.MODEL.IMG_SIZE), "batch": B, "repeats": reps,
            "s_per_step": round(ts, 4), "samples_per_s": round(B / ts, 3), "bare_samples_per_s": round(B / tb, 3),
            "ratio": round(tb / ts, 3)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short timings (under a minute)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; 0 = torch's default)")
    ap.add_argument("--batch_small", type=int, default=None, help="batch of the small preset (default 4 quick, 16)")
    ap.add_argument("--batch_default", type=int, default=2, help="batch of the default model (default 2)")
    a = ap.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    from intaghand.config import get_config
    from intaghand.synthetic import make_synthetic
    bs = a.batch_small or (4 if a.quick else 16)
    min_time, min_reps = (3.0, 2) if a.quick else (20.0, 5)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n = max(bs, a.batch_default) * 2
        t0 = time.time()
        make_synthetic(tmp / "data", n, seed=0, splits=("train",), size=256, progress=False)
        made = time.time() - t0
        small = measure(get_config(preset="small", overrides=["TRAIN.BATCH_SIZE", bs]), tmp / "data", tmp / "s",
                        min_time, min_reps)
        default = measure(get_config(overrides=["TRAIN.BATCH_SIZE", a.batch_default]), tmp / "data", tmp / "d",
                          min_time / 2, 1 if a.quick else 3)
        from intaghand.tensors import cpu_has_bf16
        bf16 = (measure(get_config(preset="small", overrides=["TRAIN.BATCH_SIZE", bs]), tmp / "data", tmp / "s16",
                        min_time, min_reps, amp=True) if cpu_has_bf16() else None)
    print(f"small preset ({small['encoder']}, {small['img_size']} px, batch {small['batch']}): "
          f"{small['samples_per_s']:.2f} samples/s (bare loop {small['bare_samples_per_s']:.2f})")
    print(f"default model ({default['encoder']}, {default['img_size']} px, batch {default['batch']}): "
          f"{default['samples_per_s']:.2f} samples/s (bare loop {default['bare_samples_per_s']:.2f})")
    print("small preset, bfloat16 autocast: " + (f"{bf16['samples_per_s']:.2f} samples/s" if bf16 else
                                                   "not measured (this CPU has no native bfloat16; --amp trains in float32 here)"))
    print(json.dumps({"bench": "train", "device": "cpu", "threads": torch.get_num_threads(), "quick": a.quick,
                      "cpu_count": os.cpu_count(), "data_seconds": round(made, 1), "small": small, "default": default,
                      "samples_per_s": small["samples_per_s"], "baseline_samples_per_s": small["bare_samples_per_s"],
                      "ratio": small["ratio"], "small_bf16": bf16,
                      "bf16_speedup": round(bf16["samples_per_s"] / small["samples_per_s"], 3) if bf16 else None}))


if __name__ == "__main__":
    main()
