"""Both backends' layer registries name exactly physnets_core's slot choices (SLOTS)."""

import pytest

from physnets_core.config import SLOTS
from physnets_jax import layers as jl
from physnets_torch import layers as tl

REGISTRIES = {"embedding": "EMBEDDINGS", "mixer": "MIXERS", "mlp": "MLPS", "residual": "RESIDUALS", "head": "HEADS"}


@pytest.mark.parametrize("slot", sorted(SLOTS))
def test_registries_match_core_slots(slot):
    registry = REGISTRIES[slot]
    assert set(getattr(jl, registry)) == set(SLOTS[slot]), f"physnets_jax.layers.{registry}"
    assert set(getattr(tl, registry)) == set(SLOTS[slot]), f"physnets_torch.layers.{registry}"


def test_twin_classes_have_the_same_names():
    for registry in REGISTRIES.values():
        j, t = getattr(jl, registry), getattr(tl, registry)
        assert {k: v.__name__ for k, v in j.items()} == {k: v.__name__ for k, v in t.items()}, registry
