"""Shared pytest fixtures for tests/ and parity_tests/."""

import jax
import pytest


@pytest.fixture
def x64():
    """Enable float64 in JAX for one test and restore the previous setting afterwards."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


@pytest.fixture(scope="session")
def shared_tinyshakespeare():
    """Path of the shared TinyShakespeare copy (../shared/data), or skip when it is absent."""
    import pathlib

    path = pathlib.Path(__file__).resolve().parent.parent / "shared" / "data" / "tinyshakespeare.txt"
    if not path.is_file():
        pytest.skip(f"shared corpus not found at {path} (tests read it from ../shared/data only)")
    return path
