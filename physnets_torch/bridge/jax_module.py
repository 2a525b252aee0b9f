"""JaxModule: a physnets_jax NNX model as a torch.nn.Module (parameters named like the
physnets_torch twin's state_dict)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.utils.dlpack

from physnets_torch.bridge.interop import _Bridge, jax_device_for

# ---------------------------------------------------------------------------------------------
# 4. JaxModule: an NNX model as a torch.nn.Module
# ---------------------------------------------------------------------------------------------


class _ParamGroup(torch.nn.Module):
    """Container that gives JaxModule's parameters their dotted physnets_torch names."""


def _model_bridge(graphdef, treedef, names: tuple[str, ...], jit: bool) -> _Bridge:
    """The bridged pure function of an NNX model split as (graphdef, params, rest): one per
    graph structure, shared by every JaxModule of that structure (one compile per process)."""
    key = (graphdef, treedef, names, jit)
    found = _MODEL_BRIDGES.get(key)
    if found is None:
        from flax import nnx

        from physnets_torch.convert import swap_layout  # an involution: also the inverse

        def apply(torch_params, rest, args, kwargs):
            leaves = [swap_layout(n, v) for n, v in zip(names, torch_params, strict=True)]
            model = nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves), rest)
            out = model(*args, **kwargs)
            return out, nnx.split(model, nnx.Param, ...)[2]

        found = _MODEL_BRIDGES[key] = _Bridge(apply, jit=jit, has_aux=True)
    return found


_MODEL_BRIDGES: dict[tuple, _Bridge] = {}


class JaxModule(torch.nn.Module):
    """A physnets_jax NNX model as a torch.nn.Module: one nn.Parameter per nnx.Param, named and
    laid out as in the physnets_torch twin's state_dict (physnets_torch.convert's rule set);
    forward(*args, **kwargs) runs the jitted JAX model, backward its VJP.

    Training mode follows torch: `.train()` / `.eval()` switch the JAX model's dropout.
    Non-parameter NNX state (dropout RNG streams, statistics) stays on the JAX side and is
    carried from call to call. `to_jax()` returns the NNX model with the current torch values.
    """

    def __init__(self, model, *, jit: bool = True):
        super().__init__()
        from flax import nnx

        from physnets_torch import convert

        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        # jax names in the order of the params pytree's leaves (a state of name strings)
        flat = nnx.to_flat_state(params)
        names_state = nnx.from_flat_state([(p, v.replace(".".join(map(str, p)))) for p, v in flat])
        jax_names = tuple(jax.tree.leaves(names_state))
        values = dict(zip(jax_names, (np.asarray(a) for a in jax.tree.leaves(params)), strict=True))
        state_dict = convert.jax_to_torch(values)
        self._graphdef = graphdef
        self._treedef = jax.tree.structure(params)
        self._jax_names = jax_names
        self._torch_names = tuple(state_dict)
        self._rest = rest
        self._jit = jit
        self._modes: dict[bool, _Bridge] = {}
        self._model_type = type(model).__name__
        for name, value in state_dict.items():
            *parents, leaf = name.split(".")
            owner = self
            for part in parents:
                child = owner._modules.get(part)
                if child is None:
                    if hasattr(owner, part):
                        raise ValueError(f"parameter {name!r}: {part!r} clashes with a torch.nn.Module attribute")
                    child = _ParamGroup()
                    owner.add_module(part, child)
                owner = child
            if hasattr(owner, leaf) and leaf not in owner._parameters:
                raise ValueError(f"parameter {name!r}: {leaf!r} clashes with a torch.nn.Module attribute")
            trainable = value.is_floating_point() or value.is_complex()
            owner.register_parameter(leaf, torch.nn.Parameter(value, requires_grad=trainable))

    def extra_repr(self) -> str:
        """One line: the wrapped NNX class and the parameter count."""
        return f"jax_model={self._model_type}, params={sum(p.numel() for p in self.parameters())}"

    def _bridge(self) -> _Bridge:
        """The bridge for torch's current training flag (the JAX model's .train()/.eval())."""
        training = self.training
        if training not in self._modes:
            from flax import nnx

            abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), self._params_like())
            model = nnx.merge(self._graphdef, abstract, self._rest)
            model.train() if training else model.eval()
            graphdef = nnx.split(model, nnx.Param, ...)[0]
            self._modes[training] = _model_bridge(graphdef, self._treedef, self._jax_names, self._jit)
        return self._modes[training]

    def _params_like(self):
        """A params pytree (JAX layout, zeros) with the structure of the wrapped model's."""
        from physnets_torch.convert import swap_layout

        leaves = [
            swap_layout(n, np.zeros(tuple(self.get_parameter(t).shape), np.float32))
            for n, t in zip(self._jax_names, self._torch_names, strict=True)
        ]
        return jax.tree.unflatten(self._treedef, leaves)

    def forward(self, *args, **kwargs):
        """The JAX model's output for torch inputs (e.g. tokens (B, T) -> logits (B, T, V))."""
        params = tuple(self.get_parameter(n) for n in self._torch_names)
        rest = self._rest_on(params[0].device if params else torch.device("cpu"))
        out, self._rest = self._bridge()(params, rest, args, kwargs)
        return out

    def _rest_on(self, device: torch.device):
        target = jax_device_for(device, name="JaxModule parameters")
        leaves = jax.tree.leaves(self._rest)
        # committed to the parameters' device, as the state that forward returns will be
        # (an uncommitted first state would cost a second compile)
        if any(not leaf.committed or leaf.devices() != {target} for leaf in leaves):
            self._rest = jax.device_put(self._rest, target)
        return self._rest

    def to_jax(self):
        """The NNX model with this module's current parameter values (copied)."""
        from flax import nnx

        from physnets_torch import convert

        flat = convert.torch_to_jax(self.state_dict(), self._jax_names)
        params = jax.tree.unflatten(self._treedef, [jnp.asarray(flat[n]) for n in self._jax_names])
        return nnx.merge(self._graphdef, params, self._rest)


