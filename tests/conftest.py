"""Fixtures shared across test files (plain helpers live in ``toy_setup.py``)."""

import pytest
from toy_setup import prepare_toy_root


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    """A prepared tiny toy world (videos, truth, latent shards), once per test module."""
    return prepare_toy_root(tmp_path_factory.mktemp("toy"))
