"""The GateLoop linear recurrence h_t = a_t * h_{t-1} + kv_t along one axis (real or complex).

Torch twin of physnets_jax/ops/gate_loop.py (same arguments, same validation messages). torch has
no associative scan, so this module implements a two-level parallel scan with vectorised tensor
ops (never a Python loop over the T time steps):

    1. cut the sequence into n chunks of C ~ sqrt(T) positions (a divisor of T when one is near);
    2. compute every chunk's total at once: P_c = product of its a, E_c = its end state from 0;
    3. scan the n totals with the same algorithm, recursively: the state entering each chunk;
    4. rescan every chunk from its incoming state, writing the output.

Steps 2 and 4 have two implementations (`method`):
    "blocked" (default): C vectorised steps h_t = a_t h_{t-1} + kv_t, each over all n chunks
        (the "sequential inside a chunk, parallel across chunks" layout of GPU scan kernels),
        written as reduce-then-scan: one pass computes every chunk's total, the totals are
        scanned, one more pass rescans every chunk from its incoming state straight into the
        output; about five passes over memory, O(sqrt T) Python-level ops.
    "doubling": Hillis-Steele over the whole length, log2(T) vectorised steps
        x[s:] += A[s:] x[:-s], A[s:] *= A[:-s] (log depth, but ~6 passes over memory per step).
    "auto": doubling up to AUTO_DOUBLING_MAX_LEN = 256 positions, blocked beyond.
Chosen by measurement (benchmarks/gateloop_scan.py, SimpleGateLoopLayer dim 256 batch 8
forward+backward on a shared 2-core CPU, docs/gateloop.md): "blocked" was the fastest torch
scan at 256, 1024 and 16384 positions in the recorded run (the doubling scan won some noisier
runs at 256-1024, where Python op overhead dominates; at long lengths memory traffic dominates
and the blocked scan's ~5 passes beat doubling's ~6 per step). Both only multiply and add (no
division by running products, no logs), so products of |a| < 1 can underflow to 0 but never give
inf or NaN, also in float16/bfloat16.

Gradients come from a custom autograd Function: the backward of a linear recurrence is the
reverse recurrence dh_t = g_t + conj(a_{t+1}) dh_{t+1}, run with the same scan; then
d kv_t = dh_t, d a_t = dh_t conj(h_{t-1}) (h_{-1} = h0) and d h0 = conj(a_0) dh_0.
Only a and h are saved for the backward.

gate_loop_scan_heinsen is the log-space scan of the reference package's `use_heinsen=True`
(twin of physnets_jax's: same clamps, working dtypes and log-cumsum-exp by a rescaled linear scan).
The chunked matmul form of the whole operator is in physnets_torch/ops/gate_loop_chunked.py.
"""

from __future__ import annotations

import math

import torch

from physnets_core.checks import HEINSEN_EPS, check_gate_loop_args

METHODS = ("auto", "blocked", "doubling")
_BASE = 32  # sequences up to this length are scanned position by position, in one chunk


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _chunk_len(T: int) -> int:
    """A chunk length near sqrt(T), preferring one that divides T (no ragged chunk)."""
    root = math.isqrt(T)
    for C in range(root, max(root // 2, 1), -1):
        if T % C == 0:
            return C
    return root + (root * root < T)


def _write(dst: torch.Tensor, op, *args) -> None:
    """dst = op(*args): straight into dst (no temporary) in eager mode; as a copy under
    torch.compile, whose graph capture rejects `out=` views that are not contiguous."""
    if torch.compiler.is_compiling():
        dst.copy_(op(*args))
    else:
        op(*args, out=dst)


def _seq_into(out, c, x, d: int, reverse: bool, h0) -> None:
    """out_t = c_t * out_{t-1} + x_t along axis d (reverse: c_t * out_{t+1} + x_t), from h0."""
    n = x.shape[d]
    order = range(n - 1, -1, -1) if reverse else range(n)
    prev = h0
    for t in order:
        if prev is None:
            out.select(d, t).copy_(x.select(d, t))
        else:
            _write(out.select(d, t), torch.addcmul, x.select(d, t), c.select(d, t), prev)
        prev = out.select(d, t)


def _scan_blocked(c, x, d: int, reverse: bool, h0):
    """Two-level reduce-then-scan (see the module docstring); about five passes over memory."""
    T = x.shape[d]
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if T <= _BASE:
        _seq_into(out, c, x, d, reverse, h0)
        return out
    C = _chunk_len(T)
    n = T // C
    r = T - n * C  # ragged part: after the chunks (forward) or before them (reverse)
    s0 = r if reverse else 0
    cm = c.narrow(d, s0, n * C).unflatten(d, (n, C))
    xm = x.narrow(d, s0, n * C).unflatten(d, (n, C))
    om = out.narrow(d, s0, n * C).unflatten(d, (n, C))
    order = range(C - 1, -1, -1) if reverse else range(C)
    # Pass 1: every chunk's total (P = product of c, E = state from a zero start), all at once.
    first = order[0]
    E = xm.select(d + 1, first).clone()
    P = cm.select(d + 1, first).clone()
    for t in order[1:]:
        c_t = cm.select(d + 1, t)
        E.mul_(c_t).add_(xm.select(d + 1, t))
        P.mul_(c_t)
    # Pass 2: the chunk totals' own scan gives the state at every chunk's far edge.
    edges = _scan_blocked(P, E, d, reverse, h0)
    zero = torch.zeros_like(edges.narrow(d, 0, 1)) if h0 is None else h0.unsqueeze(d).to(edges.dtype)
    if reverse:
        incoming = torch.cat([edges.narrow(d, 1, n - 1), zero], d)
    else:
        incoming = torch.cat([zero, edges.narrow(d, 0, n - 1)], d)
    # Pass 3: rescan every chunk from its incoming state, writing the output.
    prev = incoming
    for t in order:
        _write(om.select(d + 1, t), torch.addcmul, xm.select(d + 1, t), cm.select(d + 1, t), prev)
        prev = om.select(d + 1, t)
    if r:
        if reverse:
            _seq_into(out.narrow(d, 0, r), c.narrow(d, 0, r), x.narrow(d, 0, r), d, True, out.select(d, r))
        else:
            _seq_into(out.narrow(d, n * C, r), c.narrow(d, n * C, r), x.narrow(d, n * C, r), d, False,
                      out.select(d, n * C - 1))
    return out


def _scan_doubling(c, x, d: int, reverse: bool, h0):
    """Hillis-Steele over the whole length: log2(T) vectorised steps, ~6 passes over memory each."""
    T = x.shape[d]
    X = x.clone(memory_format=torch.contiguous_format)
    if h0 is not None:
        i = T - 1 if reverse else 0
        X.select(d, i).add_(c.select(d, i) * h0)
    A = c.clone(memory_format=torch.contiguous_format)
    s = 1
    while s < T:
        n = T - s
        dst, src = (0, s) if reverse else (s, 0)
        X.narrow(d, dst, n).add_(A.narrow(d, dst, n) * X.narrow(d, src, n))
        A.narrow(d, dst, n).copy_(A.narrow(d, dst, n) * A.narrow(d, src, n))
        s *= 2
    return X


AUTO_DOUBLING_MAX_LEN = 256  # "auto": doubling up to this length (fewer Python-level ops), else blocked


def _scan_auto(c, x, d: int, reverse: bool, h0):
    """"doubling" for short sequences (op count dominates), "blocked" for long ones (memory
    traffic dominates); the threshold comes from benchmarks/gateloop_scan.py."""
    fn = _scan_doubling if x.shape[d] <= AUTO_DOUBLING_MAX_LEN else _scan_blocked
    return fn(c, x, d, reverse, h0)


_SCANS = {"auto": _scan_auto, "blocked": _scan_blocked, "doubling": _scan_doubling}


def _reduce_to(t: torch.Tensor, shape) -> torch.Tensor:
    """Sum t over the axes where `shape` has size 1 (the gradient of a broadcast operand)."""
    dims = tuple(d for d, (n, m) in enumerate(zip(shape, t.shape, strict=True)) if n == 1 and m != 1)
    return t.sum(dim=dims, keepdim=True) if dims else t


class _GateLoopScan(torch.autograd.Function):
    """h = scan(a, kv) along dim from h0, with the reverse-recurrence backward."""

    @staticmethod
    def forward(ctx, a, kv, h0, dim: int, method: str):
        h = _SCANS[method](a, kv, dim, False, h0)
        ctx.save_for_backward(a, h, h0)
        ctx.dim, ctx.method = dim, method
        return h

    @staticmethod
    def backward(ctx, grad_h):
        a, h, h0 = ctx.saved_tensors
        dim = ctx.dim
        T = h.shape[dim]
        # dh_t = g_t + conj(a_{t+1}) dh_{t+1} (a_T = 0): a reverse scan with c_t = conj(a_{t+1}).
        c = torch.empty(a.shape, dtype=a.dtype, device=a.device)
        c.narrow(dim, 0, T - 1).copy_(a.narrow(dim, 1, T - 1))
        c.narrow(dim, T - 1, 1).zero_()
        if c.is_complex():
            torch.conj_physical_(c)
        dh = _SCANS[ctx.method](c, grad_h, dim, True, None)
        del c
        grad_a = grad_h0 = None
        if ctx.needs_input_grad[0]:
            grad_a = torch.empty_like(dh)
            if T > 1:
                h_prev = h.narrow(dim, 0, T - 1)
                h_prev = h_prev.conj() if h_prev.is_complex() else h_prev
                _write(grad_a.narrow(dim, 1, T - 1), torch.mul, dh.narrow(dim, 1, T - 1), h_prev)
            first = grad_a.narrow(dim, 0, 1)
            if h0 is None:
                first.zero_()
            else:
                first.copy_(dh.narrow(dim, 0, 1) * (h0.conj() if h0.is_complex() else h0).unsqueeze(dim))
            grad_a = _reduce_to(grad_a, a.shape)
        if h0 is not None and ctx.needs_input_grad[2]:
            a0 = a.narrow(dim, 0, 1)
            a0 = a0.conj() if a0.is_complex() else a0
            grad_h0 = (dh.narrow(dim, 0, 1) * a0).squeeze(dim)
        return grad_a, dh, grad_h0, None, None


def _check(a, kv, axis, h0, method):
    for name, t in (("a", a), ("kv", kv)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not a known scan method; valid choices: {', '.join(METHODS)}")
    axis = check_gate_loop_args(
        a.shape, kv.shape, _dtype_name(a.dtype), _dtype_name(kv.dtype), axis,
        None if h0 is None else tuple(h0.shape),
    )
    if h0 is not None:
        h0 = h0.to(kv.dtype)
    return axis, h0


def gate_loop_scan(
    a: torch.Tensor, kv: torch.Tensor, *, axis: int = 1, h0: torch.Tensor | None = None,
    method: str = "blocked", scan_backend: str = "torch",
) -> torch.Tensor:
    """States h (kv's shape) of h_t = a_t h_{t-1} + kv_t along `axis`, h_{-1} = h0 (default 0),
    by the two-level chunked scan with a reverse-scan backward. scan_backend="jax" runs
    physnets_jax's associative scan through physnets_torch.bridge instead (forward and backward)."""
    if scan_backend == "jax":
        from physnets_torch.bridge import gate_loop_scan_jax

        return gate_loop_scan_jax(a, kv, axis=axis, h0=h0)
    if scan_backend != "torch":
        raise ValueError(f"scan_backend={scan_backend!r} is not a known scan backend; valid choices: torch, jax")
    axis, h0 = _check(a, kv, axis, h0, method)
    return _GateLoopScan.apply(a, kv, h0, axis, method)


def gate_loop_scan_sequential(
    a: torch.Tensor, kv: torch.Tensor, *, axis: int = 1, h0: torch.Tensor | None = None
) -> torch.Tensor:
    """Reference: the same states by a Python loop over all positions (tests only; slow)."""
    axis, h0 = _check(a, kv, axis, h0, "blocked")
    h = torch.zeros_like(kv.select(axis, 0)) if h0 is None else h0
    out = []
    for t in range(kv.shape[axis]):
        h = a.select(axis, t) * h + kv.select(axis, t)
        out.append(h)
    return torch.stack(out, axis)


def _heinsen_log(x: torch.Tensor, cdtype: torch.dtype, *, pass_gradient: bool) -> torch.Tensor:
    """log x as a complex number (negative reals get angle pi), with |x| < HEINSEN_EPS replaced by
    HEINSEN_EPS (keeping the sign of a real x); pass_gradient: straight through, else none."""
    eps = HEINSEN_EPS
    small = x.abs() < eps
    if x.is_complex():
        fill = torch.full_like(x, eps)
    else:
        fill = torch.where(x < 0, -eps, eps).to(x.dtype)
    if pass_gradient:
        safe = x + torch.where(small, fill - x, torch.zeros_like(x)).detach()
    else:
        safe = torch.where(small, fill, x)
    return safe.to(cdtype).log()


def _exp_logcumsumexp(x: torch.Tensor, dim: int):
    """exp(logcumsumexp(x)) along dim for complex x as exp(m_t) S_t (physnets_jax's twin):
    m = running max of Re x (no gradient), S the rescaled linear recurrence run by gate_loop_scan.
    Not torch.logcumsumexp: its backward, exp(reverse_logcumsumexp(log g - y) + x), loses the
    gradient w.r.t. a to cancellation (relative error > 1 in float32 at |A| ~ 1e3 with small
    gates, docs/gateloop.md). Returns (m, S)."""
    m = torch.cummax(x.real.detach(), dim).values
    m_prev = torch.cat([m.narrow(dim, 0, 1), m.narrow(dim, 0, m.shape[dim] - 1)], dim)
    gate = torch.exp(m_prev - m).to(x.dtype)
    return m, gate_loop_scan(gate, torch.exp(x - m), axis=dim)


def gate_loop_scan_heinsen(
    a: torch.Tensor, kv: torch.Tensor, *, axis: int = 1, h0: torch.Tensor | None = None
) -> torch.Tensor:
    """Same states in log space (Heinsen 2023; the reference's `use_heinsen=True`):
    h_t = exp(A_t + logcumsumexp(log kv - A)_t), A = cumsum(log a). complex128 for float64 inputs,
    complex64 otherwise; |a|, |kv| below HEINSEN_EPS raised to it (kv's gradient passed straight
    through, a's stopped); relative error ~ eps * |A_t|."""
    axis, h0 = _check(a, kv, axis, h0, "blocked")
    if h0 is not None:
        first = a.narrow(axis, 0, 1) * h0.unsqueeze(axis) + kv.narrow(axis, 0, 1)
        kv = torch.cat([first, kv.narrow(axis, 1, kv.shape[axis] - 1)], axis)
    real = a.real.dtype if a.is_complex() else a.dtype
    cdtype = torch.complex128 if real == torch.float64 else torch.complex64
    log_a = _heinsen_log(a, cdtype, pass_gradient=False)
    log_kv = _heinsen_log(kv, cdtype, pass_gradient=True)
    a_star = torch.cumsum(log_a, dim=axis)
    x = log_kv - a_star
    m, S = _exp_logcumsumexp(x, axis)
    h = torch.exp(a_star + m) * S
    return (h if kv.is_complex() else h.real).to(kv.dtype)
