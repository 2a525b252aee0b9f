"""Argument checks and constants that both backends share (numpy and the standard library only).

Each backend's op or layer calls the same check, so bad input gets the same message in JAX and
in torch; the constants (initialisations, floors, valid variants) are defined once here.
"""

from __future__ import annotations

# --------------------------------------------------------------------------------------------
# Fused attention (ops/pallas_attention.py): tile rule of attention_impl="pallas"

# Triton tiles are powers of two and its dots need >= 16 rows; TPU sublane tiles are 8 (float32)
# or 16 (bfloat16) rows: one rule serves both.
PALLAS_MIN_BLOCK = 16


def check_pallas_block(block, field: str = "attention_block", context: str = "") -> None:
    """ValueError unless `block` obeys the pallas tile rule: a power of two >= PALLAS_MIN_BLOCK."""
    if isinstance(block, bool) or not isinstance(block, int) or block < PALLAS_MIN_BLOCK or block & (block - 1):
        raise ValueError(
            f"{field}={block!r} breaks the pallas tile rule{context}: the query/key tile must be a power of two "
            f">= {PALLAS_MIN_BLOCK} (Triton tiles are powers of two with dots of >= 16 rows; TPU "
            "sublane tiles are 8 or 16 rows)"
        )


# --------------------------------------------------------------------------------------------
# GateLoop scan (ops/gate_loop.py)


def check_gate_loop_args(a_shape, kv_shape, a_dtype, kv_dtype, axis: int, h0_shape=None) -> int:
    """Validate scan arguments (shared by both backends); returns the axis made non-negative.

    Rules: equal dtypes; equal rank; the scan axis of equal, non-zero length; every other axis of
    `a` equal to kv's or 1; h0 (if given) of kv's shape without the scan axis.
    """
    a_shape, kv_shape = tuple(a_shape), tuple(kv_shape)
    if str(a_dtype) != str(kv_dtype):
        raise ValueError(
            f"a and kv must have the same dtype, got a {a_dtype} (shape {a_shape}) and "
            f"kv {kv_dtype} (shape {kv_shape})"
        )
    if len(a_shape) != len(kv_shape) or len(kv_shape) == 0:
        raise ValueError(
            f"a and kv must have the same (non-zero) rank, got a shape {a_shape} and kv shape {kv_shape}"
        )
    ndim = len(kv_shape)
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis={axis} is out of range for kv shape {kv_shape}")
    axis = axis % ndim
    if kv_shape[axis] == 0 or a_shape[axis] == 0:
        raise ValueError(
            f"the scan axis {axis} must have length >= 1, got a shape {a_shape} and kv shape {kv_shape}"
        )
    for d, (na, nk) in enumerate(zip(a_shape, kv_shape, strict=True)):
        ok = na == nk if d == axis else na in (1, nk)
        if not ok:
            rule = "equal length" if d == axis else "equal size or size 1 in a"
            raise ValueError(
                f"a shape {a_shape} does not match kv shape {kv_shape} on axis {d} "
                f"(scan axis {axis}; rule: {rule})"
            )
    if h0_shape is not None:
        want = kv_shape[:axis] + kv_shape[axis + 1 :]
        if tuple(h0_shape) != want:
            raise ValueError(
                f"h0 must have kv's shape without the scan axis {axis}, i.e. {want}, got {tuple(h0_shape)} "
                f"(kv shape {kv_shape})"
            )
    return axis


def check_chunked_args(q_shape, k_shape, v_shape, a_shape, h0_shape, chunk) -> None:
    """Validate the chunked GateLoop operator's arguments (shared by both backends).

    Rules: chunk a positive integer; q, k of shape (B, T, H, dk); v (B, T, H, dv) with the same
    B, T, H and T >= 1; a (B, T, H); h0 (if given) (B, H, dk, dv).
    """
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk={chunk!r} must be a positive integer (the chunk length in positions)")
    q_shape, k_shape, v_shape, a_shape = (tuple(s) for s in (q_shape, k_shape, v_shape, a_shape))
    shapes = f"q {q_shape}, k {k_shape}, v {v_shape}, a {a_shape}"
    if not (len(q_shape) == len(k_shape) == len(v_shape) == 4 and len(a_shape) == 3):
        raise ValueError(f"q, k, v must be (B, T, H, d) and a (B, T, H), got {shapes}")
    if q_shape != k_shape:
        raise ValueError(f"q and k must have the same shape (B, T, H, dk), got {shapes}")
    if v_shape[:3] != q_shape[:3] or a_shape != q_shape[:3]:
        raise ValueError(f"q, k, v and a must share (B, T, H), got {shapes}")
    if q_shape[1] == 0:
        raise ValueError(f"the sequence axis 1 must have length >= 1, got {shapes}")
    if h0_shape is not None:
        want = (q_shape[0], q_shape[2], q_shape[3], v_shape[3])
        if tuple(h0_shape) != want:
            raise ValueError(f"h0 must have shape (B, H, dk, dv) = {want}, got {tuple(h0_shape)} ({shapes})")


# The log-space scan's floor on |a| and |kv| (the reference's eps for float32/float64; it uses 1e-7
# for float16, which this scan never computes in).
HEINSEN_EPS = 1e-20


# --------------------------------------------------------------------------------------------
# lof310 orthogonal-parallel residual (ops/residual.py, layers/residual.py)

# lof310 notebook init of the per-feature mixing vectors: alpha ~ N(0.25, 0.5), beta ~ N(0.15, 0.25)
ALPHA_INIT = (0.25, 0.5)
BETA_INIT = (0.15, 0.25)
VARIANTS = ("projection", "reference")
NORM_FLOOR = 1e-8  # floor on ||x||^2 in the projection coefficient (the seed's value)


def check_residual_args(x_shape, y_shape, alpha_shape, beta_shape, variant: str) -> None:
    """Raise ValueError for a bad variant or mismatched shapes (shared by both backends)."""
    if variant not in VARIANTS:
        raise ValueError(
            f"variant={variant!r} is not a known orthogonal-parallel variant; "
            f"valid choices: {', '.join(VARIANTS)}"
        )
    x_shape, y_shape = tuple(x_shape), tuple(y_shape)
    if x_shape != y_shape:
        raise ValueError(f"x and y must have the same shape, got x {x_shape} and y {y_shape}")
    if len(x_shape) < 1:
        raise ValueError(f"x must have a feature axis, got shape {x_shape}")
    features = x_shape[-1]
    for name, shape in (("alpha", tuple(alpha_shape)), ("beta", tuple(beta_shape))):
        if shape not in ((), (1,), (features,)):
            raise ValueError(
                f"{name} must have shape () or ({features},) to match the feature axis of x "
                f"{x_shape}, got shape {shape}"
            )


# --------------------------------------------------------------------------------------------
# ShiftMax (ops/shiftmax.py)

DEFAULT_FLOOR = 0.01
DEFAULT_POWER = 2
MAX_POWER = 8


def check_floor(floor: float, power: int = DEFAULT_POWER) -> None:
    """Raise ValueError unless 0 <= floor < 1 and power is an int in [1, 8]."""
    if not 0.0 <= float(floor) < 1.0:
        raise ValueError(f"floor={floor} must be in [0, 1)")
    if isinstance(power, bool) or not isinstance(power, int) or not 1 <= power <= MAX_POWER:
        raise ValueError(f"power={power!r} must be an integer in [1, {MAX_POWER}]")


def int_power(f, power: int):
    """f ** power for a small positive int, as power - 1 multiplications (no exp/log)."""
    out = f
    for _ in range(power - 1):
        out = out * f
    return out


GATE_NORMALISERS = ("softmax", "shiftmax")


# --------------------------------------------------------------------------------------------
# Gradient conditioning (optim/conditioning.py)

MODES = ("schedule", "learned")


def _concrete(value) -> float | None:
    """float(value), or None for a traced value that has no concrete number yet."""
    try:
        return float(value)
    except Exception:  # a JAX tracer raises ConcretizationTypeError
        return None


def default_depths(n: int) -> list[float]:
    """Relative depth positions i / (n - 1) of n tensors in order (0.0 for a single tensor)."""
    return [i / (n - 1) if n > 1 else 0.0 for i in range(n)]


def check_condition_args(mode: str, depths, n_float: int, **numbers) -> None:
    """Raise ValueError for an unknown mode, bad depths or (concrete) out-of-range numbers."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not a known conditioning mode; valid: {', '.join(MODES)}")
    if depths is not None:
        if len(depths) != n_float:
            raise ValueError(
                f"depths has {len(depths)} entries but there are {n_float} floating-point tensors"
            )
        for d in depths:
            if not 0.0 <= float(d) <= 1.0:
                raise ValueError(f"depths entries must be in [0, 1], got {d}")
    for name, value in numbers.items():
        v = _concrete(value)
        if v is None:  # traced (e.g. optax.inject_hyperparams under jit)
            continue
        rule = {"scale_min": v > 0, "scale_max": v > 0, "hyper_lr": 0 <= v < 1,
                "center": 0 <= v < 1, "base_scale": v > 0, "vector_scale": v > 0,
                "size_power": True, "depth_gain": v > -1}[name]
        if not rule:
            limits = {"scale_min": "> 0", "scale_max": "> 0", "hyper_lr": "in [0, 1)",
                      "center": "in [0, 1)", "base_scale": "> 0", "vector_scale": "> 0",
                      "depth_gain": "> -1"}[name]
            raise ValueError(f"{name}={value} must be {limits}")
    mn, mx = numbers.get("scale_min"), numbers.get("scale_max")
    if None not in (_concrete(mn), _concrete(mx)) and float(mn) > float(mx):
        raise ValueError(f"scale_min={mn} must be <= scale_max={mx}")
