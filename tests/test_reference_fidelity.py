"""The presets compute the published functions: ripplegpt == RippleGPT, gpt == nanoGPT."""

import numpy as np
import torch

from physnets_core.config import preset
from physnets_torch.model import Decoder
from tests.reference_models import ReferenceNanoGPT, ReferenceRippleGPT


def _random_state(model, seed):
    """Perturb every parameter so no init symmetry (zero biases, unit gains) hides a mismatch."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def test_ripplegpt_matches_published_formulation():
    cfg = preset("ripplegpt", "nano", dropout=0.0, n_head=4, n_embd=48, n_layer=3)
    ours = _random_state(Decoder(cfg).double().eval(), 0)
    ref = ReferenceRippleGPT(cfg.vocab_size, cfg.n_layer, cfg.n_head, cfg.n_embd).double().eval()
    ref.load_from_physnets(ours.state_dict())
    tokens = torch.from_numpy(np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 3 * cfg.block_size)))
    with torch.no_grad():
        np.testing.assert_allclose(ours(tokens).numpy(), ref(tokens).numpy(), rtol=0, atol=1e-12)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())


def test_ripplegpt_decay_init_and_parameter_layout():
    cfg = preset("ripplegpt")
    ours = Decoder(cfg)
    ref = ReferenceRippleGPT(cfg.vocab_size, cfg.n_layer, cfg.n_head, cfg.n_embd)
    assert torch.equal(ours.blocks[0].mixer.decay, torch.full((6,), -0.8))
    assert ours.blocks[0].mixer.out is None  # no attention output projection in the reference
    assert sum(p.numel() for p in ref.parameters()) == 6_261_540


def test_gpt_matches_nanogpt():
    cfg = preset("gpt", "nano", dropout=0.0)
    ours = _random_state(Decoder(cfg).double().eval(), 1)
    ref = ReferenceNanoGPT(cfg.vocab_size, cfg.block_size, cfg.n_layer, cfg.n_head, cfg.n_embd).double().eval()
    ref.load_from_physnets(ours.state_dict())
    tokens = torch.from_numpy(np.random.default_rng(1).integers(0, cfg.vocab_size, (2, cfg.block_size)))
    with torch.no_grad():
        np.testing.assert_allclose(ours(tokens).numpy(), ref(tokens).numpy(), rtol=0, atol=1e-12)
    ref_count = sum(p.numel() for p in ref.parameters())
    assert sum(p.numel() for p in ours.parameters()) == ref_count


def test_gpt_init_scales_residual_projections():
    cfg = preset("gpt")
    ours = Decoder(cfg)
    std_out = ours.blocks[0].mixer.out.weight.std().item()
    std_qkv = ours.blocks[0].mixer.qkv.weight.std().item()
    assert abs(std_qkv - 0.02) < 1e-3
    assert abs(std_out - 0.02 / (2 * 6) ** 0.5) < 5e-4
