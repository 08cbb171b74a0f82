"""Data sets: the bundled MNIST reference set, its camera-like variant, and ImageFolder trees."""

from distree_mqtt.data.datasets import DatasetSplits, DataSpec, ImageSet, load_dataset

__all__ = ["DataSpec", "DatasetSplits", "ImageSet", "load_dataset"]
