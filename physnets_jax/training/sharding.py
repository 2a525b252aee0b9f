"""Data-parallel and fully sharded (FSDP) training with jax.sharding, in one process or several.

One Mesh with axes ("data", "fsdp") over all devices of all processes (docs/training.md, "Mesh
rules"). Batches are split over both axes; every parameter and optimizer-state array of at least
`min_size` entries is split along its largest dimension divisible by the fsdp axis size
(replicated otherwise). The jitted train step is unchanged: XLA inserts the gathers and
reductions that the shardings imply. In a multi-process run each process reads only the batch
rows its own devices hold (`global_batch`), and `initialize_distributed` connects the processes
before JAX starts.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXES = ("data", "fsdp")
FSDP_MIN_SIZE = 1024  # arrays with fewer entries stay replicated under fsdp
COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"  # read by jax.distributed.initialize itself
NUM_PROCESSES_ENV = "JAX_NUM_PROCESSES"  # ours: JAX reads these two only from Slurm/Open MPI/TPU metadata
PROCESS_ID_ENV = "JAX_PROCESS_ID"
_CLUSTER_SIZE_ENV = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")


def parse_mesh(spec: str) -> dict[str, int]:
    """'data:4' / 'data:2,fsdp:2' / 'fsdp:-1' -> {'data': n, 'fsdp': m}; -1 takes the remaining
    devices; an axis named twice is refused."""
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
        if name in given:
            raise ValueError(f"--mesh {spec!r}: axis {name!r} is given twice; name each axis at most once")
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


def _where_devices(n: int) -> str:
    procs = jax.process_count()
    where = f"{n} {jax.default_backend()} devices"
    return where + (f" in {procs} processes" if procs > 1 else "")


def make_mesh(spec: str | dict[str, int], devices=None) -> Mesh:
    """A Mesh with axes ('data', 'fsdp') over `devices` (default: all devices of all processes,
    in jax.devices() order, so each process's devices are consecutive). The product of the axis
    sizes must equal the device count; -1 takes what the other axis leaves."""
    sizes = parse_mesh(spec) if isinstance(spec, str) else dict(spec)
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    free = [k for k, v in sizes.items() if v == -1]
    if len(free) > 1:
        raise ValueError(f"mesh {sizes}: at most one axis may be -1")
    fixed = int(np.prod([v for v in sizes.values() if v != -1]))
    if free:
        if n % fixed:
            raise ValueError(
                f"mesh {sizes}: the {_where_devices(n)} are not divisible by the other axis's size {fixed}"
            )
        sizes[free[0]] = n // fixed
    total = sizes["data"] * sizes["fsdp"]
    if total != n:
        raise ValueError(
            f"mesh data:{sizes['data']} x fsdp:{sizes['fsdp']} = {total} devices, but there are "
            f"{_where_devices(n)}; the product must equal the device count"
        )
    grid = np.array(devices).reshape(sizes["data"], sizes["fsdp"])
    return Mesh(grid, AXES)


def describe_mesh(mesh: Mesh) -> str:
    """'data:2 x fsdp:2' for a mesh."""
    return " x ".join(f"{name}:{mesh.shape[name]}" for name in AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batch axis split over ('data', 'fsdp'); other axes whole."""
    return NamedSharding(mesh, PartitionSpec(AXES))


def check_batch(mesh: Mesh | None, batch_size: int, what: str = "--batch-size") -> None:
    """Refuse a batch that the mesh's devices cannot share equally (the error names both numbers)."""
    if mesh is None:
        return
    if batch_size % mesh.size:
        raise ValueError(
            f"{what} {batch_size} is not divisible by the {mesh.size} devices of the mesh "
            f"({describe_mesh(mesh)}): the batch is split over both axes, so it must be a multiple of {mesh.size}"
        )


def local_rows(mesh: Mesh, batch_size: int) -> np.ndarray:
    """Sorted indices of the batch rows held by this process's devices under batch_sharding."""
    index_map = batch_sharding(mesh).addressable_devices_indices_map((batch_size,))
    rows = set()
    for index in index_map.values():
        rows.update(range(batch_size)[index[0]])
    return np.array(sorted(rows), dtype=np.int64)


def global_batch(mesh: Mesh | None, batch_size: int, fetch: Callable[[np.ndarray | None], tuple]):
    """Arrays of one global batch split along the batch axis. fetch(rows) returns host arrays of
    the given batch rows (rows=None: all); each process fetches only its own rows and
    jax.make_array_from_process_local_data assembles the global arrays."""
    if mesh is None:
        return fetch(None)
    check_batch(mesh, batch_size)
    rows = local_rows(mesh, batch_size)
    sharding = batch_sharding(mesh)
    return tuple(
        jax.make_array_from_process_local_data(sharding, np.asarray(a), (batch_size, *np.shape(a)[1:]))
        for a in fetch(rows)
    )


def array_spec(shape: tuple[int, ...], fsdp: int, min_size: int = FSDP_MIN_SIZE) -> PartitionSpec:
    """Split the largest dimension divisible by `fsdp` over 'fsdp' (arrays smaller than min_size
    entries, or with no such dimension, stay replicated)."""
    if fsdp <= 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return PartitionSpec()
    candidates = [i for i in np.argsort(shape, kind="stable")[::-1] if shape[i] % fsdp == 0]
    if not candidates:
        return PartitionSpec()
    spec = [None] * len(shape)
    spec[int(candidates[0])] = "fsdp"
    return PartitionSpec(*spec)


def shard_tree(tree, mesh: Mesh, min_size: int = FSDP_MIN_SIZE):
    """device_put every array leaf of `tree` with its FSDP NamedSharding (keys replicated). In a
    multi-process run every process must pass the same values (e.g. a model built from one seed)."""
    fsdp = mesh.shape["fsdp"]
    spans_processes = mesh.is_multi_process

    def place(x, sharding):
        if not spans_processes or (isinstance(x, jax.Array) and not x.is_fully_addressable):
            return jax.device_put(x, sharding)
        # a process-local value: each process fills its own shards from its copy, with no
        # cross-process traffic (device_put would compare the values across processes first)
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    def put(x):
        if not hasattr(x, "shape"):
            return x
        if jax.numpy.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = place(jax.random.key_data(x), NamedSharding(mesh, PartitionSpec()))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        return place(x, NamedSharding(mesh, array_spec(tuple(x.shape), fsdp, min_size)))

    return jax.tree.map(put, tree)


def to_local(tree):
    """`tree` with every array that spans other processes' devices replaced by a full copy on this
    process's first device (a collective: every process must call it). Single-process trees are
    returned unchanged."""
    leaves = [x for x in jax.tree.leaves(tree) if isinstance(x, jax.Array)]
    if all(x.is_fully_addressable for x in leaves):
        return tree
    device = jax.local_devices()[0]

    def gather(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return x
        whole = jax.jit(lambda a: a, out_shardings=NamedSharding(x.sharding.mesh, PartitionSpec()))(x)
        return jax.device_put(whole.addressable_data(0), device)

    return jax.tree.map(gather, tree)


def any_process(flag: bool) -> bool:
    """True on every process when `flag` is true on any (a collective in multi-process runs)."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.array([int(bool(flag))], np.int32))))


def barrier(name: str) -> None:
    """Wait until every process has reached the barrier `name` (no-op in one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def is_main_process() -> bool:
    """True on process 0 (the one that writes run files, metrics, plots and prints)."""
    return jax.process_index() == 0


# --------------------------------------------------------------------------------------------
# Connecting the processes


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} must be an integer") from None


def split_address(address: str) -> tuple[str, int]:
    """('host', port) of 'host:port' or '[v6]:port'; ValueError naming the address otherwise."""
    host, sep, port = address.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"coordinator address {address!r} must be HOST:PORT, e.g. 10.0.0.2:1234")
    return host, int(port)


def wait_for_coordinator(address: str, timeout: float) -> None:
    """Poll a TCP connection to `address` until it is accepted; after `timeout` seconds raise
    ConnectionError naming the address (JAX itself would abort the process without a message)."""
    host, port = split_address(address)
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            with socket.create_connection((host, port), timeout=max(0.1, min(2.0, deadline - time.monotonic()))):
                return
        except OSError as err:
            last = err
        if time.monotonic() >= deadline:
            raise ConnectionError(
                f"could not reach the coordinator at {address} within {timeout:g} s ({last}); is process 0 "
                f"running there and is {COORDINATOR_ENV} the address of its host?"
            )
        time.sleep(0.2)


def distributed_requested(force: bool = False) -> bool:
    """Whether this process is one of several: JAX_COORDINATOR_ADDRESS is set, Slurm or Open MPI
    started more than one task, or `force` (e.g. a TPU pod slice, found by JAX itself)."""
    if force or os.environ.get(COORDINATOR_ENV):
        return True
    return any((_env_int(k) or 1) > 1 for k in _CLUSTER_SIZE_ENV)


def initialize_distributed(force: bool = False, *, timeout: float = 300, heartbeat_timeout: int = 100) -> bool:
    """Connect this process to the others with jax.distributed.initialize when
    distributed_requested(force); returns whether it did. Must run before any JAX computation.

    JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID name the
    run explicitly; otherwise JAX detects Slurm, Open MPI or a Cloud TPU pod slice. `timeout`:
    seconds to wait for the coordinator and the other processes; `heartbeat_timeout`: seconds after
    which a process that stopped responding is declared dead, and every process stops.
    """
    if not distributed_requested(force):
        return False
    if jax.distributed.is_initialized():
        return True
    if not timeout > 0 or not heartbeat_timeout > 0:
        raise ValueError(f"coordinator timeout {timeout} and heartbeat timeout {heartbeat_timeout} must be > 0 s")
    address = os.environ.get(COORDINATOR_ENV) or None
    num, pid = _env_int(NUM_PROCESSES_ENV), _env_int(PROCESS_ID_ENV)
    if (num is None) != (pid is None):
        raise ValueError(f"set both {NUM_PROCESSES_ENV} and {PROCESS_ID_ENV} (or neither, to let JAX detect them); "
                         f"got {NUM_PROCESSES_ENV}={num}, {PROCESS_ID_ENV}={pid}")
    if num is not None:
        if num < 1 or not 0 <= pid < num:
            raise ValueError(f"{PROCESS_ID_ENV}={pid} must be in [0, {NUM_PROCESSES_ENV}={num})")
        if address is None:
            raise ValueError(f"{NUM_PROCESSES_ENV} and {PROCESS_ID_ENV} need {COORDINATOR_ENV}=HOST:PORT of process 0")
    if address is not None:
        split_address(address)
        if pid is not None and pid != 0:
            wait_for_coordinator(address, timeout)
    if jax.config.jax_cpu_collectives_implementation is None:  # CPU-only runs need cross-process collectives
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address=address, num_processes=num, process_id=pid,
            initialization_timeout=int(max(1, round(timeout))), heartbeat_timeout_seconds=int(heartbeat_timeout),
        )
    except ValueError as err:  # JAX found no cluster to take the missing values from
        raise ValueError(
            f"could not start a multi-process run ({err}); set {COORDINATOR_ENV}, {NUM_PROCESSES_ENV} and "
            f"{PROCESS_ID_ENV}, or run under Slurm, Open MPI or on a Cloud TPU pod slice"
        ) from None
    except RuntimeError as err:  # JAX already ran something in this interpreter
        raise ValueError(f"could not start a multi-process run: {err} Start the training in a fresh process.") from None
    return True

