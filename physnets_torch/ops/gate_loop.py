"""The GateLoop linear recurrence h_t = a_t * h_{t-1} + kv_t along one axis (real or complex).

Torch twin of physnets_jax/ops/gate_loop.py (same arguments, same validation messages). torch has
no associative scan, so this is a parallel algorithm written with vectorised tensor ops, no Python
loop over time steps:

- chunked Hillis-Steele: the sequence is cut into chunks of `chunk` positions; inside all chunks
  at once a Hillis-Steele doubling scan runs log2(chunk) vectorised steps
  (x[s:] += A[s:] * x[:-s];  A[s:] *= A[:-s]), which only multiplies, adds and never divides,
  so products of |a| < 1 may underflow to 0 but never produce inf/NaN; the chunk-end states are
  then combined by the same algorithm applied recursively to the T/chunk chunk totals, and one
  vectorised update adds each chunk's incoming state.
- gradients: a custom autograd Function. The backward of a linear recurrence is the reverse
  recurrence dh_t = g_t + conj(a_{t+1}) dh_{t+1}, run with the same scan; then
  d kv_t = dh_t and d a_t = dh_t conj(h_{t-1}). Only a and h are saved (no log2(T) stack of
  intermediates as autograd through the doubling steps would keep).

Chosen by measurement (benchmarks/gateloop_scan.py, 2-core CPU): the chunked form with chunk 16
beat the full-length doubling scan (log2(T) steps) and the odd/even recursion of the published
package (see docs/gateloop.md).
"""

from __future__ import annotations

import torch

from physnets_jax.ops.gate_loop import check_gate_loop_args

DEFAULT_CHUNK = 16


def _doubling_scan_(A: torch.Tensor, X: torch.Tensor, dim: int) -> None:
    """In place: X <- inclusive scan of (A, X) along dim, A <- cumulative product (Hillis-Steele)."""
    L = X.shape[dim]
    s = 1
    while s < L:
        n = L - s
        X.narrow(dim, s, n).add_(A.narrow(dim, s, n) * X.narrow(dim, 0, n))
        if 2 * s < L or True:
            A.narrow(dim, s, n).copy_(A.narrow(dim, s, n) * A.narrow(dim, 0, n))
        s *= 2


def _pad_to(t: torch.Tensor, dim: int, length: int) -> torch.Tensor:
    extra = length - t.shape[dim]
    if extra == 0:
        return t.clone()
    shape = list(t.shape)
    shape[dim] = extra
    return torch.cat([t, t.new_zeros(shape)], dim=dim)


def _scan_values(a: torch.Tensor, kv: torch.Tensor, dim: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(cumulative product of a, states h) along dim, by the chunked doubling scan (no autograd)."""
    T = kv.shape[dim]
    if T <= chunk:
        A, X = a.clone(), kv.clone()
        _doubling_scan_(A, X, dim)
        return A, X
    n_chunks = -(-T // chunk)
    padded = n_chunks * chunk
    A = _pad_to(a, dim, padded).unflatten(dim, (n_chunks, chunk))
    X = _pad_to(kv, dim, padded).unflatten(dim, (n_chunks, chunk))
    _doubling_scan_(A, X, dim + 1)
    # States at the chunk ends, by the same scan over the n_chunks chunk totals.
    P = A.select(dim + 1, chunk - 1)
    E = X.select(dim + 1, chunk - 1)
    _, ends = _scan_values(P, E, dim, chunk)
    # State entering chunk c is the end state of chunk c - 1 (zero for the first chunk).
    incoming = torch.cat([torch.zeros_like(ends.narrow(dim, 0, 1)), ends.narrow(dim, 0, n_chunks - 1)], dim)
    X.add_(A * incoming.unsqueeze(dim + 1))
    A = A.flatten(dim, dim + 1).narrow(dim, 0, T)
    X = X.flatten(dim, dim + 1).narrow(dim, 0, T)
    return A, X


def _reduce_to(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum t over the axes where `shape` has size 1 (the gradient of a broadcast)."""
    dims = tuple(d for d, (n, m) in enumerate(zip(shape, t.shape, strict=True)) if n == 1 and m != 1)
    return t.sum(dim=dims, keepdim=True) if dims else t


class _GateLoopScan(torch.autograd.Function):
    """h = scan(a, kv) along dim with the reverse-recurrence backward."""

    @staticmethod
    def forward(ctx, a, kv, dim: int, chunk: int):
        _, h = _scan_values(a, kv, dim, chunk)
        ctx.save_for_backward(a, h)
        ctx.dim, ctx.chunk = dim, chunk
        return h

    @staticmethod
    def backward(ctx, grad_h):
        a, h = ctx.saved_tensors
        dim, chunk = ctx.dim, ctx.chunk
        T = h.shape[dim]
        # dh_t = g_t + conj(a_{t+1}) dh_{t+1}: a forward scan of the time-reversed sequence.
        a_next = torch.cat([a.narrow(dim, 1, T - 1), torch.zeros_like(a.narrow(dim, 0, 1))], dim)
        a_next = a_next.conj() if a_next.is_complex() else a_next
        _, dh = _scan_values(a_next.flip(dim), grad_h.flip(dim), dim, chunk)
        dh = dh.flip(dim)
        h_prev = torch.cat([torch.zeros_like(h.narrow(dim, 0, 1)), h.narrow(dim, 0, T - 1)], dim)
        h_prev = h_prev.conj() if h_prev.is_complex() else h_prev
        grad_a = _reduce_to(dh * h_prev, a.shape) if ctx.needs_input_grad[0] else None
        return grad_a, dh, None, None


def _prepare(a: torch.Tensor, kv: torch.Tensor, axis: int, h0: torch.Tensor | None):
    for name, t in (("a", a), ("kv", kv)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    axis = check_gate_loop_args(
        a.shape, kv.shape, _dtype_name(a.dtype), _dtype_name(kv.dtype), axis,
        None if h0 is None else tuple(h0.shape),
    )
    if h0 is not None:
        h0 = h0.to(kv.dtype)
        first = a.narrow(axis, 0, 1) * h0.unsqueeze(axis) + kv.narrow(axis, 0, 1)
        kv = torch.cat([first, kv.narrow(axis, 1, kv.shape[axis] - 1)], axis)
    return axis, kv


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def gate_loop_scan(
    a: torch.Tensor, kv: torch.Tensor, *, axis: int = 1, h0: torch.Tensor | None = None,
    chunk: int = DEFAULT_CHUNK,
) -> torch.Tensor:
    """States h (kv's shape) of h_t = a_t h_{t-1} + kv_t along `axis`, h_{-1} = h0 (default 0),
    by the chunked doubling scan with a reverse-scan backward."""
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 2:
        raise ValueError(f"chunk={chunk!r} must be an integer >= 2")
    axis, kv = _prepare(a, kv, axis, h0)
    return _GateLoopScan.apply(a, kv, axis, chunk)


def gate_loop_scan_sequential(
    a: torch.Tensor, kv: torch.Tensor, *, axis: int = 1, h0: torch.Tensor | None = None
) -> torch.Tensor:
    """Reference: the same states by a Python loop over positions (tests only; slow)."""
    axis, kv = _prepare(a, kv, axis, h0)
    h = torch.zeros_like(kv.select(axis, 0))
    out = []
    for t in range(kv.shape[axis]):
        h = a.select(axis, t) * h + kv.select(axis, t)
        out.append(h)
    return torch.stack(out, axis)
