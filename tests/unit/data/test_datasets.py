from __future__ import annotations

import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from distree_mqtt.data import DataSpec, load_dataset
from distree_mqtt.data.camera_like import camera_like


def test_bundled_mnist_has_fixed_disjoint_splits() -> None:
    first, second = load_dataset(DataSpec()), load_dataset(DataSpec())
    assert (len(first.train), len(first.test)) == (7001, 2000)
    assert len(first.val) == 2 * 999  # clean + camera-like copies of the same 999 digits
    assert np.array_equal(first.test.images, second.test.images)
    train_keys = {image.tobytes() for image in first.train.images}
    assert not any(image.tobytes() in train_keys for image in first.test.images[:500])
    assert first.train.images.dtype == np.uint8 and first.train.images.shape[1:] == (1, 28, 28)
    assert set(np.bincount(first.test.labels)) <= set(range(150, 250))  # stratified


def test_camera_like_is_deterministic_and_varies_in_difficulty() -> None:
    images = load_dataset(DataSpec()).test.images[:200, 0]
    first, difficulty = camera_like(images, seed=3)
    again, _ = camera_like(images, seed=3)
    other, _ = camera_like(images, seed=4)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert difficulty.min() < 0.2 and difficulty.max() > 0.8
    change = np.abs(first.astype(int) - images.astype(int)).mean(axis=(1, 2))
    assert np.corrcoef(difficulty, change)[0, 1] > 0.5  # harder draws distort more


def _write_folder(root: Path, per_class: int = 4) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in ("cat", "dog"):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(per_class):
                cv2.imwrite(str(folder / f"{index}.png"), rng.integers(0, 255, (12, 12, 3), dtype=np.uint8))


def test_image_folder_from_a_directory_and_a_tarball(tmp_path: Path) -> None:
    _write_folder(tmp_path / "pets", per_class=60)
    spec = DataSpec(name="imagefolder", path=tmp_path / "pets", val_size=100, cache_dir=tmp_path / "cache")
    splits = load_dataset(spec)
    assert splits.class_names == ["cat", "dog"]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (20, 100, 120)
    assert splits.train.images.shape[1:] == (3, 12, 12)
    with tarfile.open(tmp_path / "pets.tar.gz", "w:gz") as archive:
        archive.add(tmp_path / "pets", arcname="pets")
    from_tar = load_dataset(spec.model_copy(update={"path": tmp_path / "pets.tar.gz"}))
    assert np.array_equal(from_tar.test.images, splits.test.images)
    # Extracted and cached by rename: nothing half-written is left beside the finished copies.
    extracted = list((tmp_path / "cache" / "extracted").iterdir())
    assert len(extracted) == 1 and (extracted[0] / "pets" / "train" / "cat").is_dir()
    assert not list((tmp_path / "cache").glob("*partial*"))


def test_an_archive_already_extracted_by_another_run_is_reused(tmp_path: Path) -> None:
    _write_folder(tmp_path / "pets", per_class=60)
    with tarfile.open(tmp_path / "pets.tar.gz", "w:gz") as archive:
        archive.add(tmp_path / "pets", arcname="pets")
    spec = DataSpec(name="imagefolder", path=tmp_path / "pets.tar.gz", val_size=100, cache_dir=tmp_path / "c")
    first = load_dataset(spec)
    for cached in (tmp_path / "c").glob("*.npz"):
        cached.unlink()  # force a second read of the extracted tree
    second = load_dataset(spec)
    assert np.array_equal(first.train.images, second.train.images)
    assert len(list((tmp_path / "c" / "extracted").iterdir())) == 1


def test_a_broken_archive_leaves_no_partial_extraction(tmp_path: Path) -> None:
    (tmp_path / "broken.tar.gz").write_bytes(b"not a tar archive")
    spec = DataSpec(name="imagefolder", path=tmp_path / "broken.tar.gz", cache_dir=tmp_path / "c")
    with pytest.raises(ValueError, match=r"broken\.tar\.gz: not a readable tar archive"):
        load_dataset(spec)
    assert not list((tmp_path / "c" / "extracted").iterdir())


def test_image_folder_errors_are_clear(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class sub-folders"):
        load_dataset(DataSpec(name="imagefolder", path=tmp_path / "empty", cache_dir=tmp_path / "c"))
    with pytest.raises(ValueError, match=r"data\.path is required"):
        load_dataset(DataSpec(name="imagefolder"))
    (tmp_path / "bad" / "a").mkdir(parents=True)
    (tmp_path / "bad" / "a" / "x.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot decode image"):
        load_dataset(DataSpec(name="imagefolder", path=tmp_path / "bad", cache_dir=tmp_path / "c"))
