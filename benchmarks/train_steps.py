"""One training step (forward + loss + backward + AdamW) of a model in each backend, as a callable
the benchmark scripts time: the trainer's JAX step and the usual torch loop."""

from __future__ import annotations


class JaxTrainStep:
    """Calling it runs physnets_jax.training.train.train_step once on fixed tokens (B, T) as input and
    target; returns the loss without blocking. `model()` gives the Decoder with the trained
    parameters written back. `dtype` casts every parameter (e.g. jnp.bfloat16: pure bf16 training)."""

    def __init__(self, cfg, tokens_BxT, *, total_steps: int = 10_000, dtype=None):
        import jax
        import numpy as np
        from flax import nnx

        from physnets_jax.model import Decoder, cast_params, count_params
        from physnets_jax.training.train import TrainConfig, make_optimizer

        self._model = Decoder(cfg, rngs=nnx.Rngs(0))
        if dtype is not None:
            cast_params(self._model, dtype)
        self.n_params = count_params(self._model)
        self._tx = make_optimizer(TrainConfig(steps=total_steps, lr=1e-3, warmup_steps=1))
        self._graphdef, self._params, self._rest = nnx.split(self._model, nnx.Param, ...)
        self._opt_state = jax.jit(self._tx.init)(self._params)  # as the trainer does: no weak types, no retrace
        self._x = jax.device_put(np.asarray(tokens_BxT).astype(np.int32))
        self._compiled = None

    def compile(self) -> JaxTrainStep:
        """Compile the step ahead of time (e.g. in a background thread); later calls run that
        executable. Returns self."""
        from physnets_jax.training.train import train_step

        self._compiled = train_step.lower(
            self._graphdef, self._tx, self._params, self._rest, self._opt_state, self._x, self._x
        ).compile()
        return self

    def __call__(self):
        from physnets_jax.training.train import train_step

        if self._compiled is not None:
            out = self._compiled(self._params, self._rest, self._opt_state, self._x, self._x)
        else:
            out = train_step(self._graphdef, self._tx, self._params, self._rest, self._opt_state, self._x, self._x)
        self._params, self._rest, self._opt_state, loss = out
        return loss

    def compiled_memory_bytes(self) -> int:
        """Device memory of one compiled step as XLA plans it: arguments + outputs - donated
        aliases + temporaries (the step's peak). Compiles ahead of time if not done yet."""
        if self._compiled is None:
            self.compile()
        m = self._compiled.memory_analysis()
        return int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes)

    def model(self):
        from flax import nnx

        nnx.update(self._model, self._params, self._rest)
        return self._model


def torch_train_step(model, tokens_BxT, loss_fn, *, forward=None, lr: float = 1e-3):
    """A callable running one AdamW step of loss_fn(forward, tokens).backward() on `model`'s
    parameters (forward defaults to the model itself, e.g. a torch.compile wrapper instead)."""
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    forward = model if forward is None else forward

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(forward, tokens_BxT).backward()
        opt.step()

    return step
