"""Flash attention with the ripple decay computed inside the kernel (jax.experimental.pallas).

`pallas_causal_attention` computes the same function as ops.attention.causal_attention without a
cache: softmax(q k^T / sqrt(D) + |lambda_h| * min(j - i, 0), causal mask) v per head. One program
of the forward kernel owns `block` queries of one (batch, head) and walks the key blocks up to the
diagonal with an online softmax (running max m, running sum l, rescaled accumulator), so no
(T, T) tile is ever stored; the bias comes from the query and key positions inside each
(block, block) tile. The backward is two more kernels around a jax.custom_vjp: one per key block
(dK, dV, walking the query blocks below the diagonal) and one per query block (dQ and the rows of
the decay gradient sum_j dS_ij * min(j - i, 0)), both recomputing the probabilities from the
saved log-sum-exp. Without a decay it is plain causal flash attention (gpt, classic).

The kernel body uses only portable Pallas (ref slices, dots, iota, fori_loop), so one kernel
lowers to Triton on GPU and Mosaic on TPU (`jax.lax.platform_dependent` picks each platform's
compiler parameters) and runs in interpret mode on CPU, which is how the tests check it.

Tile rules: `block` is a power of two >= 16 (Triton needs powers of two and dots of at least 16
rows; 16 is also a multiple of TPU's 8 (float32) and 16 (bfloat16) sublane tiles); the query and
key tile is min(block, 128, T rounded up to a power of two): a GPU's registers hold a 128 x 128
float32 score tile, not a 256 x 256 one. T is padded to a multiple of the tile and the head
dimension to a power of two >= 16, then cropped: the causal mask already hides padded keys from
real queries. On GPU/TPU the kernel takes float32, bfloat16 or float16 (accumulating in float32);
float64 runs in interpret mode only.

Each program reads the whole sequence of K and V (the backward: of Q, dO and the row statistics
too) through one block: on GPU that is a pointer, on TPU a VMEM buffer, so very long sequences on
TPU may need a larger VMEM limit. The kernels have been lowered for both (tests/), not yet run on
either: benchmarks/device_check.py checks them on a device first.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from physnets_core.checks import PALLAS_MIN_BLOCK as MIN_BLOCK
from physnets_core.checks import check_pallas_block

DEVICE_DTYPES = ("float32", "bfloat16", "float16")
MAX_TILE = 128
_LOCAL = threading.local()


@contextlib.contextmanager
def pallas_interpret_mode(enabled: bool = True):
    """Within this context, the Pallas kernels run in interpret mode (needed on CPU; slow, for tests)."""
    previous = getattr(_LOCAL, "interpret", False)
    _LOCAL.interpret = enabled
    try:
        yield
    finally:
        _LOCAL.interpret = previous


def _resolve_interpret(interpret: bool | None) -> bool:
    """interpret=None: interpret inside pallas_interpret_mode(), native on GPU/TPU, else an error."""
    if interpret is not None:
        return interpret
    if getattr(_LOCAL, "interpret", False):
        return True
    backend = jax.default_backend()
    if backend not in ("gpu", "tpu"):
        raise ValueError(
            f"attention_impl='pallas' needs a GPU or TPU: Pallas has no native kernels for the "
            f"'{backend}' backend. Use attention_impl='auto' (pallas on GPU/TPU, dense here), or run "
            "the kernel in interpret mode (physnets_jax.ops.pallas_attention.pallas_interpret_mode(); "
            "slow, for tests)"
        )
    return False


def native_pallas_available(dtype) -> bool:
    """Whether the default backend runs the kernel natively (GPU/TPU) for inputs of this dtype."""
    return jax.default_backend() in ("gpu", "tpu") and jnp.dtype(dtype).name in DEVICE_DTYPES


def _check_dtype(dtype, interpret: bool) -> None:
    name = jnp.dtype(dtype).name
    allowed = DEVICE_DTYPES + (("float64",) if interpret else ())
    if name not in allowed:
        raise ValueError(
            f"dtype {name}: attention_impl='pallas' takes {', '.join(DEVICE_DTYPES)} on GPU/TPU "
            "(float64 only in interpret mode); cast the model (param_dtype/compute dtype) or use "
            "attention_impl='dense'"
        )


def _acc_dtype(dtype):
    return jnp.promote_types(dtype, jnp.float32)


def _tile_positions(q_block, k_block, block):
    rows = q_block * block + lax.broadcasted_iota(jnp.int32, (block, block), 0)
    cols = k_block * block + lax.broadcasted_iota(jnp.int32, (block, block), 1)
    return rows, cols


def _scores(q, k, slope, rows, cols, scale, has_decay, acc):
    """Scaled q k^T of one tile plus the ripple bias; the caller masks j > i."""
    s = lax.dot_general(q, k, (((1,), (1,)), ((), ())), preferred_element_type=acc) * scale
    if has_decay:
        s = s + slope * (cols - rows).astype(acc)  # j - i = min(j - i, 0) where j <= i
    return s


def _fwd_kernel(slope_ref, q_ref, k_ref, v_ref, o_ref, lse_ref, *, block, scale, has_decay, acc):
    """One (batch*head, query block): online softmax over the key blocks 0..diagonal."""
    qi = pl.program_id(1)
    q = q_ref[...]
    slope = slope_ref[...].astype(acc)  # (1, 1)
    mask_value = jnp.asarray(-0.7 * jnp.finfo(acc).max, acc)

    def body(kj, carry):
        o_acc, m, l = carry
        start = pl.multiple_of(kj * block, block)
        k = k_ref[pl.ds(start, block), :]
        v = v_ref[pl.ds(start, block), :]
        rows, cols = _tile_positions(qi, kj, block)
        s = _scores(q, k, slope, rows, cols, scale, has_decay, acc)
        s = jnp.where(cols <= rows, s, mask_value)
        m_new = jnp.maximum(m, jnp.max(s, axis=1, keepdims=True))
        p = jnp.exp(s - m_new)
        alpha = jnp.exp(m - m_new)
        l_new = alpha * l + jnp.sum(p, axis=1, keepdims=True)
        pv = lax.dot_general(p.astype(v.dtype), v, (((1,), (0,)), ((), ())), preferred_element_type=acc)
        return alpha * o_acc + pv, m_new, l_new

    init = (
        jnp.zeros((block, v_ref.shape[-1]), acc),
        jnp.full((block, 1), mask_value, acc),
        jnp.zeros((block, 1), acc),
    )
    o_acc, m, l = lax.fori_loop(0, qi + 1, body, init)
    o_ref[...] = (o_acc / l).astype(o_ref.dtype)
    lse_ref[...] = m + jnp.log(l)


def _dkdv_kernel(slope_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dk_ref, dv_ref, *, block,
                 n_blocks, scale, has_decay, acc):
    """One (batch*head, key block): dV = sum_i P^T dO, dK = scale sum_i dS^T Q over query blocks >= it."""
    kj = pl.program_id(1)
    k = k_ref[...]
    v = v_ref[...]
    slope = slope_ref[...].astype(acc)

    def body(qi, carry):
        dk, dv = carry
        start = pl.multiple_of(qi * block, block)
        q = q_ref[pl.ds(start, block), :]
        do = do_ref[pl.ds(start, block), :]
        lse = lse_ref[pl.ds(start, block), :]
        delta = delta_ref[pl.ds(start, block), :]
        rows, cols = _tile_positions(qi, kj, block)
        s = _scores(q, k, slope, rows, cols, scale, has_decay, acc)
        p = jnp.where(cols <= rows, jnp.exp(s - lse), 0.0)
        dv = dv + lax.dot_general(p.astype(do.dtype), do, (((0,), (0,)), ((), ())), preferred_element_type=acc)
        dp = lax.dot_general(do, v, (((1,), (1,)), ((), ())), preferred_element_type=acc)
        ds = p * (dp - delta)
        dk = dk + lax.dot_general(ds.astype(q.dtype), q, (((0,), (0,)), ((), ())), preferred_element_type=acc)
        return dk, dv

    init = (jnp.zeros(k.shape, acc), jnp.zeros(v.shape, acc))
    dk, dv = lax.fori_loop(kj, n_blocks, body, init)
    dk_ref[...] = (dk * scale).astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def _dq_kernel(slope_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dq_ref, dl_ref, *, block, scale,
               has_decay, acc):
    """One (batch*head, query block): dQ = scale sum_j dS K and the decay-gradient rows sum_j dS_ij (j - i)."""
    qi = pl.program_id(1)
    q = q_ref[...]
    do = do_ref[...]
    lse = lse_ref[...]
    delta = delta_ref[...]
    slope = slope_ref[...].astype(acc)

    def body(kj, carry):
        dq, dl = carry
        start = pl.multiple_of(kj * block, block)
        k = k_ref[pl.ds(start, block), :]
        v = v_ref[pl.ds(start, block), :]
        rows, cols = _tile_positions(qi, kj, block)
        s = _scores(q, k, slope, rows, cols, scale, has_decay, acc)
        visible = cols <= rows
        p = jnp.where(visible, jnp.exp(s - lse), 0.0)
        dp = lax.dot_general(do, v, (((1,), (1,)), ((), ())), preferred_element_type=acc)
        ds = p * (dp - delta)
        dq = dq + lax.dot_general(ds.astype(k.dtype), k, (((1,), (0,)), ((), ())), preferred_element_type=acc)
        if has_decay:
            dist = jnp.where(visible, (cols - rows).astype(acc), 0.0)
            dl = dl + jnp.sum(ds * dist, axis=1, keepdims=True)
        return dq, dl

    init = (jnp.zeros(q.shape, acc), jnp.zeros((block, 1), acc))
    dq, dl = lax.fori_loop(0, qi + 1, body, init)
    dq_ref[...] = (dq * scale).astype(dq_ref.dtype)
    dl_ref[...] = dl


def _call(kernel, grid, in_specs, out_specs, out_shape, name, interpret, head_dim, args):
    """pallas_call in interpret mode, or per platform with that platform's compiler parameters."""
    call = functools.partial(
        pl.pallas_call, kernel, grid=grid, in_specs=in_specs, out_specs=out_specs, out_shape=out_shape, name=name)
    if interpret:
        return call(interpret=True)(*args)

    def gpu(*a):
        from jax.experimental.pallas import triton as plgpu

        params = plgpu.CompilerParams(num_warps=4 if head_dim <= 64 else 8, num_stages=2)
        return call(compiler_params=params)(*a)

    def tpu(*a):
        from jax.experimental.pallas import tpu as pltpu

        return call(compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel")))(*a)

    def other(*a):
        return call()(*a)

    return lax.platform_dependent(*args, cuda=gpu, rocm=gpu, tpu=tpu, default=other)


def _specs(block, T, D, *, full):
    """BlockSpec of one (block, D) tile (or the whole (T, D) sequence) of a (B*H, T, D) array."""
    if full:
        return pl.BlockSpec((None, T, D), lambda bh, i: (bh, 0, 0))
    return pl.BlockSpec((None, block, D), lambda bh, i: (bh, i, 0))


_SLOPE_SPEC = pl.BlockSpec((None, 1, 1), lambda bh, i: (bh, 0, 0))


def _forward(q, k, v, slopes, block, scale, interpret, has_decay):
    BH, T, D = q.shape
    acc = _acc_dtype(q.dtype)
    kernel = functools.partial(_fwd_kernel, block=block, scale=scale, has_decay=has_decay, acc=acc)
    tile, seq = _specs(block, T, D, full=False), _specs(block, T, D, full=True)
    row = pl.BlockSpec((None, block, 1), lambda bh, i: (bh, i, 0))
    return _call(
        kernel, (BH, T // block), [_SLOPE_SPEC, tile, seq, seq], [tile, row],
        [jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((BH, T, 1), acc)],
        "ripple_flash_fwd", interpret, D, (slopes, q, k, v))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _flash(q, k, v, slopes, block, scale, interpret, has_decay):
    """Flash attention over padded (B*H, T, D) arrays; slopes (B*H, 1, 1) = |lambda_h| per row."""
    return _forward(q, k, v, slopes, block, scale, interpret, has_decay)[0]


def _flash_fwd(q, k, v, slopes, block, scale, interpret, has_decay):
    o, lse = _forward(q, k, v, slopes, block, scale, interpret, has_decay)
    return o, (q, k, v, slopes, o, lse)


def _flash_bwd(block, scale, interpret, has_decay, res, do):
    q, k, v, slopes, o, lse = res
    BH, T, D = q.shape
    acc = _acc_dtype(q.dtype)
    delta = jnp.sum(do.astype(acc) * o.astype(acc), axis=-1, keepdims=True)  # (B*H, T, 1): O(T D)
    tile, seq = _specs(block, T, D, full=False), _specs(block, T, D, full=True)
    row_tile = pl.BlockSpec((None, block, 1), lambda bh, i: (bh, i, 0))
    row_seq = pl.BlockSpec((None, T, 1), lambda bh, i: (bh, 0, 0))
    n_blocks = T // block
    dk, dv = _call(
        functools.partial(_dkdv_kernel, block=block, n_blocks=n_blocks, scale=scale, has_decay=has_decay, acc=acc),
        (BH, n_blocks), [_SLOPE_SPEC, seq, tile, tile, seq, row_seq, row_seq], [tile, tile],
        [jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        "ripple_flash_dkdv", interpret, D, (slopes, q, k, v, do, lse, delta))
    dq, dl = _call(
        functools.partial(_dq_kernel, block=block, scale=scale, has_decay=has_decay, acc=acc),
        (BH, n_blocks), [_SLOPE_SPEC, tile, seq, seq, tile, row_tile, row_tile], [tile, row_tile],
        [jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((BH, T, 1), acc)],
        "ripple_flash_dq", interpret, D, (slopes, q, k, v, do, lse, delta))
    dslopes = jnp.sum(dl, axis=1, keepdims=True).astype(slopes.dtype) if has_decay else jnp.zeros_like(slopes)
    return dq, dk, dv, dslopes


_flash.defvjp(_flash_fwd, _flash_bwd)


def _pad_to(x, axis, size):
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, pad) if size != x.shape[axis] else x


def pallas_causal_attention(
    q_BxHxTxD: jax.Array, k_BxHxTxD: jax.Array, v_BxHxTxD: jax.Array, *, decay_H: jax.Array | None = None,
    block: int = 128, interpret: bool | None = None,
) -> jax.Array:
    """softmax(q k^T / sqrt(D) + |lambda_h| min(j - i, 0), causal mask) v per head, as a flash kernel: (B, H, T, D).

    `block` bounds the query and key tile (a power of two >= 16; the tile is min(block, 128, T
    rounded up to a power of two)). `interpret`: None runs natively on GPU/TPU (interpret mode inside
    pallas_interpret_mode()) and raises elsewhere; True/False force it (False: lower for the
    platform being compiled for, e.g. under jax.export).
    """
    B, H, T, D = q_BxHxTxD.shape
    if k_BxHxTxD.shape != (B, H, T, D) or v_BxHxTxD.shape != (B, H, T, D):
        raise ValueError(
            f"q {q_BxHxTxD.shape}, k {k_BxHxTxD.shape}, v {v_BxHxTxD.shape}: pallas attention needs q, k "
            "and v of one shape (B, H, T, D) (no cache)"
        )
    if decay_H is not None and decay_H.shape != (H,):
        raise ValueError(f"decay_H {decay_H.shape} must have shape (n_head,) = ({H},)")
    check_pallas_block(block)
    interpret = _resolve_interpret(interpret)
    if not (q_BxHxTxD.dtype == k_BxHxTxD.dtype == v_BxHxTxD.dtype):
        raise ValueError(
            f"q {q_BxHxTxD.dtype}, k {k_BxHxTxD.dtype}, v {v_BxHxTxD.dtype}: pallas attention needs one dtype")
    _check_dtype(q_BxHxTxD.dtype, interpret)
    acc = _acc_dtype(q_BxHxTxD.dtype)
    tile = min(block, MAX_TILE, max(MIN_BLOCK, pl.next_power_of_2(T)))
    T_pad = -(-T // tile) * tile
    D_pad = max(MIN_BLOCK, pl.next_power_of_2(D))
    q, k, v = (
        _pad_to(_pad_to(x.reshape(B * H, T, D), 1, T_pad), 2, D_pad) for x in (q_BxHxTxD, k_BxHxTxD, v_BxHxTxD))
    if decay_H is None:
        slopes = jnp.zeros((B * H, 1, 1), acc)
    else:
        slopes = jnp.broadcast_to(jnp.abs(decay_H).astype(acc)[None, :], (B, H)).reshape(B * H, 1, 1)
    out = _flash(q, k, v, slopes, tile, 1.0 / math.sqrt(D), interpret, decay_H is not None)
    return out[:, :T, :D].reshape(B, H, T, D)
