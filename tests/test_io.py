"""Safe I/O: strict image reading, stale temporaries of killed writes, refused pickles and checkpoints as one-line errors."""
import io
import os
import pickle
import signal
import subprocess
import sys
import traceback
import zlib

import cv2
import numpy as np
import pytest

from intaghand.io import (CheckpointError, ImageReadError, PickleReadError, UnsafePickleError, atomic_imwrite,
                          atomic_pickle, atomic_torch_save, decode_image, load_checkpoint, read_image, read_user_image,
                          remove_stale_temps, safe_load_pickle)


@pytest.fixture(scope="module")
def photo():
    rng = np.random.default_rng(0)
    return cv2.GaussianBlur(rng.integers(0, 255, (240, 320, 3)).astype(np.uint8), (9, 9), 3)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def _refused(path, match: str = ""):
    with pytest.raises(ImageReadError) as e: read_image(path)
    msg = str(e.value)
    assert msg.startswith(str(path)) and match in msg, msg
    assert isinstance(e.value, ValueError)
    return msg


def test_jpeg_truncated_with_and_without_end_marker_is_refused(tmp_path, photo):
    atomic_imwrite(tmp_path / "p.jpg", photo)
    jpg = (tmp_path / "p.jpg").read_bytes()
    cut = jpg[:len(jpg) * 4 // 10]
    (tmp_path / "cut.jpg").write_bytes(cut)
    (tmp_path / "cut_eoi.jpg").write_bytes(cut + b"\xff\xd9")
    assert cv2.imread(str(tmp_path / "cut_eoi.jpg")) is not None          # what OpenCV alone would accept
    assert "damaged JPEG" in _refused(tmp_path / "cut.jpg")
    assert "damaged JPEG" in _refused(tmp_path / "cut_eoi.jpg")


def test_jpeg_with_trailing_data_reads_like_opencv(tmp_path, photo):
    atomic_imwrite(tmp_path / "p.jpg", photo)
    jpg = (tmp_path / "p.jpg").read_bytes()
    (tmp_path / "motion.jpg").write_bytes(jpg + np.random.default_rng(1).integers(0, 255, 20000).astype(np.uint8).tobytes())
    img = read_image(tmp_path / "motion.jpg")
    assert img.dtype == np.uint8 and img.shape == (240, 320, 3) and img.flags.c_contiguous
    assert np.array_equal(img, cv2.imread(str(tmp_path / "p.jpg")))


def test_gray_jpeg_gives_three_channels(tmp_path, photo):
    atomic_imwrite(tmp_path / "g.jpg", photo[..., 0])
    assert np.array_equal(read_image(tmp_path / "g.jpg"), cv2.imread(str(tmp_path / "g.jpg")))


def test_exif_orientation_applied_like_opencv(tmp_path, photo):
    from PIL import Image
    for o in (3, 6, 8):
        exif = Image.Exif(); exif[0x0112] = o
        p = tmp_path / f"o{o}.jpg"
        Image.fromarray(photo[..., ::-1]).save(p, "JPEG", exif=exif.tobytes())
        want = cv2.imread(str(p))
        assert want.shape[:2] == ((320, 240) if o in (6, 8) else (240, 320))
        assert np.array_equal(read_image(p), want), o


def test_png_checked_for_real(tmp_path, photo):
    atomic_imwrite(tmp_path / "p.png", photo)
    png = (tmp_path / "p.png").read_bytes()
    assert np.array_equal(read_image(tmp_path / "p.png"), photo)
    (tmp_path / "cut.png").write_bytes(png[:len(png) * 4 // 10])
    _refused(tmp_path / "cut.png", "truncated PNG")
    (tmp_path / "cut_iend.png").write_bytes(png[:len(png) * 4 // 10] + _png_chunk(b"IEND", b""))
    _refused(tmp_path / "cut_iend.png", "truncated PNG")
    # every chunk whole with a right CRC, but the image stream stops early: only decompressing shows it
    head = png[:33]                                                       # signature + IHDR
    stream = zlib.compress(cv2.cvtColor(photo, cv2.COLOR_BGR2RGB).tobytes())   # (no filter bytes: any bytes will do)
    (tmp_path / "short_idat.png").write_bytes(head + _png_chunk(b"IDAT", stream[:len(stream) // 2]) + _png_chunk(b"IEND", b""))
    _refused(tmp_path / "short_idat.png", "compressed image data ends early")
    bad = bytearray(png); bad[40] ^= 0xFF
    (tmp_path / "crc.png").write_bytes(bytes(bad))
    _refused(tmp_path / "crc.png", "checksum")


def test_missing_empty_garbage_and_other_formats(tmp_path, photo):
    _refused(tmp_path / "nothing.jpg", "no such file")
    (tmp_path / "empty.jpg").write_bytes(b"")
    _refused(tmp_path / "empty.jpg", "empty")
    (tmp_path / "text.png").write_text("not an image")
    _refused(tmp_path / "text.png", "not a readable image")
    (tmp_path / "dir.jpg").mkdir()
    _refused(tmp_path / "dir.jpg", "not a file")
    atomic_imwrite(tmp_path / "p.bmp", photo)
    assert np.array_equal(read_image(tmp_path / "p.bmp"), photo)


def test_size_limits_checked_before_decoding(tmp_path, photo):
    atomic_imwrite(tmp_path / "p.jpg", photo); atomic_imwrite(tmp_path / "p.png", photo)
    with pytest.raises(ImageReadError, match="limit"): read_image(tmp_path / "p.jpg", max_bytes=1000)
    for name in ("p.jpg", "p.png"):
        with pytest.raises(ImageReadError, match="too large: 320×240"): read_image(tmp_path / name, max_pixels=320 * 239)
    with pytest.raises(ImageReadError, match="<upload>"): decode_image(b"\xff\xd8\xff\xe0junk", "<upload>")


def test_user_image_refusals_name_the_file_and_say_why(tmp_path, photo):
    atomic_imwrite(tmp_path / "p.jpg", photo)
    img, notes = read_user_image(tmp_path / "p.jpg")
    assert np.array_equal(img, read_image(tmp_path / "p.jpg")) and notes == []
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ImageReadError) as e: read_user_image(tmp_path / "notes.png")
    assert e.value.reason.startswith("not an image: the content is not JPEG, PNG, BMP, TIFF or WebP (it starts with b'not")
    assert str(e.value) == f"{tmp_path / 'notes.png'}: {e.value.reason}" and e.value.path == tmp_path / "notes.png"
    jpg = (tmp_path / "p.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(jpg[: len(jpg) * 4 // 10] + b"\xff\xd9")     # cut short, end marker added
    with pytest.raises(ImageReadError) as e: read_user_image(tmp_path / "cut.jpg")
    assert e.value.reason.startswith("damaged JPEG: ")                               # strict, as `read_image`
    with pytest.raises(ImageReadError) as e: read_user_image(tmp_path / "p.jpg", 16, 1000)
    assert e.value.reason == "too large: 320×240 px (0 MP) is over the 0 MP limit (--max_pixels); downscale it or raise the limit"
    with pytest.raises(ImageReadError) as e: read_user_image(tmp_path / "p.jpg", 256)
    assert e.value.reason == "too small: 320×240 px; an image needs at least 256 px on each side to show two hands"
    with pytest.raises(ImageReadError) as e: read_user_image(tmp_path / "p.jpg", max_bytes=100)
    assert e.value.reason == (f"file too large: {len(jpg) / 1024:,.0f} KB is over the 100 bytes limit for an image file "
                              "(--max_file_mb); is it an image?")                # the real sizes, not "0 MB" of "0 MB"
    with pytest.raises(ImageReadError) as e: read_user_image(tmp_path / "gone.jpg")
    assert e.value.reason == "cannot read the file: No such file or directory"
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty file"): read_user_image(tmp_path / "empty.png")


@pytest.mark.parametrize("name, make, note", [
    ("deep.png", lambda g: g[..., 0].astype(np.uint16) * 257, "16-bit image scaled to 8 bits"),
    ("gray.png", lambda g: g[..., 0], "grayscale image converted to colour"),
    ("rgba.png", lambda g: np.dstack([g, np.full(g.shape[:2], 128, np.uint8)]), "alpha channel composited over black"),
    ("float.tiff", lambda g: g.astype(np.float32) / 255, "floating-point image scaled from [0, 1]")])
def test_user_image_any_depth_and_channels_become_bgr8_with_a_note(tmp_path, photo, name, make, note):
    cv2.imwrite(str(tmp_path / name), make(photo))
    img, notes = read_user_image(tmp_path / name)
    assert img.shape == photo.shape and img.dtype == np.uint8 and note in notes
    want = {"deep.png": np.repeat(photo[..., :1], 3, 2), "gray.png": np.repeat(photo[..., :1], 3, 2),
            "rgba.png": np.round(photo * (128 / 255)), "float.tiff": photo}[name]
    assert np.abs(img.astype(int) - want).max() <= 1


def test_sigkill_leaves_a_temp_that_remove_stale_temps_removes(tmp_path):
    code = ("import os, signal, sys\nfrom intaghand.io import atomic_write\n"
            "with atomic_write(sys.argv[1]) as f:\n    f.write(b'x' * 1000); f.flush(); os.kill(os.getpid(), signal.SIGKILL)\n")
    (tmp_path / "keep.pkl").write_bytes(b"done")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "sub" / "5.pkl")], timeout=120)
    assert r.returncode == -signal.SIGKILL
    left = [p.name for p in (tmp_path / "sub").iterdir()]
    assert len(left) == 1 and left[0].startswith(".5.pkl.") and left[0].endswith(".tmp")
    (tmp_path / "sub" / ".hidden.tmp").write_bytes(b"someone else's")        # not atomic_write's name shape
    (tmp_path / ".report.json.abcd1234.tmp").write_bytes(b"")
    assert remove_stale_temps(tmp_path, "*.pkl") == []                      # not recursive: sub/ untouched
    assert [p.name for p in remove_stale_temps(tmp_path, "*.pkl", recursive=True)] == left
    assert remove_stale_temps(tmp_path, "*.json", min_age=3600) == []       # too fresh: maybe still being written
    assert [p.name for p in remove_stale_temps(tmp_path, "report.json")] == [".report.json.abcd1234.tmp"]
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == [".hidden.tmp"]
    assert (tmp_path / "keep.pkl").read_bytes() == b"done"


class _Evil:
    def __reduce__(self): return (os.system, ("echo pwned",))


def test_malicious_pickle_is_one_line_naming_file_and_global(tmp_path):
    atomic_pickle({"x": _Evil()}, tmp_path / "MANO_RIGHT.pkl")
    with pytest.raises(ValueError) as e: safe_load_pickle(tmp_path / "MANO_RIGHT.pkl")
    assert isinstance(e.value, UnsafePickleError)
    msg = str(e.value)
    assert str(tmp_path / "MANO_RIGHT.pkl") in msg and "'posix.system'" in msg and "\n" not in msg, msg
    frames = traceback.extract_tb(e.value.__traceback__)
    assert frames[-1].name == "safe_load_pickle", [f.name for f in frames]   # not from inside the unpickler
    assert e.value.__context__ is None or e.value.__suppress_context__


def test_garbage_and_empty_pickles_name_the_file(tmp_path):
    (tmp_path / "3.pkl").write_bytes(np.random.default_rng(0).integers(0, 255, 500).astype(np.uint8).tobytes())
    (tmp_path / "4.pkl").write_bytes(b"")
    (tmp_path / "5.pkl").write_bytes(pickle.dumps({"a": 1})[:-5])
    for name in ("3.pkl", "4.pkl", "5.pkl"):
        with pytest.raises(PickleReadError) as e: safe_load_pickle(tmp_path / name)
        assert isinstance(e.value, ValueError) and isinstance(e.value, pickle.UnpicklingError)
        assert f"{tmp_path / name} is not a readable pickle" in str(e.value)
    with pytest.raises(PickleReadError, match="empty file"): safe_load_pickle(tmp_path / "4.pkl")


def test_checkpoint_errors(tmp_path):
    torch = pytest.importorskip("torch")
    (tmp_path / "text.pth").write_text("these are weights\n")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"): load_checkpoint(tmp_path / "text.pth")
    with pytest.raises(CheckpointError, match=r"empty file \(0 bytes\)"): load_checkpoint(tmp_path / "empty.pth")
    atomic_torch_save({"w": torch.ones(3)}, tmp_path / "ok.pth")
    data = (tmp_path / "ok.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint") as e: load_checkpoint(tmp_path / "cut.pth")
    assert str(tmp_path / "cut.pth") in str(e.value)
    buf = io.BytesIO(); torch.save({"x": _Evil()}, buf)
    (tmp_path / "evil.pth").write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError) as e: load_checkpoint(tmp_path / "evil.pth")
    msg = str(e.value)
    assert "'posix.system'" in msg and str(tmp_path / "evil.pth") in msg and "\n" not in msg, msg
    assert "weights_only" not in msg and "will likely succeed" not in msg
    assert torch.equal(load_checkpoint(tmp_path / "ok.pth")["w"], torch.ones(3))
