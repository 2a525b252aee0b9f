"""Resonant Gradient Descent (Wave-Native GPT, spectral_gpt/physics_optim.py) as a torch optimizer.

Twin of physnets_jax.optim.rgd (formula in physnets_jax/optim/rgd.py). Per step, for each
parameter p with gradient g (the seed's order):

    p *= 1 - lr * weight_decay                                   (decoupled, every parameter)
    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  U = m_hat / (sqrt(v_hat) + eps)
    if p.dim() >= 2 and alpha > 0:  U = Re(IFFT2(FFT2(U) * rho)) on (shape[0], -1) views,
        rho = alpha sqrt(|F p|/(max|F p| + eps) * |F U|/(max|F U| + eps) + eps) + 1 - alpha
    p -= lr * U,     alpha = min(1, step / warmup_steps) * resonance_strength

`step` counts optimizer steps (stored per group as 'rgd_step', so it survives state_dict round
trips). The FFT runs in the parameter's precision, at least float32 (the seed casts to float32).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


def resonant_gate(update: torch.Tensor, param: torch.Tensor, alpha: float, eps: float) -> torch.Tensor:
    """Re(IFFT2(FFT2(U) rho)) of one tensor of rank >= 2, viewed as (shape[0], -1)."""
    ct = torch.promote_types(update.dtype, torch.float32)
    shape = update.shape
    u_fft = torch.fft.fft2(update.reshape(shape[0], -1).to(ct))
    w_fft = torch.fft.fft2(param.reshape(shape[0], -1).to(ct))
    u_mag, w_mag = u_fft.abs(), w_fft.abs()
    u_n = u_mag / (u_mag.max() + eps)
    w_n = w_mag / (w_mag.max() + eps)
    rho = alpha * torch.sqrt(w_n * u_n + eps) + (1 - alpha)
    return torch.fft.ifft2(u_fft * rho).real.reshape(shape).to(update.dtype)


class RGD(torch.optim.Optimizer):
    """Resonant Gradient Descent: AdamW moments + decoupled decay + 2-D Fourier resonance gate."""

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        resonance_strength: float = 0.5,
        warmup_steps: int = 1000,
        weight_decay: float = 0.01,
        eps: float = 1e-8,
    ):
        if not lr >= 0:
            raise ValueError(f"lr={lr} must be >= 0")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas={betas} must both be in [0, 1)")
        if not eps >= 0:
            raise ValueError(f"eps={eps} must be >= 0")
        defaults = dict(lr=lr, betas=betas, resonance_strength=resonance_strength, warmup_steps=warmup_steps,
                        weight_decay=weight_decay, eps=eps, rgd_step=0)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        """One RGD step; returns the closure's loss if one is given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            group["rgd_step"] += 1
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            wd, warmup = group["weight_decay"], group["warmup_steps"]
            ramp = min(1.0, group["rgd_step"] / warmup) if warmup > 0 else 1.0
            alpha = ramp * group["resonance_strength"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                if wd != 0:
                    p.mul_(1 - lr * wd)
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                bc1 = 1 - beta1 ** state["step"]
                bc2 = 1 - beta2 ** state["step"]
                update = (exp_avg / bc1) / (torch.sqrt(exp_avg_sq / bc2) + eps)
                if p.dim() >= 2 and alpha > 0:
                    update = resonant_gate(update, p, alpha, eps)
                p.add_(update, alpha=-lr)
        return loss
