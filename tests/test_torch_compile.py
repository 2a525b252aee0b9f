"""torch.compile: every torch preset traces as one graph (no graph breaks) and computes the same
logits as eager mode.

backend="eager" runs Dynamo's graph capture without Inductor's code generation, so this needs no
C++ compiler and takes seconds; fullgraph=True turns any graph break into an error.
"""

import numpy as np
import pytest
import torch

from physnets_torch.model import build_model


@pytest.mark.parametrize("name", ["gpt", "ripplegpt", "wave_gpt", "gateloop"])
def test_decoder_compiles_without_graph_breaks(name):
    torch._dynamo.reset()
    model = build_model(name, size="nano", dropout=0.0).eval()
    tokens = torch.from_numpy(np.random.default_rng(0).integers(0, model.cfg.vocab_size, (2, 16)))
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        expected = model(tokens)
        got = compiled(tokens)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["ripplegpt", "gateloop"])
def test_compiled_training_step_has_eager_gradients(name):
    # aot_eager traces forward and backward (the gate-loop scan's custom autograd Function
    # included) into graphs without Inductor's code generation.
    from physnets_torch.losses import cross_entropy

    torch._dynamo.reset()
    model = build_model(name, size="nano", dropout=0.0)
    tokens = torch.from_numpy(np.random.default_rng(1).integers(0, model.cfg.vocab_size, (2, 40)))
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    grads = []
    for forward in (model, compiled):
        model.zero_grad(set_to_none=True)
        cross_entropy(forward(tokens), tokens).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 4
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-5, atol=1e-7, msg=n)
