"""Fixtures shared across test files (plain helpers live in ``toy_setup.py``)."""

import pytest

from lvg.data.datamodule import collate_videos
from toy_setup import datamodule, prepare_toy_root, random_dit


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    """A prepared tiny toy world (videos, truth, latent shards), once per test module."""
    return prepare_toy_root(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="session")
def make_dit():
    """Factory of seeded random DiTs: ``make_dit(seed=0, preset="debug", std=None, **overrides)``
    (:func:`toy_setup.random_dit`); each call builds a fresh model, so tests keep their own seeds."""
    return random_dit


@pytest.fixture(scope="module")
def toy_data(toy_root):
    """The toy world's datamodule, set up for fit (train_set, train_dataloader, encoders)."""
    dm = datamodule(toy_root)
    dm.setup("fit")
    return dm


@pytest.fixture
def toy_batch(toy_data):
    """The first video of the training set as a batch of one (the collate every datamodule uses)."""
    return collate_videos([toy_data.train_set[0]])
