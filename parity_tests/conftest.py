"""Fixtures shared by the parity tests."""

import jax
import pytest


@pytest.fixture(params=["float64", "float32"])
def dtype(request):
    """Each parity test runs in float64 (x64 enabled, restored afterwards) and float32."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", request.param == "float64")
    yield request.param
    jax.config.update("jax_enable_x64", previous)
