"""Encoder pretraining: the written weights are what MODEL.ENCODER_PRETRAIN_PATH loads, training moves them, an
interrupted run resumes to the same weights, mismatched settings refuse, and the held-out part is never trained on."""
import json

import pytest
import torch

from intaghand.cli import main as cli_main
from intaghand.config import get_config
from intaghand.pretrain import _partial_path, pretrain_encoder, pretrain_splits

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from intaghand.synthetic import make_synthetic
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic(root, 10, seed=0, size=128, fracs=[8, 2, 0], progress=False)
    return root


@pytest.fixture(scope="module")
def train_only(tmp_path_factory):
    from intaghand.synthetic import make_synthetic
    root = tmp_path_factory.mktemp("train_only")
    make_synthetic(root, 6, seed=1, size=128, splits=["train"], fracs=[1], progress=False)
    return root


def test_cli_writes_weights_the_config_loads(data, tmp_path, capsys):
    out = tmp_path / "enc.pth"
    assert cli_main(["pretrain-encoder", "--data_path", str(data), "--out", str(out), "--steps", "3", "--eval_every", "3",
                     "--batch", "4", "--threads", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rec = json.loads(lines[-2])
    assert rec["step"] == 3 and rec["val_mm"] > 0 and rec["val_mean_mm"] > 0 and rec["held_out"] == "val"
    assert lines[-1] == f"wrote {out}" and not _partial_path(out).exists()
    cfg = get_config(preset="embedded", overrides=["MODEL.ENCODER_PRETRAIN_PATH", str(out)])
    from intaghand.model import build_model
    m = build_model(cfg)
    state = torch.load(out, weights_only=True)
    assert torch.equal(m.encoder.resnet.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    assert float(state["bn1.running_mean"].abs().sum()) > 0            # trained: a fresh BatchNorm's running mean is 0


@pytest.mark.parametrize("args, word", [(["--steps", "0"], "--steps"), (["--lr", "0"], "--lr"), (["--n", "-1"], "--n")])
def test_cli_rejects_bad_arguments(data, tmp_path, capsys, args, word):
    with pytest.raises(SystemExit):
        cli_main(["pretrain-encoder", "--data_path", str(data), "--out", str(tmp_path / "e.pth"), *args])
    assert word in capsys.readouterr().err


def test_missing_data_names_the_folder(tmp_path, capsys):
    assert cli_main(["pretrain-encoder", "--data_path", str(tmp_path / "nowhere"), "--out", str(tmp_path / "e.pth")]) == 1
    err = capsys.readouterr().err
    assert "nowhere" in err and "train" in err and "Traceback" not in err


def test_interrupted_run_resumes_to_the_same_weights(data, tmp_path):
    cfg = get_config(preset="embedded")
    common = dict(cfg=cfg, batch=2, lr=1e-3, seed=3, eval_every=2, log=lambda s: None)
    straight = tmp_path / "straight.pth"
    pretrain_encoder(data, straight, steps=4, **common)

    resumed = tmp_path / "resumed.pth"
    calls = []
    def stop_after_first_eval(s):
        calls.append(s)
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        pretrain_encoder(data, resumed, steps=4, **{**common, "log": stop_after_first_eval})
    assert _partial_path(resumed).is_file() and not resumed.exists() and json.loads(calls[0])["step"] == 2
    pretrain_encoder(data, resumed, steps=4, **common)
    a, b = torch.load(straight, weights_only=True), torch.load(resumed, weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=1e-5, atol=1e-6), k


def test_partial_state_of_other_settings_refuses(data, tmp_path):
    out = tmp_path / "enc.pth"
    cfg = get_config(preset="embedded")
    with pytest.raises(KeyboardInterrupt):
        pretrain_encoder(data, out, cfg, steps=4, batch=2, eval_every=1,
                         log=lambda s: (_ for _ in ()).throw(KeyboardInterrupt) if json.loads(s)["step"] == 2 else None)
    assert _partial_path(out).is_file()
    with pytest.raises(ValueError, match="other settings"):
        pretrain_encoder(data, out, cfg, steps=4, batch=3, eval_every=1, log=lambda s: None)


def test_without_val_split_the_held_out_samples_are_not_trained_on(train_only):
    cfg = get_config(preset="embedded")
    (Xtr, Ytr), (Xva, Yva), where = pretrain_splits(train_only, cfg)
    assert where == "training samples 5..5" and len(Xtr) == 5 and len(Xva) == 1
    assert not any(torch.equal(Xva[0], x) for x in Xtr)
