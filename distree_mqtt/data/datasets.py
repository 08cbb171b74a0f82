"""Data sets as uint8 arrays with fixed train/validation/test splits.

Every source yields an `ImageSet` per split: images (N, C, H, W) uint8 and int64 labels. Splits
are fixed by a seed so training, calibration and evaluation always see the same images.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from distree_mqtt.data.camera_like import camera_like

MNIST_ASSET = Path(__file__).parent / "assets" / "mnist-10k.npz"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
SPLIT_SEED = 20251


@dataclass(frozen=True)
class ImageSet:
    images: np.ndarray  # (N, C, H, W) uint8
    labels: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class DatasetSplits:
    name: str
    class_names: list[str]
    train: ImageSet
    val: ImageSet
    test: ImageSet
    # Extra evaluation splits, e.g. the camera-like test variant for MNIST.
    extra_tests: dict[str, ImageSet]
    # Draws a fresh camera-like copy of the training images each epoch, where the set has one.
    camera_like_train: bool = False


class DataSpec(BaseModel):
    """Which data set to train and evaluate on."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["mnist", "imagefolder", "cifar10"] = Field("mnist", title="Data set source")
    path: Path | None = Field(
        None, title="ImageFolder directory or .tar.gz (imagefolder), download root (cifar10)"
    )
    val_size: int = Field(5000, title="Images held out of training for calibration", ge=100)
    test_fraction: float = Field(
        0.2, title="Share held out for testing when the folder has no test/ split", gt=0, lt=1
    )
    grayscale: bool = Field(False, title="Decode images as one channel")
    image_size: int | None = Field(None, title="Resize square images to this size", ge=8)
    cache_dir: Path = Field(Path(".cache/distree"), title="Where decoded arrays are cached")
    train_limit: int | None = Field(None, title="Use only this many training images (quick runs)", ge=1)


def load_dataset(spec: DataSpec) -> DatasetSplits:
    if spec.name == "mnist":
        splits = load_mnist()
    elif spec.name == "imagefolder":
        if spec.path is None:
            raise ValueError("data.path is required for an imagefolder data set")
        splits = load_image_folder(spec)
    else:
        splits = load_cifar10_torchvision(spec)
    if spec.train_limit is not None:
        # A random subset: the splits are ordered by class, so a prefix would hold one class.
        keep = np.sort(np.random.default_rng(SPLIT_SEED).permutation(len(splits.train))[: spec.train_limit])
        train = ImageSet(splits.train.images[keep], splits.train.labels[keep])
        splits = dataclasses.replace(splits, train=train)
    return splits


def load_mnist() -> DatasetSplits:
    """The bundled 10,000 digits: 7,000 train, 1,000 validation, 2,000 test (stratified)."""
    with np.load(MNIST_ASSET) as archive:
        images, labels = archive["images"], archive["labels"].astype(np.int64)
    test_index, val_index, train_index = _stratified_split(labels, [2000, 1000], SPLIT_SEED)
    test = ImageSet(images[test_index][:, None], labels[test_index])
    camera_images, _ = camera_like(images[test_index], seed=SPLIT_SEED + 1)
    val_camera, _ = camera_like(images[val_index], seed=SPLIT_SEED + 2)
    # Validation mixes clean and camera-like images so calibration sees both kinds of input.
    val = ImageSet(
        np.concatenate([images[val_index], val_camera])[:, None],
        np.concatenate([labels[val_index], labels[val_index]]),
    )
    return DatasetSplits(
        name="mnist",
        class_names=[str(digit) for digit in range(10)],
        train=ImageSet(images[train_index][:, None], labels[train_index]),
        val=val,
        test=test,
        extra_tests={"camera": ImageSet(camera_images[:, None], labels[test_index])},
        camera_like_train=True,
    )


def _stratified_split(labels: np.ndarray, sizes: list[int], seed: int) -> list[np.ndarray]:
    """Split indices into len(sizes)+1 parts with per-class proportions kept; the rest last."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(sizes) + 1)]
    total = len(labels)
    for label in np.unique(labels):
        index = rng.permutation(np.flatnonzero(labels == label))
        start = 0
        for part, size in enumerate(sizes):
            take = round(size * len(index) / total)
            parts[part].append(index[start : start + take])
            start += take
        parts[-1].append(index[start:])
    return [np.sort(np.concatenate(part)) for part in parts]


def load_image_folder(spec: DataSpec) -> DatasetSplits:
    """`root/<class>/<image>` or `root/{train,test}/<class>/<image>`, from a folder or .tar.gz."""
    assert spec.path is not None
    root = _materialise(spec.path, spec.cache_dir)
    cache = _cache_file(spec, root)
    if cache.exists():
        with np.load(cache) as archive:
            arrays = {key: archive[key] for key in archive.files}
        class_names = [str(name) for name in arrays.pop("class_names")]
    else:
        train_dir = root / "train" if (root / "train").is_dir() else root
        class_names = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
        if not class_names:
            raise ValueError(f"{train_dir}: no class sub-folders found (expected <class>/<image>)")
        arrays = {}
        arrays["train_images"], arrays["train_labels"] = _read_folder(train_dir, class_names, spec)
        if (root / "test").is_dir():
            arrays["test_images"], arrays["test_labels"] = _read_folder(root / "test", class_names, spec)
        cache.parent.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed, so a concurrent run never reads a half-written cache.
        partial = cache.with_name(f"{cache.stem}.{os.getpid()}.partial.npz")
        np.savez(partial, class_names=np.array(class_names), **arrays)
        partial.replace(cache)
    images, labels = arrays["train_images"], arrays["train_labels"].astype(np.int64)
    if "test_images" in arrays:
        test = ImageSet(arrays["test_images"], arrays["test_labels"].astype(np.int64))
        val_index, train_index = _stratified_split(labels, [spec.val_size], SPLIT_SEED)
    else:
        test_size = round(spec.test_fraction * len(labels))
        test_index, val_index, train_index = _stratified_split(labels, [test_size, spec.val_size], SPLIT_SEED)
        test = ImageSet(images[test_index], labels[test_index])
    return DatasetSplits(
        name=root.name,
        class_names=class_names,
        train=ImageSet(images[train_index], labels[train_index]),
        val=ImageSet(images[val_index], labels[val_index]),
        test=test,
        extra_tests={},
    )


def _materialise(path: Path, cache_dir: Path) -> Path:
    """A folder as is; a .tar.gz extracted once into the cache. Returns the data root."""
    if path.is_dir():
        return _single_child_root(path)
    if not path.is_file() or not path.name.endswith((".tar.gz", ".tgz", ".tar")):
        raise ValueError(f"{path}: not a folder or a .tar.gz archive")
    target = cache_dir / "extracted" / _fingerprint(path)
    if not target.is_dir():
        # Extracted aside and renamed into place: concurrent runs (training beside an evaluation)
        # never see a half-extracted tree; the one that loses the race drops its copy.
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=target.parent))
        try:
            with tarfile.open(path) as archive:
                archive.extractall(partial, filter="data")
            partial.rename(target)
        except tarfile.TarError:
            raise ValueError(f"{path}: not a readable tar archive") from None
        except OSError:
            if not target.is_dir():
                raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)  # gone after the rename; else a leftover
    return _single_child_root(target)


def _single_child_root(path: Path) -> Path:
    """Archives often wrap the data in one top folder (cifar10/train/...): step into it."""
    children = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(children) == 1 and not any(
        p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir()
    ):
        inner = children[0]
        if any(c.is_dir() for c in inner.iterdir()) and inner.name not in {"train", "test"}:
            return inner
    return path


def _fingerprint(path: Path) -> str:
    stat = path.stat()
    return hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]


def _cache_file(spec: DataSpec, root: Path) -> Path:
    key = f"{_fingerprint(root)}:{spec.grayscale}:{spec.image_size}"
    return spec.cache_dir / f"imagefolder-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def _read_folder(folder: Path, class_names: list[str], spec: DataSpec) -> tuple[np.ndarray, np.ndarray]:
    flag = cv2.IMREAD_GRAYSCALE if spec.grayscale else cv2.IMREAD_COLOR
    images: list[np.ndarray] = []
    labels: list[int] = []
    for label, name in enumerate(class_names):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue
        for file in sorted(class_dir.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            image = cv2.imread(str(file), flag)
            if image is None:
                raise ValueError(f"{file}: cannot decode image")
            if spec.image_size is not None and image.shape[:2] != (spec.image_size, spec.image_size):
                image = cv2.resize(image, (spec.image_size, spec.image_size), interpolation=cv2.INTER_AREA)
            image = image[:, :, None] if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            images.append(image.transpose(2, 0, 1))
            labels.append(label)
    if not images:
        raise ValueError(f"{folder}: no images found")
    shapes = {image.shape for image in images}
    if len(shapes) != 1:
        raise ValueError(f"{folder}: images differ in size {sorted(shapes)[:3]}; set data.image_size")
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def load_cifar10_torchvision(spec: DataSpec) -> DatasetSplits:
    """CIFAR-10 through torchvision's downloader (needs internet; not used by the tests)."""
    try:
        from torchvision.datasets import CIFAR10  # type: ignore[import-untyped]
    except ImportError as error:
        raise RuntimeError(
            "data set 'cifar10' needs torchvision (pip install torchvision), or point an "
            "imagefolder data set at an extracted copy"
        ) from error
    root = spec.path or spec.cache_dir / "cifar10"
    train = CIFAR10(str(root), train=True, download=True)
    test = CIFAR10(str(root), train=False, download=True)
    images = np.asarray(train.data).transpose(0, 3, 1, 2)
    labels = np.asarray(train.targets, dtype=np.int64)
    val_index, train_index = _stratified_split(labels, [spec.val_size], SPLIT_SEED)
    return DatasetSplits(
        name="cifar10",
        class_names=list(train.classes),
        train=ImageSet(images[train_index], labels[train_index]),
        val=ImageSet(images[val_index], labels[val_index]),
        test=ImageSet(np.asarray(test.data).transpose(0, 3, 1, 2), np.asarray(test.targets, dtype=np.int64)),
        extra_tests={},
    )
