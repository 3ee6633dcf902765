"""The installation itself: pinned stack, PyTorch3D on the CPU, the console entry point."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_pinned_versions():
    import torchvision
    assert torch.__version__.startswith("2.11.0")
    assert torchvision.__version__.startswith("0.26.0")


def test_pytorch3d_rasterizes_on_cpu():
    from pytorch3d.renderer import FoVOrthographicCameras, MeshRasterizer, RasterizationSettings
    from pytorch3d.structures import Meshes
    # A square made of two triangles covering x, y in [-0.5, 0.5]: a quarter of the [-1, 1]^2 view.
    v = torch.tensor([[-0.5, -0.5, 1.0], [0.5, -0.5, 1.0], [0.5, 0.5, 1.0], [-0.5, 0.5, 1.0]])
    f = torch.tensor([[0, 1, 2], [0, 2, 3]])
    rast = MeshRasterizer(cameras=FoVOrthographicCameras(),
                          raster_settings=RasterizationSettings(image_size=80, faces_per_pixel=1))
    frag = rast(Meshes(verts=[v], faces=[f]))
    mask = (frag.pix_to_face[0, ..., 0] >= 0).numpy()
    assert abs(mask.mean() - 0.25) < 0.01
    rows, cols = np.nonzero(mask)
    assert rows.min() == 20 and rows.max() == 59 and cols.min() == 20 and cols.max() == 59
    # depth of a flat square at z = 1 is 1 everywhere it is drawn
    assert torch.allclose(frag.zbuf[0, ..., 0][torch.from_numpy(mask)], torch.tensor(1.0))


def test_console_entry_point_runs():
    exe = Path(sys.executable).parent / "intaghand"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "smoke" in out.stdout
    bad = subprocess.run([str(exe), "no-such-command"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown command" in bad.stderr


def test_package_version_matches_settings():
    import configparser
    import intaghand
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "settings.ini")
    assert intaghand.__version__ == cfg["DEFAULT"]["version"]


def test_smoke_save_path_errors_are_one_line(tmp_path):
    exe = Path(sys.executable).parent / "intaghand"
    f = tmp_path / "a_file"
    f.write_text("x")
    for save, msg in ((f, f"--save_path {f}: it is a file, not a folder"),
                      (f / "out", f"--save_path {f / 'out'}: {f} is a file, not a folder, so no folder can be made under it")):
        r = subprocess.run([str(exe), "smoke", "--save_path", str(save)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 1 and r.stderr == f"intaghand smoke: error: {msg}\n", r.stderr


def test_os_errors_are_one_line(monkeypatch, capsys):
    "A disk that refuses (an OSError from deep inside a command) is one line, not a traceback."
    from intaghand import cli
    def refuse(argv): raise PermissionError(13, "Permission denied", "/data/out/x.pth")
    monkeypatch.setattr(cli, "config_main", refuse)
    assert cli.main(["config"]) == 1
    assert capsys.readouterr().err == "intaghand config: error: [Errno 13] Permission denied: '/data/out/x.pth'\n"
