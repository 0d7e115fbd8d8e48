"""How chains and data sets run, decided in one place for single runs and study batches alike.

A compiled sampler program (kernels.sweep.make_runner) takes chain keys (D, C) and D data sets and
vmaps over both. Around it, this module chooses how the work meets the hardware:

- **vectorised**: one program for everything (accelerators; an odd number of chains);
- **side by side**: on one CPU device, two copies of one compiled program in threads, each
  on a half of the chains or of the data sets (`program_layout`, `split_inputs`,
  `side_by_side`): XLA:CPU runs a sweep's small kernels one after another, so two programs keep
  two cores busy where one vectorised program did not. The layout never follows the cores, so
  the results do not either; `processors` only sets how many run at once (`threads`);
- **sharded**: several local devices, the data sets split over a mesh (`shard_sets`);
- **flattened**: every (data set, chain) pair as a data set of one chain (`flatten_chains`),
  for study batches, where it ran 1.5x faster than chains vmapped over a shared data set.

Chain c of data set d always uses the key fold_in(fold_in(key(seed), d), c) (`chain_keys`), so
none of these choices changes a draw beyond float rounding, and on one platform the layout is
fixed by the run's sizes, so the same run gives the same files (multi-device runs: see
`shard_sets`). Programs are compiled once per
process and shape (`compiled`, one cache) with the options of jaximpute.xla_options.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


SEED_LIMIT = 2 ** 63        # the script reader and `configure` refuse seeds outside 0 .. 2^63 - 1


def root_key(seed: int):
    """The key of a seed, all 64 bits of it. With 32-bit types (JAX's default) jax.random.key
    keeps only a seed's low 32 bits, so 4294967301 gave the draws of 5; with 64-bit types the
    high word goes into the key too, and a seed below 2^32 keeps the key it always had."""
    if not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"seed {seed}: expected a whole number from 0 to {SEED_LIMIT - 1}")
    with jax.enable_x64(True):
        return jax.random.key(seed)


def chain_keys(seed: int, num_datasets: int, num_chains: int):
    """(D, C) keys: chain c of data set d gets fold_in(fold_in(root_key(seed), d), c)."""
    root = root_key(seed)
    return jax.vmap(lambda d: jax.vmap(lambda c: jax.random.fold_in(jax.random.fold_in(root, d), c))(
        jnp.arange(num_chains)))(jnp.arange(num_datasets))


def pad_sets(keys, data, multiple: int):
    """Keys and data of a batch padded to a multiple of `multiple` data sets with copies of the
    last one (whose results the caller drops); the real data sets keep their own keys."""
    pad = (-keys.shape[0]) % multiple
    if not pad:
        return keys, data
    extend = lambda a: np.concatenate([np.asarray(a), np.repeat(np.asarray(a)[-1:], pad, axis=0)])  # noqa: E731
    return (jnp.concatenate([keys, jnp.repeat(keys[-1:], pad, axis=0)]),
            jax.tree_util.tree_map(extend, data))


# ------------------------------------------------------------------------------ sharded

def set_mesh() -> tuple[jax.sharding.Mesh, jax.sharding.PartitionSpec] | None:
    """The local devices as a one-axis mesh over data sets, or None for a single device."""
    devices = jax.local_devices()
    if len(devices) == 1:
        return None
    return jax.sharding.Mesh(np.array(devices), ("sets",)), jax.sharding.PartitionSpec("sets")


def shard_sets(keys, data, num_sets: int):
    """Shard a batch of data sets over the local devices (jax.sharding), one block of data sets
    per device; a single data set, or a single device, stays as it is.

    The runner is vmapped over data sets, and data sets never interact, so XLA partitions the
    whole program along that axis with no communication. The batch is padded to a multiple of
    the device count with copies of its last data set (their results are dropped). Each device
    then runs a program as wide as its share, so results can differ in float rounding with the
    number of devices (`program_layout`); the report names the devices."""
    mesh = set_mesh()
    if mesh is None or num_sets == 1:
        return keys, data
    keys, data = pad_sets(keys, data, len(jax.local_devices()))
    shard = jax.sharding.NamedSharding(*mesh)
    return jax.device_put(keys, shard), jax.tree_util.tree_map(lambda a: jax.device_put(a, shard), data)


# ------------------------------------------------------------------------------ side by side

PROGRAMS_ON_CPU = 2     # programs side by side on a CPU, on every machine (`program_layout`)


def program_layout(num_chains: int, num_sets: int) -> tuple[int, int]:
    """(groups, axis): run the chains (axis 2 of the traces) or the data sets (axis 1) as
    `groups` equal programs side by side on a CPU, or everything as one (1, 0).

    XLA:CPU runs the many small kernels of a sweep one after another, with a little
    concurrency between independent ones: the seed's Ex8.2 sweep (two chains vmapped) kept 1.7
    of 2 cores busy but sampled only 20% faster than on one core. The same compiled program
    run for one chain in each of two threads sampled 27% faster than both chains in one
    (15.1 s against 20.7 s for 12,000 sweeps; JAX releases the GIL while a program runs).
    Accelerators, and several devices (`shard_sets`), get one program: there the vmapped batch
    is what fills the device.

    The layout depends on the run's sizes and the platform only, never on the cores or on
    `processors` (which set the threads, `threads`): XLA:CPU rounds a chain's float32 arithmetic
    differently in programs of different widths (on this project's test machine, programs of
    1, of 2-4 and of 6 or 12 chains gave three different sets of imputations for the same keys,
    up to 1e-5 apart), so a layout that followed the cores would make the files depend on the
    machine. Two programs: the chains split in halves when their number is even; else the data
    sets, padded to an even number (the copies' results are dropped); else one program."""
    devices = jax.local_devices()
    groups = PROGRAMS_ON_CPU
    if len(devices) > 1 or devices[0].platform != "cpu":
        return 1, 0
    if num_chains % groups == 0:
        return groups, 2
    if num_sets >= groups:
        return groups, 1
    return 1, 0


def threads(processors: int | None, groups: int) -> int:
    """How many of `groups` programs run at once: `processors` (Blimp's `CHAINS: k processors p`)
    or by default the cores this process may use, at most `groups`. Results do not depend on it
    (`program_layout`)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(groups, processors or cores))


def split_inputs(keys, data, groups: int, axis: int):
    """The (keys, data) of each of `groups` programs: a slice of the chains (axis 2: keys'
    second axis, data shared) or of the data sets (axis 1: keys' and data's first axis, padded
    with copies of the last data set to a multiple of `groups`)."""
    if axis == 2:
        size = keys.shape[1] // groups
        return [(keys[:, g * size:(g + 1) * size], data) for g in range(groups)]
    keys, data = pad_sets(keys, data, groups)
    size = keys.shape[0] // groups
    return [(keys[g * size:(g + 1) * size],
             jax.tree_util.tree_map(lambda a: a[g * size:(g + 1) * size], data)) for g in range(groups)]


def side_by_side(program: Callable, parts: list, workers: int | None = None) -> list:
    """`program(*part)` for every part, `workers` at a time (default: all at once) in threads
    (JAX releases the GIL while a compiled program runs), or in this thread for a single part
    or a single worker."""
    workers = len(parts) if workers is None else workers
    if workers <= 1:
        return [jax.block_until_ready(program(*p)) for p in parts]
    with ThreadPoolExecutor(min(workers, len(parts))) as pool:
        return list(pool.map(lambda p: jax.block_until_ready(program(*p)), parts))


# ------------------------------------------------------------------------------ flattened

def flatten_chains(runner: Callable) -> Callable:
    """`runner` (chain keys (B, C), data (B, ...)) -> RunOutput, run with every (data set, chain)
    pair as a data set of one chain (data repeated per chain); traces come back in (data set,
    chain) order. Each chain's draws depend on its key only, so this changes no result beyond
    float rounding; on XLA:CPU chains vmapped over a shared data set ran 1.5x slower than the
    same chains as data sets of one chain (a batch of 100 at J = 100, n = 10, 2 chains: 31 s
    against 19-20 s). The final state keeps the flat (B * C, 1) layout."""
    def run(keys, data):
        b, c = keys.shape
        flat = jax.tree_util.tree_map(lambda a: jnp.repeat(a, c, axis=0), data)
        out = runner(keys.reshape(b * c, 1), flat)
        back = lambda a: a.reshape(a.shape[:1] + (b, c) + a.shape[3:])  # noqa: E731
        return out._replace(burn_trace=back(out.burn_trace), imputations=back(out.imputations),
                            post_trace=back(out.post_trace), saved_params=back(out.saved_params))
    return run


# ------------------------------------------------------------------------------ compiling

_COMPILED: dict = {}          # key -> compiled program, this process
CACHE_SIZE = 16


def shapes_key(*args) -> tuple:
    """What a compiled program depends on in its inputs: tree structure, shapes, dtypes and
    shardings."""
    leaves, tree = jax.tree_util.tree_flatten(args)
    return (tree, tuple((a.shape, str(a.dtype), str(getattr(a, "sharding", ""))) for a in leaves))


def compiled(key, lower: Callable[[], jax.stages.Lowered], options: dict | None = None,
             cacheable: bool = True) -> jax.stages.Compiled:
    """`lower()` compiled with `options`, reused within the process under `key`: the batches of
    a simulation study, and repeated runs of one model, have the same program and shapes, and
    tracing and lowering the sweep again cost 2 s a batch even when the persistent cache holds
    the XLA executable. `key` must hold everything the program depends on (the caller's static
    settings and `shapes_key` of its inputs); the options are added to it. Programs that are
    not `cacheable` (a progress callback is part of the program) are compiled every time."""
    if not cacheable:
        return lower().compile(options)
    full = (key, tuple(sorted((options or {}).items())))
    hit = _COMPILED.get(full)
    if hit is None:
        hit = lower().compile(options)
        if len(_COMPILED) >= CACHE_SIZE:
            _COMPILED.pop(next(iter(_COMPILED)))
        _COMPILED[full] = hit
    return hit


def program_bytes(program: jax.stages.Compiled) -> int | None:
    """Device bytes a compiled program needs, by XLA's own account: arguments + outputs +
    temporaries, less what outputs reuse of the arguments; None where the backend does not say."""
    m = program.memory_analysis()
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - m.alias_size_in_bytes)
