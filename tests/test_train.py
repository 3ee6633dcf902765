"""Trainer: exact resume (in-process stop and a real kill), checkpoints, DDP under torchrun vs one process, CLI."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from intaghand.config import get_config
from intaghand.repro import EpochSampler, rng_state, seed_everything, set_rng_state
from intaghand.run_files import export_weights, read_log
from intaghand.train import Trainer
from intaghand.train_cli import train_main

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
# small preset at a 64-pixel input: ~0.5 s per step of batch 4 on one CPU thread
TINY = ["MODEL.IMG_SIZE", "64", "TRAIN.BATCH_SIZE", "4", "TRAIN.EPOCHS", "2", "TB.SHOW_GAP", "2", "SAVE.SAVE_GAP", "1"]
LAUNCH = "import sys; from intaghand.train_cli import train_main; sys.exit(train_main(sys.argv[1:]))"


pytestmark = pytest.mark.usefixtures("one_thread")


def _no_wall(record: dict) -> str:
    "A log record without its wall time (the only field that differs between identical runs)."
    return json.dumps({k: v for k, v in record.items() if k != "wall_time"})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from intaghand.synthetic import make_synthetic
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic(root, 12, seed=0, size=128, fracs=[8, 2, 2], progress=False)
    return root


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.setdefault("MPLCONFIGDIR", str(ROOT / ".cache" / "matplotlib"))
    return env


def _losses(log):
    return [(r["kind"], r["step"], r.get("train/total_loss", r.get("val/mpjpe_all"))) for r in log]


@pytest.fixture(scope="module")
def full_run(data, tmp_path_factory):
    "Two uninterrupted epochs (2 steps each) with validation, TensorBoard and pictures."
    out = tmp_path_factory.mktemp("full")
    t = Trainer(get_config(preset="small", overrides=TINY), data, out, progress=False)
    log = t.fit()
    t.close()
    return out, log


def test_full_run_logs_and_checkpoints(full_run):
    out, log = full_run
    train = [r for r in log if r["kind"] == "train"]
    assert [r["step"] for r in train] == [0, 1, 2, 3] and [r["epoch"] for r in train] == [0, 0, 1, 1]
    terms = {f"train/mano_{k}" for k in ("vert2d_loss", "vert3d_loss", "joint_loss", "norm_loss", "edge_loss",
                                          "upsample_norm_loss")}
    terms |= {f"train/aux_{k}" for k in ("mask_loss", "dense_loss", "hms_loss")}
    terms |= {"train/coarsen_v3d_loss_0", "train/coarsen_v2d_loss_0", "train/total_loss", "learning_rate"}
    assert terms <= set(train[0])
    assert all(np.isfinite(r["train/total_loss"]) for r in train)
    np.testing.assert_allclose([r["learning_rate"] for r in train], [1e-6, 1e-6, 1e-3, 1e-3], rtol=1e-12)
    val = [r for r in log if r["kind"] == "val"]
    assert [r["epoch"] for r in val] == [1, 2] and all(r["val/n_samples"] == 2 for r in val)
    assert {p.name for p in out.glob("*.pth")} == {"1.pth", "2.pth", "best.pth", "latest.pth"}
    ck = torch.load(out / "latest.pth", weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "epoch", "step", "batch_in_epoch", "best_metric", "config",
            "rng"} <= set(ck)
    assert (ck["epoch"], ck["step"], ck["batch_in_epoch"], ck["scheduler"]["last_epoch"]) == (2, 4, 0, 2)
    assert set(ck["rng"][0]) == {"python", "numpy", "torch", "cuda"}
    best = torch.load(out / "best.pth", weights_only=True)
    assert ck["best_metric"] == min(r["val/mpjpe_all"] for r in val) and best["epoch"] == ck["best_epoch"]
    assert get_config(out / "config.yaml").MODEL.IMG_SIZE == 64
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ev = EventAccumulator(str(out / "tb"), size_guidance={"images": 0, "scalars": 0})
    ev.Reload()
    tags = ev.Tags()
    assert {t.replace("train/", "train/") for t in terms} <= set(tags["scalars"])
    assert [e.step for e in ev.Scalars("train/total_loss")] == [0, 1, 2, 3]
    assert ev.Scalars("train/total_loss")[3].value == pytest.approx(train[3]["train/total_loss"], rel=1e-6)
    assert {"0_input", "1_img_aux/mask_gt", "1_img_aux/mask_pred", "1_img_aux/dense_gt", "1_img_aux/dense_pred",
            "2_mano/vert_gt", "2_mano/vert_out_result", "2_mano/vert_out_0", "hms/l_gt", "hms/l_pred", "hms/r_gt",
            "hms/r_pred"} <= set(tags["images"])
    assert [e.step for e in ev.Images("0_input")] == [0, 2]


def test_resume_mid_epoch_is_exact(full_run, data, tmp_path):
    "Stopped after 3 steps (mid-epoch) and resumed: the same log, bit for bit, as the uninterrupted run."
    _, log = full_run
    cfg = get_config(preset="small", overrides=TINY)
    t = Trainer(cfg, data, tmp_path, progress=False, max_steps=3, tensorboard=False)
    part = t.fit()
    assert [r["step"] for r in part if r["kind"] == "train"] == [0, 1, 2]
    ck = torch.load(tmp_path / "latest.pth", weights_only=True)
    assert (ck["epoch"], ck["step"], ck["batch_in_epoch"]) == (1, 3, 1)
    t2 = Trainer(cfg, data, tmp_path, progress=False, tensorboard=False).resume()
    assert (t2.epoch, t2.step, t2.batch_in_epoch) == (1, 3, 1)
    rest = t2.fit()
    assert [_no_wall(r) for r in rest] == [_no_wall(r) for r in log]      # every term, lr, val metric (wall time differs)


def test_export_weights_loads_for_inference(full_run, tmp_path):
    out, _ = full_run
    w = export_weights(out / "best.pth", tmp_path / "model.pth")
    state = torch.load(w, weights_only=True)
    assert all(torch.is_tensor(v) for v in state.values()) and not any(k.startswith("module.") for k in state)
    from intaghand.inference import Reconstructor
    rec = Reconstructor.from_checkpoint(w)       # finds model.yaml beside the weights
    img = np.zeros((80, 100, 3), np.uint8)
    o = rec([img])
    assert o.left.verts3d.shape == (1, 778, 3)


def test_rng_state_round_trip_weights_only(tmp_path):
    seed_everything(7)
    s = rng_state()
    torch.save(s, tmp_path / "r.pt")
    a = (np.random.rand(3), torch.rand(3), __import__("random").random())
    set_rng_state(torch.load(tmp_path / "r.pt", weights_only=True))
    b = (np.random.rand(3), torch.rand(3), __import__("random").random())
    assert np.array_equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]


def test_sampler_splits_global_batches_over_ranks():
    class N(torch.utils.data.Dataset):
        def __len__(self): return 12
    one = list(EpochSampler(N(), 1, 0, seed=3))
    ranks = [list(EpochSampler(N(), 3, r, seed=3)) for r in range(3)]
    for k in range(2):      # global batch 6 = 3 processes × 2
        assert sorted(one[6 * k:6 * k + 6]) == sorted(sum((r[2 * k:2 * k + 2] for r in ranks), []))


def test_clear_errors(data, tmp_path):
    cfg = get_config(preset="small", overrides=["MODEL.IMG_SIZE", "64", "TRAIN.BATCH_SIZE", "64"])
    with pytest.raises(ValueError, match="fewer than one batch of 64"):
        Trainer(cfg, data, tmp_path, progress=False)
    with pytest.raises(ValueError, match="SyncBatchNorm.*CUDA"):
        Trainer(get_config(preset="small"), data, tmp_path, bn="sync")
    with pytest.raises(FileNotFoundError, match="make-synthetic"):
        Trainer(get_config(preset="small"), tmp_path / "nothing", tmp_path)
    with pytest.raises(SystemExit):
        train_main(["-", "--epochs", "0"])


def test_amp_on_cpu_follows_the_hardware(data, tmp_path, monkeypatch):
    "--amp on CPU: bfloat16 autocast without a GradScaler where the CPU has native bf16, float32 with a warning elsewhere."
    import intaghand.tensors as tn
    monkeypatch.setattr(tn, "cpu_has_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no native bfloat16"):
        t = Trainer(get_config(preset="small", overrides=TINY), data, tmp_path, device="cpu", amp=True, progress=False)
    assert not t.amp and t.amp_dtype is None and not t.scaler.is_enabled()
    monkeypatch.setattr(tn, "cpu_has_bf16", lambda: True)
    t = Trainer(get_config(preset="small", overrides=TINY), data, tmp_path, device="cpu", amp=True, progress=False,
                max_steps=1, tensorboard=False, images=False)
    assert t.amp_dtype == torch.bfloat16 and not t.scaler.is_enabled()
    seen = {}

    def record(name):
        def hook(module, inputs, output): seen.setdefault(name, torch.is_autocast_enabled("cpu"))
        return hook

    for name in ("encoder", "mid_model", "decoder"):           # where autocast is on during the step's forward
        getattr(t.net, name).register_forward_hook(record(name))
    scalars, out, _ = t.train_step(next(iter(t.loader)))
    assert np.isfinite(scalars["train/total_loss"]) and out.left.verts3d.dtype == torch.float32   # losses in float32
    assert seen == {"encoder": True, "mid_model": False, "decoder": False}, seen                  # the encoder alone
    assert t.net.encoder_autocast is None and t.validate() is not None                           # validation in float32


def test_mean_hand_start(data, tmp_path):
    "MODEL.MEAN_HAND: a fresh run's first prediction is the training data's mean mesh, and the buffers travel with the weights."
    from intaghand.dataset import HandDataset
    from intaghand.model import build_model, load_weights
    cfg = get_config(preset="small", overrides=TINY + ["MODEL.MEAN_HAND", "True"])
    t = Trainer(cfg, data, tmp_path, progress=False, tensorboard=False, images=False)
    ds = HandDataset(data, "train", cfg=cfg, mano_layers=t.layers, train=False)
    gt = torch.stack([ds[i].right.verts3d + ds[i].root_rel for i in range(len(ds))])   # the right hand, left-rooted
    t.net.eval()
    with torch.no_grad(): pred = t.net(torch.stack([ds[i].img for i in range(len(ds))])).right.verts3d
    err_mean = (pred - gt.mean(0)).norm(dim=-1).mean()              # the prediction sits at the mean hand ...
    spread = (gt - gt.mean(0)).norm(dim=-1).mean()                   # ... much closer than the samples are to it
    assert err_mean < 0.25 * spread, (float(err_mean), float(spread))
    plain = build_model(get_config(preset="small", overrides=TINY))
    assert not any("mean_verts" in k for k in plain.state_dict())    # the original architecture is unchanged
    again = load_weights(build_model(cfg), t.net.state_dict())
    dec = t.net.decoder
    for name in ("mean_verts_right", "std_verts_right", "mean_camera_left", "std_camera_left"):
        assert torch.equal(getattr(again.decoder, name), getattr(dec, name)), name
    assert float(dec.mean_verts_right.abs().sum()) > 0
    # the spreads are the data's (floored): a coordinate's std is well above 0 and below the whole hand's extent
    assert 0 < float(dec.std_verts_right.min()) and float(dec.std_verts_right.max()) < float(gt.abs().max())
    assert float(dec.std_camera_left[0]) > 0 and torch.all(dec.params_head.bias == 0)
    bound = 0.1 * (6 / sum(dec.params_head.weight.shape)) ** 0.5                # a tenth of the xavier bound
    assert 0 < float(dec.params_head.weight.detach().abs().max()) <= bound


def test_standardised_heads_scale_their_output():
    "A MEAN_HAND decoder returns mean + std · head: doubling std doubles the head's share, the mean shifts everything."
    from intaghand.model import build_model
    cfg = get_config(preset="small", overrides=TINY + ["MODEL.MEAN_HAND", "True"])
    torch.manual_seed(0)
    m = build_model(cfg).eval()
    img = torch.randn(2, 3, cfg.MODEL.IMG_SIZE, cfg.MODEL.IMG_SIZE)
    with torch.no_grad():
        base = m(img).left
        m.decoder.std_verts_left.mul_(2.0); m.decoder.mean_camera_left.add_(torch.tensor([0.5, 0.0, 0.0]))
        scaled = m(img).left
    assert torch.allclose(scaled.scale, base.scale + 0.5, atol=1e-5)
    # the last-level output doubles around the (zero) mean, so the 778-vertex mesh (a linear map of it) doubles too
    assert torch.allclose(scaled.verts3d, 2 * base.verts3d, atol=1e-5) and float(base.verts3d.abs().max()) > 0


def test_diverging_run_stops_and_keeps_finite_weights(data, tmp_path, capsys):
    "TRAIN.LR 1e30: the run stops with a message and exit 1, and the checkpoint left is finite."
    args = ["-", *TINY, "TRAIN.LR", "1e30", "TRAIN.warm_up", "0", "--preset", "small", "--data_path", str(data),
            "--out", str(tmp_path), "--no_progress", "--no_images", "--val_samples", "0"]
    rc = train_main(args)
    err = capsys.readouterr().err
    assert rc == 1 and "training diverged at step" in err and "Lower TRAIN.LR" in err, err
    ck = tmp_path / "latest.pth"
    if ck.is_file():
        state = torch.load(ck, weights_only=True)["model"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_warmup_steps_ramp_the_learning_rate(data, tmp_path):
    cfg = get_config(preset="small", overrides=TINY + ["TRAIN.warm_up", "0"])
    t = Trainer(cfg, data, tmp_path, progress=False, tensorboard=False, images=False, warmup_steps=4, max_steps=3)
    log = t.fit()
    lrs = [r["learning_rate"] for r in log if r["kind"] == "train"]
    assert np.allclose(lrs, [float(cfg.TRAIN.LR) * k / 4 for k in (1, 2, 3)]), lrs


def _cli_args(data, out, *extra):
    return ["-", "MODEL.IMG_SIZE", "64", "TRAIN.dropout", "0", "TRAIN.warm_up", "0", "--preset", "small", "--data_path",
            str(data), "--out", str(out), "--batch_size", "4", "--global_batch", "--epochs", "1", "--max_steps", "2",
            "--bn", "frozen", "--val_samples", "0", "--no_progress", "--no_images", *extra]


def test_torchrun_two_processes_match_one(data, tmp_path):
    """2 CPU processes (gloo), global batch 4 = 2 × 2, vs one process with batch 4: same losses and parameters.
    BatchNorm is frozen (eval-mode statistics) and dropout off: otherwise per-process batch statistics and dropout
    masks legitimately differ. Adam divides by √v, so elements whose gradient is pure rounding noise (e.g. attention
    key biases, which softmax ignores) move by ±lr in either run; the check allows a tiny fraction of those."""
    single, multi = tmp_path / "single", tmp_path / "ddp"
    assert train_main(_cli_args(data, single)) == 0
    cmd = [str(Path(PY).parent / "torchrun"), "--standalone", "--nproc_per_node", "2", "--no-python", PY, "-c", LAUNCH,
           *_cli_args(data, multi)]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 process(es) × batch 2" in r.stdout
    la, lb = read_log(single), read_log(multi)
    assert [x["step"] for x in lb] == [0, 1]
    for x, y in zip(la, lb):
        for k in x:
            if k.startswith("train/"): assert y[k] == pytest.approx(x[k], rel=1e-4, abs=1e-7), k
    a = torch.load(single / "latest.pth", weights_only=True)
    b = torch.load(multi / "latest.pth", weights_only=True)
    assert a["world_size"] == 1 and b["world_size"] == 2 and len(b["rng"]) == 2
    cfg = get_config(preset="small", overrides=["MODEL.IMG_SIZE", "64", "TRAIN.dropout", "0"])
    seed_everything(cfg.SEED)
    from intaghand.model import build_model
    init = build_model(cfg).state_dict()
    n = close = 0
    num = den = 0.0
    for k, v in a["model"].items():
        if not v.is_floating_point(): continue
        d1, d2 = (v - init[k]).double(), (b["model"][k] - init[k]).double()
        n += d1.numel(); close += int(((d1 - d2).abs() <= 1e-5).sum())
        if not k.endswith("w_ks.bias"):
            num += float(((d1 - d2) ** 2).sum()); den += float((d1 ** 2).sum())
    assert den > 0 and close / n > 0.999, close / n
    assert (num / den) ** 0.5 < 0.02, (num / den) ** 0.5        # vs ~1.4 for unrelated updates of this size


@pytest.mark.slow
def test_killed_and_resumed_matches(data, full_run, tmp_path):
    "A CLI run SIGKILLed after a few steps (latest.pth every step), then `--resume`d: the same curve."
    _, log = full_run
    args = ["-", *TINY, "--preset", "small", "--data_path", str(data), "--out", str(tmp_path), "--save_steps", "1",
            "--no_progress", "--threads", "1"]
    p = subprocess.Popen([PY, "-c", LAUNCH, *args], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.time()
    while len(read_log(tmp_path)) < 3 and p.poll() is None and time.time() - t0 < 120: time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert 1 <= torch.load(tmp_path / "latest.pth", weights_only=True)["step"] < 4
    assert train_main(args + ["--resume"]) == 0
    assert [_no_wall(r) for r in read_log(tmp_path)] == [_no_wall(r) for r in log]


def test_upsample_layer_frozen_or_trained(full_run, data, tmp_path):
    "Frozen (default, official): not optimised, weights unchanged, its loss 0. Trainable: optimised and pulled to upsample.pkl."
    from intaghand.model import load_graph_assets
    out, log = full_run
    cfg = get_config(preset="small", overrides=TINY)
    ref = torch.as_tensor(np.asarray(load_graph_assets(cfg)["upsample"]), dtype=torch.float32)
    w = torch.load(out / "latest.pth", weights_only=True)["model"]["decoder.unsample_layer.weight"]
    assert torch.equal(w, ref) and all(r["train/mano_upsample_norm_loss"] == 0 for r in log if r["kind"] == "train")
    cfg = get_config(preset="small", overrides=TINY + ["MODEL.freeze_upsample", "False", "TRAIN.warm_up", "0"])
    t = Trainer(cfg, data, tmp_path, progress=False, tensorboard=False, max_steps=2, val_samples=0)
    assert any(p is t.net.decoder.unsample_layer.weight for g in t.optimizer.param_groups for p in g["params"])
    log = t.fit()
    assert log[0]["train/mano_upsample_norm_loss"] == 0 and log[1]["train/mano_upsample_norm_loss"] > 0
    assert not torch.equal(t.net.decoder.unsample_layer.weight.detach(), ref)


def test_sigterm_to_the_process_group_saves_and_exits_130(data, tmp_path):
    "A scheduler's SIGTERM reaches the DataLoader workers too: they leave it to the trainer, which saves and exits 130."
    args = ["-", *TINY, "--preset", "small", "--data_path", str(data), "--out", str(tmp_path), "--workers", "1",
            "--no_progress", "--no_images", "--val_samples", "0", "--threads", "1", "--epochs", "50"]
    p = subprocess.Popen([PY, "-c", LAUNCH, *args], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True, text=True)
    t0 = time.time()
    while not read_log(tmp_path) and p.poll() is None and time.time() - t0 < 120: time.sleep(0.05)
    os.killpg(p.pid, signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "--resume" in err and "DataLoader worker" not in err
    assert torch.load(tmp_path / "latest.pth", weights_only=True)["step"] >= 1


def test_resume_removes_the_temporaries_of_a_killed_save(full_run, data, tmp_path):
    "A save SIGKILLed mid-write leaves `.latest.pth.XXXXXXXX.tmp`; the next run in that folder removes it, nothing else."
    import shutil
    out, _ = full_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    stale, other = run / ".latest.pth.a1b2c3d4.tmp", run / ".notes.tmp"
    stale.write_bytes(b"half a checkpoint"); other.write_text("not the trainer's")
    t = Trainer(get_config(preset="small", overrides=TINY), data, run, progress=False, tensorboard=False).resume()
    t.fit()
    assert not stale.exists() and other.read_text() == "not the trainer's"


def test_resume_does_not_need_the_encoder_pretrain_file(data, tmp_path, capsys):
    "`--resume` rebuilds the network without reading MODEL.ENCODER_PRETRAIN_PATH: the checkpoint replaces every weight."
    import torchvision
    enc = tmp_path / "enc.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), enc)
    run = lambda out, *extra: train_main(["-", *TINY, "MODEL.ENCODER_PRETRAIN_PATH", str(enc), "--preset", "small",
                                          "--data_path", str(data), "--out", str(out), "--no_progress", "--no_images",
                                          "--val_samples", "0", *extra])
    out = tmp_path / "run"
    assert run(out, "--max_steps", "1") == 0
    enc.unlink()                                                   # e.g. resumed on another machine
    assert run(out, "--max_steps", "2", "--resume") == 0
    assert "resuming at epoch 0 step 1" in capsys.readouterr().out
    assert [r["step"] for r in read_log(out / "train_log.jsonl") if r["kind"] == "train"] == [0, 1]
    with pytest.raises(Exception, match="enc.pth"):                # a fresh run still needs it
        run(tmp_path / "fresh", "--max_steps", "1")


def test_moved_names_stay_importable_from_train():
    "The run-folder helpers and the pictures have their own modules; the old imports still work."
    import intaghand.run_files as run_files
    import intaghand.train as train
    import intaghand.train_pictures as train_pictures
    assert train.read_log is run_files.read_log and train.export_weights is run_files.export_weights
    assert train.CHECKPOINT_FORMAT == run_files.CHECKPOINT_FORMAT == "intaghand-train/1"
    assert train.training_images is train_pictures.training_images
    assert {"read_log", "export_weights", "training_images", "CHECKPOINT_FORMAT"} <= set(train.__all__)


def test_text_progress_redraws_at_most_every_interval(data, tmp_path, capsys, monkeypatch):
    "progress='text' (the papermill run notebook's bar): the per-step postfix does not force a redraw of its own."
    import intaghand.io as io_
    monkeypatch.setattr(io_, "TEXT_BAR_INTERVAL", 3600.0)      # an hour: only the first and the closing draw
    cfg = get_config(preset="small", overrides=TINY)
    t = Trainer(cfg, data, tmp_path, progress="text", tensorboard=False, images=False, val_samples=0, max_steps=3)
    t.fit()
    err = capsys.readouterr().err
    draws = [d for d in err.replace("\n", "\r").split("\r") if "epoch 1/2" in d]
    assert len(draws) == 2, draws                               # 2 steps, each with a new loss in its postfix
    assert draws[-1].startswith("epoch 1/2: 100%") and "2/2" in draws[-1] and "loss=" in draws[-1]


def test_weights_from_another_input_size_start_a_run(full_run, data, tmp_path, capsys):
    "A 64-pixel run's weights start a 128-pixel run: the grid embeddings are resized (and said so), the rest loads as is."
    out, _ = full_run
    w = export_weights(out / "best.pth", tmp_path / "w64.pth")
    big = [x if x != "64" else "128" for x in TINY]
    run = tmp_path / "run128"
    assert train_main(["-", *big, "MODEL_PARAM.MODEL_PRETRAIN_PATH", str(w), "--preset", "small", "--data_path", str(data),
                       "--out", str(run), "--no_progress", "--no_images", "--val_samples", "0", "--max_steps", "1"]) == 0
    said = capsys.readouterr().out
    assert "position embeddings resized 2×2 -> 4×4" in said and "w64.pth" in said
    start, end = torch.load(w, weights_only=True), torch.load(run / "latest.pth", weights_only=True)["model"]
    key = next(k for k in start if k.endswith("img_ex_left.encoder.position_embeddings.weight"))
    assert tuple(start[key].shape) == (4, start[key].shape[1]) and tuple(end[key].shape) == (16, start[key].shape[1])
