"""Datasets and data utilities.

- embedded: :func:`load_digits` (UCI optical digits, shipped in the package, CC BY 4.0)
- text for character language models: :class:`CharVocab`, :class:`TextData` (nanoGPT's contiguous
  90/10 split and random windows), :func:`load_text`, :func:`load_shakespeare` (Tiny Shakespeare,
  shipped in the package)
- file loaders: :func:`load_idx`, :func:`load_mnist` (MNIST, Fashion-MNIST), :func:`load_cifar10`,
  :func:`load_csv`, :func:`load_npz`
- synthetic sets from a seed: :func:`spirals`, :func:`two_moons`, :func:`blobs`, :func:`teacher`
- utilities: :func:`stratified_split`, :func:`batches`, :func:`one_hot`, :func:`standardise`
- re-balancing (training data only): :func:`random_undersample`, :func:`random_oversample`,
  :func:`smote`, :func:`rebalance`; :func:`stratified_kfold` and :func:`cross_validate` (binary,
  imputation/standardisation/re-balancing fitted on the training folds), :class:`MedianImputer`
- preprocessing of tabular features (fit on training rows): :class:`TabularPreprocessor` chaining
  :class:`SimpleImputer`, :class:`CategoryEncoder` (ordinal, one-hot, leave-one-out) and
  :class:`QuantileNormal`
- by name, as the command line uses them: :func:`load_dataset`, :func:`available_datasets`

Loaders only read files; bad input raises ``ValueError``/``TypeError`` naming the argument or path.
"""
from .balance import BALANCE_METHODS, random_oversample, random_undersample, rebalance, smote
from .cifar import load_cifar10
from .cv import MedianImputer, cross_validate, stratified_kfold, zeros_as_missing
from .datasets import Dataset, available_datasets, load_dataset
from .embedded import load_digits
from .idx import load_idx, load_mnist
from .preprocess import CategoryEncoder, QuantileNormal, SimpleImputer, TabularPreprocessor
from .split import (Standardiser, batches, num_batches, one_hot, standardise, stratified_indices,
                    stratified_split)
from .synthetic import blobs, spirals, teacher, two_moons
from .tabular import load_csv, load_npz
from .text import CharVocab, TextData, load_shakespeare, load_text

__all__ = ["load_digits", "load_idx", "load_mnist", "load_cifar10", "load_csv", "load_npz",
           "spirals", "two_moons", "blobs", "teacher", "stratified_indices", "stratified_split",
           "batches", "num_batches", "one_hot", "Standardiser", "standardise", "Dataset",
           "load_dataset", "available_datasets", "random_undersample", "random_oversample", "smote",
           "rebalance", "BALANCE_METHODS", "stratified_kfold", "cross_validate", "MedianImputer",
           "zeros_as_missing", "TabularPreprocessor", "SimpleImputer", "CategoryEncoder",
           "QuantileNormal", "CharVocab", "TextData", "load_text", "load_shakespeare"]
