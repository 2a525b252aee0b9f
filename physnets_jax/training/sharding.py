"""Data-parallel and fully sharded (FSDP) training with jax.sharding: one Mesh with axes
("data", "fsdp"). Batches are split over both axes; every parameter and optimizer-state array is
split along its largest dimension divisible by the fsdp axis size (replicated otherwise). The
jitted train step is unchanged: XLA inserts the gathers and reductions that the shardings imply.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXES = ("data", "fsdp")
_DISTRIBUTED_ENV = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS")
_CLUSTER_SIZE_ENV = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "JAX_NUM_PROCESSES", "NUM_PROCESSES")


def parse_mesh(spec: str) -> dict[str, int]:
    """'data:4' / 'data:2,fsdp:2' / 'fsdp:-1' -> {'data': n, 'fsdp': m}; -1 takes the remaining devices."""
    sizes = {"data": 1, "fsdp": 1}
    given = set()
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        name, sep, value = part.partition(":")
        name = name.strip()
        if not sep or name not in AXES:
            raise ValueError(
                f"--mesh {spec!r}: each part must be AXIS:SIZE with AXIS one of {', '.join(AXES)} "
                f"(e.g. data:2,fsdp:2), got {part!r}"
            )
        try:
            size = int(value)
        except ValueError:
            raise ValueError(f"--mesh {spec!r}: size of axis {name!r} must be an integer, got {value!r}") from None
        if size == 0 or size < -1:
            raise ValueError(f"--mesh {spec!r}: size of axis {name!r} must be positive or -1, got {size}")
        sizes[name] = size
        given.add(name)
    if not given:
        raise ValueError(f"--mesh {spec!r} names no axis; use e.g. data:4 or data:2,fsdp:2")
    return sizes


def make_mesh(spec: str | dict[str, int], devices=None) -> Mesh:
    """A Mesh with axes ('data', 'fsdp') over `devices` (default: all devices of all processes)."""
    sizes = parse_mesh(spec) if isinstance(spec, str) else dict(spec)
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    free = [k for k, v in sizes.items() if v == -1]
    if len(free) > 1:
        raise ValueError(f"mesh {sizes}: at most one axis may be -1")
    fixed = int(np.prod([v for v in sizes.values() if v != -1]))
    if free:
        if n % fixed:
            raise ValueError(f"mesh {sizes}: {n} devices are not divisible by {fixed}")
        sizes[free[0]] = n // fixed
    total = sizes["data"] * sizes["fsdp"]
    if total != n:
        raise ValueError(
            f"mesh data:{sizes['data']} x fsdp:{sizes['fsdp']} = {total} devices, but {n} are available "
            f"({jax.default_backend()}); the product must equal the device count"
        )
    grid = np.array(devices).reshape(sizes["data"], sizes["fsdp"])
    return Mesh(grid, AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batch axis split over ('data', 'fsdp'); other axes whole."""
    return NamedSharding(mesh, PartitionSpec(AXES))


def array_spec(shape: tuple[int, ...], fsdp: int, min_size: int = 1024) -> PartitionSpec:
    """Split the largest dimension divisible by `fsdp` over 'fsdp' (arrays smaller than min_size
    entries, or with no such dimension, stay replicated)."""
    if fsdp <= 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return PartitionSpec()
    candidates = [i for i in np.argsort(shape)[::-1] if shape[i] % fsdp == 0]
    if not candidates:
        return PartitionSpec()
    spec = [None] * len(shape)
    spec[int(candidates[0])] = "fsdp"
    return PartitionSpec(*spec)


def shard_tree(tree, mesh: Mesh, min_size: int = 1024):
    """device_put every array leaf of `tree` with its FSDP NamedSharding (keys replicated)."""
    fsdp = mesh.shape["fsdp"]

    def put(x):
        if not hasattr(x, "shape"):
            return x
        if jax.numpy.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.device_put(x, NamedSharding(mesh, PartitionSpec()))
        return jax.device_put(x, NamedSharding(mesh, array_spec(tuple(x.shape), fsdp, min_size)))

    return jax.tree.map(put, tree)


def put_batch(mesh: Mesh | None, *arrays: np.ndarray):
    """Host batches (global, identical on every process) as arrays sharded along the batch axis."""
    if mesh is None:
        return arrays
    sharding = batch_sharding(mesh)
    n = mesh.size
    out = []
    for a in arrays:
        if a.shape[0] % n:
            raise ValueError(f"batch_size={a.shape[0]} must be divisible by the mesh's {n} devices")
        out.append(jax.make_array_from_callback(a.shape, sharding, lambda idx, a=a: a[idx]))
    return tuple(out)


def maybe_initialize_distributed() -> bool:
    """Call jax.distributed.initialize() when the usual multi-process environment variables are
    set (JAX_COORDINATOR_ADDRESS / COORDINATOR_ADDRESS, or SLURM / Open MPI with more than one
    task); returns whether it did."""
    explicit = any(os.environ.get(k) for k in _DISTRIBUTED_ENV)
    cluster = any(int(os.environ.get(k, "1") or 1) > 1 for k in _CLUSTER_SIZE_ENV)
    if not (explicit or cluster):
        return False
    if jax.distributed.is_initialized():
        return True
    jax.distributed.initialize()
    return True
