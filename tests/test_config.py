"""Config values that do not fit are one-line errors; paths resolve from the current folder, then the asset root."""
import subprocess
from pathlib import Path

import pytest

from intaghand.config import (AssetNotFoundError, ConfigError, OutputPathError, checkpoint_file, get_config, load_yaml,
                              mano_file, output_dir, resolve_path, search_paths)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("key,value,message", [
    ("MODEL.IMG_SIZE", "0", "config key 'MODEL.IMG_SIZE' in overrides must be a whole number ≥ 1 and ≤ 4096, got 0"),
    ("MODEL.IMG_SIZE", "100000", "config key 'MODEL.IMG_SIZE' in overrides must be a whole number ≥ 1 and ≤ 4096, got 100000"),
    ("TRAIN.EPOCHS", "-5", "config key 'TRAIN.EPOCHS' in overrides must be a positive whole number, got -5"),
    ("TRAIN.BATCH_SIZE", "3.5", "config key 'TRAIN.BATCH_SIZE' in overrides must be a positive whole number, got 3.5"),
    ("TRAIN.LR", "1e400", "config key 'TRAIN.LR' in overrides must be a finite number, got inf (the value is too large for a float)"),
    ("TRAIN.LR", "0", "config key 'TRAIN.LR' in overrides must be a finite number > 0, got 0"),
    ("TRAIN.dropout", "1", "config key 'TRAIN.dropout' in overrides must be a finite number ≥ 0 and < 1, got 1"),
    ("LOSS_WEIGHT.AUX.MASK", "-1", "config key 'LOSS_WEIGHT.AUX.MASK' in overrides must be a finite number ≥ 0, got -1"),
    ("MODEL.GCN_IN_DIM", "[128, 64.5, 32]", "config key 'MODEL.GCN_IN_DIM' in overrides must be a positive whole number, got 64.5"),
    ("MODEL.NUM_HEADS", "true", "config key 'MODEL.NUM_HEADS' in overrides expects a int (default 4), got True"),
])
def test_bad_values_are_errors(key, value, message):
    with pytest.raises(ConfigError) as e:
        get_config(overrides=[key, value])
    assert str(e.value) == message


def test_good_values_still_load():
    c = get_config(overrides=["TRAIN.BATCH_SIZE", "8.0", "LOSS_WEIGHT.AUX.MASK", "2.5", "TRAIN.LR", "1e-3",
                              "DATA_AUGMENT.THETA", "45.5"])
    assert c.TRAIN.BATCH_SIZE == 8 and isinstance(c.TRAIN.BATCH_SIZE, int)
    assert (c.LOSS_WEIGHT.AUX.MASK, c.TRAIN.LR, c.DATA_AUGMENT.THETA) == (2.5, 1e-3, 45.5)
    assert get_config(preset="small").TRAIN.EPOCHS == 30


def test_bad_value_in_a_file_names_the_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("TRAIN:\n  EPOCHS: -5\n")
    with pytest.raises(ConfigError, match=f"'TRAIN.EPOCHS' in {p} must be a positive whole number, got -5"):
        get_config(p)


def test_binary_yaml_is_one_line(tmp_path):
    p = tmp_path / "model.pth"
    p.write_bytes(b"PK\x03\x04\x00\x00\x08\x00\xff\xfe binary")
    with pytest.raises(ConfigError) as e:
        load_yaml(p)
    msg = str(e.value)
    assert msg == f"{p} is not a YAML config: it holds binary data (byte 0x00 at offset 4 is not text); --cfg takes a .yaml file"
    (tmp_path / "latin.yaml").write_bytes(b"TRAIN:\n  OPTIM: \xe9\n")
    with pytest.raises(ConfigError, match="byte 0xe9 at offset 16"):
        load_yaml(tmp_path / "latin.yaml")
    (tmp_path / "broken.yaml").write_text("TRAIN:\n  LR: [1, 2\n")
    with pytest.raises(ConfigError) as e:
        load_yaml(tmp_path / "broken.yaml")
    assert "\n" not in str(e.value) and str(e.value).startswith(f"{tmp_path / 'broken.yaml'} is not valid YAML: ")
    assert "line 3" in str(e.value)
    with pytest.raises(ConfigError, match="is a folder"):
        load_yaml(tmp_path)


def test_cli_binary_cfg_is_one_line(tmp_path, capsys):
    from intaghand.cli import main
    p = tmp_path / "weights.bin"
    p.write_bytes(bytes(range(256)))
    assert main(["config", "--cfg", str(p)]) == 1
    assert capsys.readouterr().err.strip() == (f"intaghand config: error: {p} is not a YAML config: it holds binary "
                                               "data (byte 0x00 at offset 0 is not text); --cfg takes a .yaml file")


def test_typed_paths_resolve_from_the_current_folder_first(tmp_path, monkeypatch):
    root, work = tmp_path / "root", tmp_path / "work"
    (root / "misc/model").mkdir(parents=True); (work / "run").mkdir(parents=True)
    monkeypatch.setenv("INTAGHAND_ROOT", str(root))
    monkeypatch.chdir(work)
    (work / "run" / "best.pth").write_bytes(b"x")
    assert checkpoint_file("run/best.pth") == work / "run" / "best.pth"          # train --out run; eval --checkpoint run/best.pth
    (work / "x.pth").write_bytes(b"x")
    assert checkpoint_file("./x.pth") == work / "x.pth"
    (root / "misc/model/wild_demo.pth").write_bytes(b"x")                       # not in the current folder: the asset root
    assert checkpoint_file("misc/model/wild_demo.pth") == root / "misc/model/wild_demo.pth"
    (root / "run").mkdir(); (root / "run/best.pth").write_bytes(b"y")           # both: the current folder wins
    assert checkpoint_file("run/best.pth") == work / "run" / "best.pth"
    with pytest.raises(AssetNotFoundError) as e:
        checkpoint_file("runs/nope.pth")
    assert f"looked in: {work / 'runs/nope.pth'}, {root / 'runs/nope.pth'}" in str(e.value)
    assert "current folder first" in str(e.value)


def test_shipped_defaults_come_from_the_asset_root(tmp_path, monkeypatch):
    root, work = tmp_path / "root", tmp_path / "work"
    for d in (root, work): (d / "misc/mano").mkdir(parents=True)
    (work / "misc/mano/OPENHAND_RIGHT.pkl").write_bytes(b"shadow")
    (root / "misc/mano/OPENHAND_RIGHT.pkl").write_bytes(b"shipped")
    monkeypatch.setenv("INTAGHAND_ROOT", str(root))
    monkeypatch.chdir(work)
    assert search_paths("misc/mano") == [root / "misc/mano"]
    assert mano_file(get_config(), "right") == root / "misc/mano/OPENHAND_RIGHT.pkl"
    # a MANO_PATH the user sets is looked for in the current folder first
    (work / "mine").mkdir(); (work / "mine/OPENHAND_RIGHT.pkl").write_bytes(b"mine")
    assert mano_file(get_config(overrides=["MISC.MANO_PATH", "mine"]), "right") == work / "mine/OPENHAND_RIGHT.pkl"
    assert resolve_path("new_folder") == work / "new_folder"                  # where a new output goes


def test_empty_mano_folder_names_the_missing_files(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(AssetNotFoundError) as e:
        mano_file(get_config(overrides=["MISC.MANO_PATH", str(tmp_path / "empty")]), "right")
    msg = str(e.value)
    assert msg.startswith("hand model for the right hand: neither MANO_RIGHT.pkl (real MANO) nor OPENHAND_RIGHT.pkl "
                          f"(embedded hand model) in MISC.MANO_PATH '{tmp_path / 'empty'}' not found (looked in: {tmp_path / 'empty'})")


def _read_only(path: Path):
    "Make `path` unwritable even for root (immutable attribute), else by mode; False if neither works here."
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0: path.chmod(0o555)
    try: (path / ".probe").touch()
    except OSError: return True
    (path / ".probe").unlink()
    return False


def test_output_dir_errors(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("x")
    with pytest.raises(OutputPathError) as e:
        output_dir(f)
    assert str(e.value) == f"--save_path {f}: it is a file, not a folder"
    with pytest.raises(OutputPathError) as e:
        output_dir(f / "sub" / "out", "--out")
    assert str(e.value) == f"--out {f / 'sub' / 'out'}: {f} is a file, not a folder, so no folder can be made under it"
    ro = tmp_path / "ro"
    ro.mkdir()
    if not _read_only(ro): pytest.skip("cannot make a read-only folder here")
    try:
        with pytest.raises(OutputPathError, match=f"--save_path {ro}: the folder is not writable"):
            output_dir(ro)
        with pytest.raises(OutputPathError, match=f"--save_path {ro / 'new'}: cannot create the folder"):
            output_dir(ro / "new")
    finally:
        subprocess.run(["chattr", "-i", str(ro)], capture_output=True); ro.chmod(0o755)
    assert output_dir(tmp_path / "x" / "y") == tmp_path / "x" / "y" and (tmp_path / "x" / "y").is_dir()


def test_embedded_preset_is_the_small_network_with_the_cpu_recipe():
    "The embedded checkpoint's recipe changes the small preset only where the model card says."
    from intaghand.config import get_config
    a, b = get_config(preset="small"), get_config(preset="embedded")
    assert b.MODEL.MEAN_HAND and not a.MODEL.MEAN_HAND and b.MODEL.IMG_SIZE == 64
    assert b.LOSS_WEIGHT.GRAPH.NORM.NORM_EPOCH == 0 and b.TRAIN.warm_up == 0 and b.DATA_AUGMENT.THETA == 30
    assert b.TRAIN.dropout == 0 and a.TRAIN.dropout == 0.05 and (b.TRAIN.EPOCHS, b.TRAIN.lr_decay_step) == (3, 2)
    assert (b.MODEL.ENCODER_TYPE, list(b.MODEL.GCN_IN_DIM)) == (a.MODEL.ENCODER_TYPE, list(a.MODEL.GCN_IN_DIM))
    assert b.LOSS_WEIGHT.DATA.ROOT_3D == 100 and a.LOSS_WEIGHT.DATA.ROOT_3D == 0     # shape and roots apart (stage 19 on)
    assert not get_config().MODEL.MEAN_HAND                       # the default config stays the original's
    assert get_config().LOSS_WEIGHT.DATA.ROOT_3D == 0
    assert b.TRAIN.EMA_DECAY == 0.999 and a.TRAIN.EMA_DECAY == 0 == get_config().TRAIN.EMA_DECAY   # averaged weights (stage 23 on)
