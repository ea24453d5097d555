"""Data: loaders for real datasets, built-in generators, preprocessing, augmentation, folds."""

from .augment import AugmentParams, augment_to
from .dataset import Dataset
from .registry import REGISTRY, dataset_names, load_dataset

__all__ = ["AugmentParams", "Dataset", "REGISTRY", "augment_to", "dataset_names", "load_dataset"]
