"""Dataset and loader: augmentation keeps images and labels together, heatmaps, shapes, workers, DDP sampler."""
import socket

import cv2
import numpy as np
import pytest
import torch

from intaghand.config import get_config
from intaghand.dataset import (Augmentation, DataProvider, HandDataset, HandSample, InterHandDataset, augmentation_matrix,
                               apply_affine, collate_samples, make_loader, normalise_3d)
from intaghand.layout import gaussian_heatmaps, hand_labels, sample_files, write_sample
from intaghand.mano import HANDS


class BlobHand(torch.nn.Module):
    "MANO stand-in: a fixed random blob of 778 points (21 of them joints), rotated and translated."
    def __init__(self, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("template", torch.randn(778, 3, generator=g) * torch.tensor([0.03, 0.05, 0.015]))

    def forward_rotmat(self, R, pose, shape, trans):
        v = self.template[None] @ R.transpose(1, 2) + trans[:, None]
        return v, v[:, ::37][:, :21]


def _splat(pts, z, colors, size=256):
    img = np.zeros((size, size, 3), np.uint8)
    for i in np.argsort(-z):
        cv2.circle(img, (int(round(pts[i, 0])), int(round(pts[i, 1]))), 3, tuple(int(c) for c in colors[i]), -1)
    return img


@pytest.fixture(scope="module")
def blob(tmp_path_factory):
    root = tmp_path_factory.mktemp("blob")
    layers = {"left": BlobHand(1), "right": BlobHand(2)}
    rng = np.random.default_rng(0)
    K = np.array([[600., 0, 128], [0, 600, 128], [0, 0, 1]], np.float32)
    for split, n in (("train", 8), ("val", 3)):
        for i in range(n):
            # the left hand sits at negative x: a flip must move it to the right
            anno = {"inter_idx": i, "image": {}, "annotation": {},
                    "mano_params": {h: {"R": np.eye(3, dtype=np.float32)[None], "pose": np.zeros((1, 45), np.float32),
                                        "shape": np.zeros((1, 10), np.float32),
                                        "trans": np.array([[(-0.045 if h == "left" else 0.045), rng.uniform(-.02, .02),
                                                            0.6 + (0.02 if h == "left" else 0)]], np.float32)}
                                    for h in HANDS},
                    "camera": {"R": np.eye(3, dtype=np.float32), "t": np.zeros(3, np.float32), "camera": K}}
            lab = hand_labels(anno, layers)
            pts = np.concatenate([lab["left"]["verts2d"], lab["right"]["verts2d"]])
            z = np.concatenate([lab["left"]["verts3d"][:, 2], lab["right"]["verts3d"][:, 2]])
            mask = _splat(pts, z, [(0, 0, 255)] * 778 + [(0, 255, 0)] * 778)
            dense = _splat(pts, z, np.tile(rng.uniform(0, 255, (778, 3)), (2, 1)))
            hms = {h: gaussian_heatmaps(lab[h]["joints2d"] * 64 / 256) for h in HANDS}
            write_sample(root, split, i, mask // 2 + 20, anno, mask, dense, hms)
    return root, layers


def _on_mask(s: HandSample, size):
    big = cv2.resize(s.mask.numpy().transpose(1, 2, 0), (size, size), interpolation=cv2.INTER_NEAREST)
    hits = n = 0
    for ch, lab in ((0, s.right), (1, s.left)):
        j = np.round(lab.joints2d.numpy()).astype(int)
        ok = (j >= 0).all(1) & (j < size).all(1)
        hits += big[j[ok, 1], j[ok, 0], ch].sum(); n += ok.sum()
    return hits / max(n, 1)


def test_reads_processed_layout(blob):
    root, layers = blob
    ds = InterHandDataset(root, "train", mano_layers=layers)
    assert len(ds) == 8 and len(InterHandDataset(root, "val", mano_layers=layers)) == 3
    s = ds[3]
    assert s.img.dtype == np.uint8 and s.img.shape == (256, 256, 3)
    assert s.hms["right"].shape == (21, 64, 64)
    assert s.hands["left"]["joints3d"].shape == (21, 3) and s.hands["left"]["camera"].shape == (3, 3)
    with pytest.raises(IndexError): ds[8]
    with pytest.raises(FileNotFoundError, match="make-synthetic"): InterHandDataset(root, "test", mano_layers=layers)


def test_augmented_joints_on_masks_and_heatmap_peaks(blob):
    root, layers = blob
    hd = HandDataset(root, "train", cfg=get_config(), mano_layers=layers, seed=1)
    flips = 0
    for i in range(len(hd)):
        for _ in range(3):
            aug = hd.augmentation()
            flips += aug.flip
            s = hd.make_sample(hd.data.load(i, hms=False), aug)
            assert _on_mask(s, 256) > 0.75
            j = torch.cat([s.left.joints2d, s.right.joints2d]).numpy() / 4
            inside = ((j >= 0) & (j < 64)).all(1)
            am = s.hms.flatten(1).argmax(1).numpy()
            peak = np.stack([am % 64, am // 64], 1)
            np.testing.assert_array_equal(peak[inside], np.clip(np.round(j[inside]), 0, 63))
            assert (s.hms.flatten(1).max(1).values[~torch.from_numpy(inside)] == 0).all()
    assert 3 < flips < 21


def test_flip_exchanges_hands(blob):
    root, layers = blob
    hd = HandDataset(root, "train", cfg=get_config(), mano_layers=layers)
    raw = hd.data.load(0, hms=False)
    a, b = hd.make_sample(raw, Augmentation()), hd.make_sample(raw, Augmentation(flip=True))
    # the mirrored left hand becomes the right hand
    np.testing.assert_allclose(b.right.joints2d[:, 0], 255 - a.left.joints2d[:, 0], atol=1e-3)
    np.testing.assert_allclose(b.right.joints2d[:, 1], a.left.joints2d[:, 1], atol=1e-3)
    np.testing.assert_allclose(b.right.verts3d, a.left.verts3d * torch.tensor([-1., 1, 1]), atol=1e-6)
    np.testing.assert_allclose(b.root_rel, a.root_rel * torch.tensor([1., -1, -1]), atol=1e-6)
    assert torch.equal(b.mask[0], a.mask[1].flip(-1)) or (b.mask[0] != a.mask[1].flip(-1)).float().mean() < 0.01
    assert _on_mask(b, 256) > 0.75


def test_rotation_matches_3d(blob):
    "2D rotation of the image and the 3D rotation of the labels agree (up to perspective) for an on-axis camera."
    root, layers = blob
    hd = HandDataset(root, "train", cfg=get_config(), mano_layers=layers)
    raw = hd.data.load(2, hms=False)
    s = hd.make_sample(raw, Augmentation(theta=60))
    d2 = (s.right.joints2d - s.right.joints2d.mean(0)).numpy()
    d3 = (s.right.joints3d - s.right.joints3d.mean(0))[:, :2].numpy()
    cos = (d2 * d3).sum() / np.linalg.norm(d2) / np.linalg.norm(d3)
    assert cos > 0.99


def test_normalisation(blob):
    root, layers = blob
    raw = InterHandDataset(root, "val", mano_layers=layers).load(1, hms=False)
    rel, root_rel, scale = normalise_3d(raw.hands)
    for h in HANDS: assert np.abs(rel[h][1][9]).max() < 1e-6
    bone = np.mean([np.linalg.norm(rel[h][1][9] - rel[h][1][0]) for h in HANDS])
    assert abs(bone - 0.095) < 1e-6
    exp = (raw.hands["right"]["joints3d"][9] - raw.hands["left"]["joints3d"][9]) * scale
    np.testing.assert_allclose(root_rel, exp, rtol=1e-5)


def test_val_path_and_small_preset(blob):
    root, layers = blob
    small = HandDataset(root, "val", cfg=get_config(preset="small"), mano_layers=layers)
    assert not small.train
    s = small[0]
    assert s.img.shape == (3, 128, 128) and s.hms.shape == (42, 32, 32) and s.dense.shape == (3, 32, 32)
    assert _on_mask(s, 128) > 0.75
    again = small[0]
    assert torch.equal(s.img, again.img), "no augmentation off the training split"


def test_files_heatmaps_match_drawn(blob):
    root, layers = blob
    cfg = get_config()
    hf = HandDataset(root, "train", cfg=cfg, mano_layers=layers, hms="files")
    hj = HandDataset(root, "train", cfg=cfg, mano_layers=layers, hms="joints")
    aug = Augmentation(theta=-50, scale=1.05, u=3, flip=True)
    a, b = hf.make_sample(hf.data.load(4), aug), hj.make_sample(hj.data.load(4), aug)
    pa, pb = [np.stack(np.unravel_index(x.hms.flatten(1).argmax(1).numpy(), (64, 64)), 1) for x in (a, b)]
    alive = b.hms.flatten(1).max(1).values.numpy() > 0.5
    assert np.abs(pa - pb)[alive].max() <= 1


def test_loader_workers_and_collate(blob):
    root, layers = blob
    hd = HandDataset(root, "train", cfg=get_config(), mano_layers=layers)
    b = next(iter(make_loader(hd, batch_size=3, num_workers=2, pin_memory=False)))
    assert b.img.shape == (3, 3, 256, 256) and b.ori_img.shape == (3, 3, 256, 256)
    assert b.mask.shape == (3, 2, 64, 64) and b.dense.shape == (3, 3, 64, 64) and b.hms.shape == (3, 42, 64, 64)
    assert b.left.verts2d.shape == (3, 778, 2) and b.right.verts3d.shape == (3, 778, 3) and b.root_rel.shape == (3, 3)
    assert b.idx.shape == (3,) and b.img.dtype == torch.float32
    assert set(torch.unique(b.mask).tolist()) <= {0.0, 1.0}
    assert len(b.as_tuple()) == 14 and b.to("cpu").img.shape == b.img.shape
    from dataclasses import fields
    from intaghand.losses import LossTarget
    named, original = LossTarget.from_sample(b), LossTarget.from_original_batch(b.as_tuple())   # the two doors agree
    flat = lambda t: [getattr(h, f.name) for h in (t.left, t.right) for f in fields(h)]
    assert len(flat(named)) == 8 and all(x is y for x, y in zip(flat(named), flat(original)))
    assert named.root_rel is b.root_rel and named.mask is b.mask and named.dense is b.dense and named.hms is b.hms


def test_workers_draw_different_augmentations(blob):
    root, layers = blob
    hd = HandDataset(root, "train", cfg=get_config(), mano_layers=layers)
    torch.manual_seed(0)
    same = torch.utils.data.Subset(hd, [0, 0, 0, 0])
    imgs = [b.img for b in make_loader(same, batch_size=1, num_workers=2, pin_memory=False, train=False)]
    # the same sample through two workers (and twice in each): all different draws
    assert all(not torch.equal(imgs[i], imgs[j]) for i in range(4) for j in range(i))
    hd2 = HandDataset(root, "train", cfg=get_config(), mano_layers=layers, seed=5)
    hd3 = HandDataset(root, "train", cfg=get_config(), mano_layers=layers, seed=5)
    assert torch.equal(hd2[0].img, hd3[0].img), "a fixed seed repeats the augmentation"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def test_distributed_sampler(blob):
    root, layers = blob
    hd = HandDataset(root, "train", cfg=get_config(), mano_layers=layers)
    dist = torch.distributed
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        loader = make_loader(hd, batch_size=2, num_workers=0, pin_memory=False)
        from torch.utils.data.distributed import DistributedSampler
        assert isinstance(loader.sampler, DistributedSampler)
        prov = DataProvider(loader)
        seen = [next(prov).idx.tolist() for _ in range(8)]
        assert prov.epoch == 1 and sorted(sum(seen[:4], [])) == list(range(8))
        assert sum(seen[:4], []) != sum(seen[4:], []), "set_epoch reshuffles"
    finally:
        dist.destroy_process_group()


# ---- issue 13: gaps in the numbering, strict image reading, the original's background value ----

def _copy(blob, tmp_path):
    import shutil
    root, layers = blob
    shutil.copytree(root, tmp_path / "d")
    return tmp_path / "d", layers


def test_a_missing_annotation_is_reported_and_the_rest_used(blob, tmp_path):
    from intaghand.dataset import MissingSamplesWarning
    root, layers = _copy(blob, tmp_path)
    sample_files(root, "train", 2).anno.unlink()
    with pytest.warns(MissingSamplesWarning, match=r"1 sample\(s\) missing .*indices 2\)"):
        ds = InterHandDataset(root, "train", mano_layers=layers)
    assert len(ds) == 7 and ds.indices == [0, 1, 3, 4, 5, 6, 7] and ds.missing == [2]     # was 2: stopped at the gap
    assert [ds.load(i, hms=False).idx for i in range(7)] == ds.indices
    with pytest.raises(IndexError): ds.load(7)
    hd = HandDataset(ds, cfg=get_config(), train=False)
    assert hd[6].idx.item() == 7 and len(hd) == 7


def test_truncated_images_are_errors_naming_the_file(blob, tmp_path):
    from intaghand.io import ImageReadError
    root, layers = _copy(blob, tmp_path)
    ds = InterHandDataset(root, "train", mano_layers=layers)
    for kind, what in (("img", "image"), ("mask", "mask"), ("dense", "dense map")):
        p = getattr(sample_files(root, "train", 1), kind)
        good = p.read_bytes()
        p.write_bytes(good[:len(good) * 4 // 10] + b"\xff\xd9")           # cut, with an end marker: OpenCV reads it
        assert cv2.imread(str(p)) is not None
        with pytest.raises(ImageReadError, match="damaged JPEG") as e: ds.load(1, hms=False)
        assert str(e.value).startswith(f"{what} {p}")
        p.write_bytes(good)
    sample_files(root, "train", 1).mask.unlink()
    with pytest.raises(FileNotFoundError, match="rendering pass"): ds.load(1)


def test_background_value_one_keeps_the_targets(blob, tmp_path):
    "Masks / dense maps stored with the original's background 1 give the mask targets and masked dense targets of 0."
    from intaghand.layout import read_anno
    from intaghand.io import atomic_imwrite
    root, layers = blob
    yy, xx = np.mgrid[:256, :256]
    mask = np.zeros((256, 256, 3), np.uint8)
    mask[..., 2] = ((xx - 90) ** 2 + (yy - 120) ** 2 < 50 ** 2) * 255                 # left hand
    mask[..., 1] = (((xx - 170) ** 2 + (yy - 130) ** 2 < 45 ** 2) & (mask[..., 2] == 0)) * 255
    dense = np.zeros((256, 256, 3), np.uint8)
    hand = mask[..., 1:].any(-1)
    dense[hand] = np.stack([xx, yy, 255 - xx], -1)[hand].astype(np.uint8)
    img, anno = cv2.imread(str(sample_files(root, "train", 0).img)), read_anno(root, "train", 0)
    write_sample(tmp_path / "one", "train", 0, img, anno, mask, dense)                  # the original's background 1
    write_sample(tmp_path / "zero", "train", 0, img, anno)
    f = sample_files(tmp_path / "zero", "train", 0)
    atomic_imwrite(f.mask, mask); atomic_imwrite(f.dense, dense)                        # background 0, as before
    stored = cv2.imread(str(sample_files(tmp_path / "one", "train", 0).mask))
    assert np.median(stored[~hand]) == 1 and np.median(cv2.imread(str(sample_files(tmp_path / "one", "train", 0).dense))[~hand]) == 1
    one, zero = (HandDataset(InterHandDataset(tmp_path / k, "train", mano_layers=layers, with_rendered=True), cfg=get_config(),
                             train=False, hms="joints").make_sample(
                     InterHandDataset(tmp_path / k, "train", mano_layers=layers).load(0, hms=False), Augmentation())
                 for k in ("one", "zero"))
    assert set(torch.unique(one.mask).tolist()) == {0.0, 1.0}
    assert (one.mask != zero.mask).sum() <= 0.005 * one.mask.sum(), int((one.mask != zero.mask).sum())
    both = one.mask.amax(0, keepdim=True)
    diff = (one.dense - zero.dense).mul(both).abs()
    assert diff.max() < 0.05 and diff.mean() < 0.002
    bgd = one.dense[:, both[0] == 0]
    assert ((bgd - 1 / 255).abs() < 0.004).float().mean() > 0.9         # background 1/255, as the original's loader gives
