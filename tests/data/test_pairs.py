"""Generated verification pairs: balanced, distinct, fold-consistent, seeded."""

import numpy as np
import pytest

from facemetric.data.digits import load_digits_split
from facemetric.data.pairs import generate_pairs
from facemetric.errors import DataError


def _check(labels, pairs, pairs_per_fold, n_folds):
    assert len(pairs) == pairs_per_fold * n_folds
    same = labels[pairs.first] == labels[pairs.second]
    np.testing.assert_array_equal(same, pairs.issame)
    assert (pairs.first != pairs.second).all()
    keys = {(min(a, b), max(a, b)) for a, b in zip(pairs.first, pairs.second, strict=True)}
    assert len(keys) == len(pairs)  # no repeated pair
    for f in range(n_folds):
        in_fold = pairs.fold == f
        assert in_fold.sum() == pairs_per_fold
        assert pairs.issame[in_fold].sum() == pairs_per_fold // 2


def test_image_folds_when_few_identities():
    labels = np.repeat(np.arange(10), 30)
    pairs = generate_pairs(labels, pairs_per_fold=40, n_folds=10, seed=1)
    _check(labels, pairs, 40, 10)
    # images are split into folds: an image never appears in two folds
    fold_of = {}
    for a, b, f in zip(pairs.first, pairs.second, pairs.fold, strict=True):
        for i in (a, b):
            assert fold_of.setdefault(int(i), int(f)) == f


def test_identity_disjoint_folds_when_many_identities():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(60), rng.integers(2, 6, size=60))
    pairs = generate_pairs(labels, pairs_per_fold=20, n_folds=5, seed=2)
    _check(labels, pairs, 20, 5)
    fold_of = {}
    for a, b, f in zip(pairs.first, pairs.second, pairs.fold, strict=True):
        for i in (a, b):
            assert fold_of.setdefault(int(labels[i]), int(f)) == f


def test_seeded():
    labels = np.repeat(np.arange(10), 20)
    a = generate_pairs(labels, 20, 5, seed=7)
    b = generate_pairs(labels, 20, 5, seed=7)
    c = generate_pairs(labels, 20, 5, seed=8)
    np.testing.assert_array_equal(a.first, b.first)
    assert not np.array_equal(a.first, c.first)


def test_errors():
    with pytest.raises(DataError, match="labels"):
        generate_pairs(np.array([]), 10, 2)
    with pytest.raises(DataError, match="n_folds"):
        generate_pairs(np.arange(10), 10, 1)
    with pytest.raises(DataError, match="genuine"):
        generate_pairs(np.repeat(np.arange(4), 2), 40, 2)  # too few distinct genuine pairs


def test_digits_split_is_stratified_and_standardised():
    split = load_digits_split(input_size=16, test_fraction=0.3, seed=0)
    assert len(split.train) + len(split.test) == 1797
    assert split.train.images.shape[1:] == (1, 16, 16)
    assert set(split.test.labels.tolist()) == set(range(10))
    assert abs(float(split.train.images.mean())) < 1e-4
    assert abs(float(split.train.images.std()) - 1) < 1e-3
