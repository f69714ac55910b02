"""Dataset readers (genuine-format files written here), cache, splits, device loader."""

from __future__ import annotations

import math
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hybridprune.data import (
    FORMATS,
    DeviceLoader,
    Split,
    augment_batch,
    calibration_batches,
    list_datasets,
    load_dataset,
    load_raw,
    stratified_split,
)
from hybridprune.errors import ConfigError, DataError, UnknownNameError
from hybridprune.models import Normalization

NORM = Normalization((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))


def _pickle(path: Path, obj: dict) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


def write_cifar10(folder: Path, per_batch: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    """The genuine cifar-10-batches-py layout with ``per_batch`` images per file."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in np.arange(per_batch) % 10]
        _pickle(folder / name, {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                                b"filenames": [b"x.png"] * per_batch})
        arrays[name] = data
    _pickle(folder / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)],
                                      b"num_cases_per_batch": per_batch, b"num_vis": 3072})
    return arrays


def write_cifar100(folder: Path, n: int = 200) -> None:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("train", "test"):
        _pickle(folder / name, {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                                b"fine_labels": [int(v) for v in np.arange(n) % 100],
                                b"coarse_labels": [int(v) for v in np.arange(n) % 20]})
    _pickle(folder / "meta", {b"fine_label_names": [f"f{i}".encode() for i in range(100)],
                              b"coarse_label_names": [f"g{i}".encode() for i in range(20)]})


def write_image_folder(root: Path, per_class: int = 6, classes=("cat", "dog", "emu"), size: int = 8) -> None:
    rng = np.random.default_rng(2)
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                img = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
                img.save(root / split / c / f"{i}.{'png' if i % 2 else 'jpg'}")


def test_registry_lists_all_formats():
    assert list_datasets() == ["cifar10", "cifar100", "digits", "image_folder"]
    with pytest.raises(UnknownNameError, match="unknown dataset 'svhn'; choose one of: cifar10, cifar100"):
        load_dataset("svhn", "/nowhere")


def test_cifar10_dir_reads_pixels_and_labels(tmp_path):
    arrays = write_cifar10(tmp_path / "raw" / "cifar-10-batches-py")
    raw, _, hit = load_raw("cifar10", tmp_path / "raw", cache_dir=tmp_path / "cache")
    assert not hit and raw.class_names == [f"c{i}" for i in range(10)]
    assert raw.train_images.shape == (100, 3, 32, 32) and raw.test_images.shape == (20, 3, 32, 32)
    np.testing.assert_array_equal(raw.train_images[20:40].reshape(20, -1), arrays["data_batch_2"])
    np.testing.assert_array_equal(raw.test_images.reshape(20, -1), arrays["test_batch"])
    d = load_dataset("cifar10", tmp_path / "raw", val_size=0.2, cache_dir=tmp_path / "cache")
    assert (len(d.train), len(d.val), len(d.test), d.num_classes) == (80, 20, 20, 10)
    assert d.train.images.dtype == torch.uint8 and d.train.labels.dtype == torch.int64


def test_cifar10_tar_gz(tmp_path):
    arrays = write_cifar10(tmp_path / "src" / "cifar-10-batches-py", per_batch=10)
    (tmp_path / "data").mkdir()
    with tarfile.open(tmp_path / "data" / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    raw, _, _ = load_raw("cifar10", tmp_path / "data", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(raw.train_images[:10].reshape(10, -1), arrays["data_batch_1"])
    assert raw.train_labels.tolist()[:10] == list(range(10))


def test_cifar100_fine_labels_and_top5_classes(tmp_path):
    write_cifar100(tmp_path / "cifar-100-python")
    d = load_dataset("cifar100", tmp_path, val_size=100, cache_dir=tmp_path / "cache")
    assert d.num_classes == 100 and d.class_names[7] == "f7"
    assert (len(d.train), len(d.val), len(d.test)) == (100, 100, 200)
    assert sorted(d.val.labels.tolist()) == list(range(100))  # stratified: one of each class


def test_image_folder_png_exact_and_resize(tmp_path):
    write_image_folder(tmp_path / "imgs")
    d = load_dataset("image_folder", tmp_path / "imgs", val_size=0, cache_dir=tmp_path / "cache")
    assert d.class_names == ("cat", "dog", "emu") and d.train.images.shape == (18, 3, 8, 8)
    png = np.asarray(Image.open(tmp_path / "imgs" / "train" / "dog" / "1.png")).transpose(2, 0, 1)
    np.testing.assert_array_equal(d.train.images[7].numpy(), png)  # dog files sorted: 0.jpg, 1.png
    assert d.train.labels.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    big = load_dataset("image_folder", tmp_path / "imgs", val_size=3, cache_dir=tmp_path / "cache", image_size=16)
    assert big.test.images.shape == (18, 3, 16, 16)


def test_digits_upscaled_with_stratified_test_split(tmp_path):
    d = load_dataset("digits", val_size=0.1, seed=3, cache_dir=tmp_path)
    assert d.image_size == (3, 32, 32) and d.num_classes == 10
    assert len(d.train) + len(d.val) + len(d.test) == 1797
    counts = torch.bincount(d.test.labels, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38  # ~20% of ~180 per class
    assert torch.equal(d.train.images[:, 0], d.train.images[:, 2])  # grey replicated to RGB


def test_cache_is_reused_and_invalidated_on_change(tmp_path, monkeypatch):
    write_image_folder(tmp_path / "imgs", per_class=2)
    raw1, path1, hit1 = load_raw("image_folder", tmp_path / "imgs", cache_dir=tmp_path / "cache")

    def fail(*a, **k):
        raise AssertionError("decoded again although the cache is valid")

    with monkeypatch.context() as m:
        m.setattr(FORMATS.get("image_folder"), "read", fail)
        raw2, path2, hit2 = load_raw("image_folder", tmp_path / "imgs", cache_dir=tmp_path / "cache")
    assert (hit1, hit2, path1) == (False, True, path2)
    np.testing.assert_array_equal(raw1.train_images, raw2.train_images)
    # New content (another size and mtime) -> another key -> decoded afresh.
    target = tmp_path / "imgs" / "train" / "cat" / "1.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(target)
    os.utime(target, ns=(1, 1))
    raw3, path3, hit3 = load_raw("image_folder", tmp_path / "imgs", cache_dir=tmp_path / "cache")
    assert not hit3 and path3 != path1 and raw3.train_images[1].sum() == 0


def test_stratified_split_disjoint_seeded():
    labels = np.repeat(np.arange(5), 40)
    kept, held = stratified_split(labels, 0.25, seed=1)
    assert len(np.intersect1d(kept, held)) == 0 and len(kept) + len(held) == 200
    assert np.bincount(labels[held]).tolist() == [10] * 5
    again, _ = stratified_split(labels, 0.25, seed=1)
    other, _ = stratified_split(labels, 0.25, seed=2)
    assert np.array_equal(kept, again) and not np.array_equal(kept, other)
    with pytest.raises(DataError, match="cannot hold out 3 of 200"):
        stratified_split(labels, 3, seed=0)


def test_load_dataset_val_split_partitions_train(tmp_path):
    d = load_dataset("digits", val_size=0.2, seed=0, cache_dir=tmp_path)
    raw, _, _ = load_raw("digits", cache_dir=tmp_path)

    def key(imgs, labs):
        return sorted(bytes(x.numpy().tobytes()) + bytes([int(y)]) for x, y in zip(imgs, labs))

    both = key(torch.cat([d.train.images, d.val.images]), torch.cat([d.train.labels, d.val.labels]))
    assert both == key(torch.from_numpy(raw.train_images), raw.train_labels)
    assert len(d.val) == math.ceil(0.2 * len(raw.train_labels))
    counts = torch.bincount(d.val.labels)
    assert counts.min() >= 26 and counts.max() <= 32  # stratified: ~20% of each ~115-146-image class
    with pytest.raises(ConfigError, match="val_size"):
        load_dataset("digits", val_size=1.5, cache_dir=tmp_path)


def test_augment_is_a_shifted_or_flipped_crop():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8, generator=g)
    out = augment_batch(x, pad=2, generator=g)
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(6):
        cands = [padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        cands += [c.flip(-1) for c in cands]
        assert any(torch.equal(out[i], c) for c in cands)


def test_device_loader_train_keeps_labels_and_normalises():
    labels = torch.arange(50)
    images = (labels * 5 + 3).to(torch.uint8).view(50, 1, 1, 1).expand(50, 3, 8, 8).contiguous()
    loader = DeviceLoader(Split(images, labels), 16, NORM, train=True, seed=0, drop_last=True)
    batches = list(loader)
    assert len(loader) == len(batches) == 3 and all(x.shape == (16, 3, 8, 8) for x, _ in batches)
    mean, std = torch.tensor(NORM.mean).view(3, 1, 1), torch.tensor(NORM.std).view(3, 1, 1)
    for x, y in batches:
        raw = ((x * std + mean) * 255).round()
        # Image i is filled with 5*i+3: a crop of it holds only that value and the zero padding.
        value = (y * 5 + 3).float().view(-1, 1, 1, 1)
        assert ((raw == value) | (raw == 0)).all() and (raw.amax((1, 2, 3)) == value.flatten()).all()
        assert len(set(y.tolist())) == 16
    ev = list(DeviceLoader(Split(images, labels), 16, NORM))
    assert [len(y) for _, y in ev] == [16, 16, 16, 2]
    torch.testing.assert_close(ev[0][0], (images[:16].float() / 255 - mean) / std)
    cl = next(iter(DeviceLoader(Split(images, labels), 16, NORM, channels_last=True)))[0]
    assert cl.is_contiguous(memory_format=torch.channels_last)


def test_device_loader_seeded_order():
    images = torch.zeros(40, 3, 4, 4, dtype=torch.uint8)
    labels = torch.arange(40)

    def order(s):
        return torch.cat([y for _, y in DeviceLoader(Split(images, labels), 8, NORM, train=True, seed=s)])

    assert torch.equal(order(1), order(1)) and not torch.equal(order(1), order(2))
    assert sorted(order(1).tolist()) == list(range(40))


def test_calibration_batches(tmp_path):
    d = load_dataset("digits", cache_dir=tmp_path)
    cal = calibration_batches(d.train, NORM, 3, batch_size=10, seed=4)
    assert len(cal) == 3 and cal[0][0].shape == (10, 3, 32, 32) and cal[0][0].dtype == torch.float32
    assert torch.equal(cal[1][1], calibration_batches(d.train, NORM, 3, batch_size=10, seed=4)[1][1])


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "image_folder"])
def test_missing_directory_is_named(tmp_path, name):
    with pytest.raises(DataError, match=f"{tmp_path / 'absent'}.*(does not exist)"):
        load_dataset(name, tmp_path / "absent", cache_dir=tmp_path / "c")


def test_wrong_layouts_are_explained(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no cifar10 data: expected cifar-10-batches-py/"):
        load_dataset("cifar10", tmp_path / "empty", cache_dir=tmp_path / "c")
    with pytest.raises(DataError, match="has no train/ folder"):
        load_dataset("image_folder", tmp_path / "empty", cache_dir=tmp_path / "c")
    with pytest.raises(ConfigError, match="needs a data directory"):
        load_dataset("image_folder", None, cache_dir=tmp_path / "c")
    bad = tmp_path / "bad" / "cifar-10-batches-py"
    write_cifar10(bad, per_batch=4)
    _pickle(bad / "data_batch_3", {b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4})
    with pytest.raises(DataError, match="data_batch_3: b'data' is uint8 \\[4, 100\\].*expected uint8 \\[N, 3072\\]"):
        load_dataset("cifar10", tmp_path / "bad", cache_dir=tmp_path / "c")


def test_refuses_pickles_with_code(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, per_batch=4)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": os.getcwd, b"labels": []}))
    with pytest.raises(DataError, match="test_batch is not a CIFAR python pickle"):
        load_dataset("cifar10", tmp_path, cache_dir=tmp_path / "c")


def test_corrupt_image_is_named(tmp_path):
    write_image_folder(tmp_path / "imgs", per_class=2)
    bad = tmp_path / "imgs" / "test" / "dog" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DataError, match=f"cannot decode image {bad}"):
        load_dataset("image_folder", tmp_path / "imgs", cache_dir=tmp_path / "c")


def test_mixed_sizes_need_image_size(tmp_path):
    write_image_folder(tmp_path / "imgs", per_class=2)
    Image.fromarray(np.zeros((5, 7, 3), np.uint8)).save(tmp_path / "imgs" / "train" / "cat" / "odd.png")
    with pytest.raises(DataError, match="mixes image sizes.*pass image_size"):
        load_dataset("image_folder", tmp_path / "imgs", cache_dir=tmp_path / "c")
    d = load_dataset("image_folder", tmp_path / "imgs", cache_dir=tmp_path / "c", image_size=8, val_size=0)
    assert d.train.images.shape == (7, 3, 8, 8)


WRITERS = {
    "cifar10": lambda root: write_cifar10(root / "cifar-10-batches-py", per_batch=10),
    "cifar100": lambda root: write_cifar100(root / "cifar-100-python", n=600),
    "image_folder": lambda root: write_image_folder(root, per_class=4, size=32),
    "digits": lambda root: None,
}


@pytest.mark.parametrize("name", list_datasets())
def test_dataset_contract(tmp_path, name):
    """Every registered dataset: uint8 [N,3,H,W] splits, labels in range, cached on second load."""
    assert name in WRITERS, f"dataset {name!r} needs a writer of small genuine files in WRITERS"
    WRITERS[name](tmp_path / "data")
    kwargs = dict(val_size=0.2, seed=0, cache_dir=tmp_path / "cache")
    d = load_dataset(name, tmp_path / "data", **kwargs)
    for split in (d.train, d.val, d.test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (3, 32, 32) and len(split) > 0
        assert 0 <= int(split.labels.min()) and int(split.labels.max()) < d.num_classes == len(d.class_names)
    _, _, hit = load_raw(name, tmp_path / "data", cache_dir=tmp_path / "cache")
    again = load_dataset(name, tmp_path / "data", **kwargs)
    assert hit and torch.equal(again.val.images, d.val.images) and torch.equal(again.train.labels, d.train.labels)


def test_val_from_test_takes_the_first_part_of_each_class_by_sorted_file_name(tmp_path):
    root = tmp_path / "imgs"
    write_image_folder(root, per_class=2)
    rng = np.random.default_rng(5)
    pixels = {}
    for c in ("cat", "dog", "emu"):
        for f in (root / "test" / c).iterdir():
            f.unlink()
        for name in ("d.png", "b.png", "a.png", "c.png"):  # written out of order
            arr = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / "test" / c / name)
            pixels[(c, name)] = torch.from_numpy(arr).permute(2, 0, 1)
    d = load_dataset("image_folder", root, val_size=0.5, val_from="test", cache_dir=tmp_path / "cache")
    assert (len(d.train), len(d.val), len(d.test)) == (6, 6, 6)  # train keeps every training image
    for split, names in ((d.val, ("a.png", "b.png")), (d.test, ("c.png", "d.png"))):
        want = [pixels[(c, n)] for c in ("cat", "dog", "emu") for n in names]
        assert torch.equal(split.images, torch.stack(want))
        assert split.labels.tolist() == [0, 0, 1, 1, 2, 2]  # balanced: the same part of every class
    again = load_dataset("image_folder", root, val_size=0.5, val_from="test", seed=9, cache_dir=tmp_path / "cache")
    assert torch.equal(again.val.images, d.val.images)  # no seed: anyone rebuilds the same halves


@pytest.mark.parametrize("kwargs, message", [
    ({"val_size": 0.5, "val_from": "valid"}, "val_from must be one of train, test, folder"),
    ({"val_size": 2, "val_from": "test"}, "val_size must be a fraction in (0, 1)"),
    ({"val_size": 0.1, "val_from": "test"}, "leaves validation without that class"),
    ({"val_size": 0.9, "val_from": "test"}, "leaves test without that class"),
])
def test_val_from_bad_input(tmp_path, kwargs, message):
    write_image_folder(tmp_path / "imgs", per_class=4)
    with pytest.raises((ConfigError, DataError)) as err:
        load_dataset("image_folder", tmp_path / "imgs", cache_dir=tmp_path / "cache", **kwargs)
    assert message in str(err.value)


def test_decoding_says_what_it_does_once(tmp_path):
    write_image_folder(tmp_path / "imgs", per_class=2)
    lines = []
    load_dataset("image_folder", tmp_path / "imgs", val_size=0, cache_dir=tmp_path / "cache", say=lines.append)
    assert len(lines) == 2 and lines[0].startswith("decoding the image_folder images") and "cached at" in lines[0]
    assert lines[1].startswith("decoded 12 images in")
    lines.clear()
    load_dataset("image_folder", tmp_path / "imgs", val_size=0, cache_dir=tmp_path / "cache", say=lines.append)
    assert lines == []  # from the cache: nothing to wait for


def test_val_from_folder_validates_on_the_image_folders_own_val_split(tmp_path):
    root = tmp_path / "imgs"
    write_image_folder(root, per_class=2)
    with pytest.raises(DataError, match="needs .*/val/<class>/\\*.jpg beside train/ and test/"):
        load_dataset("image_folder", root, val_from="folder", cache_dir=tmp_path / "cache")
    rng = np.random.default_rng(1)
    pixels = []
    for c in ("cat", "emu"):  # a val/ folder may lack classes; labels follow train/'s class folders
        (root / "val" / c).mkdir(parents=True)
        for name in ("b.png", "a.png"):
            arr = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / "val" / c / name)
            pixels.append((c, name, torch.from_numpy(arr).permute(2, 0, 1)))
    d = load_dataset("image_folder", root, val_from="folder", cache_dir=tmp_path / "cache")
    assert (len(d.train), len(d.val), len(d.test)) == (6, 4, 6)  # train and test stay whole
    want = [p for c, n, p in sorted(pixels, key=lambda t: (t[0], t[1]))]
    assert torch.equal(d.val.images, torch.stack(want)) and d.val.labels.tolist() == [0, 0, 2, 2]
    again = load_dataset("image_folder", root, val_from="folder", cache_dir=tmp_path / "cache")  # from the cache
    assert torch.equal(again.val.images, d.val.images)
    assert len(load_dataset("image_folder", root, val_size=0.5, cache_dir=tmp_path / "cache").train) == 3
    (root / "val" / "owl").mkdir()
    with pytest.raises(DataError, match="val has class folders \\['owl'\\] that .*train lacks"):
        load_dataset("image_folder", root, val_from="folder", cache_dir=tmp_path / "cache")
    with pytest.raises(ConfigError, match="val/ folder of an image_folder dataset"):
        load_dataset("digits", val_from="folder")
