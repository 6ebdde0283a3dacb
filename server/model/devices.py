"""Which devices a server runs its encoder on: every visible GPU, else the CPU.

One model replica and one worker thread per device; the batch scheduler spreads
batches over them. The CPU can be split into several logical devices, so the
multi-device path runs (and is tested) on machines without a GPU. TensorFlow fixes
its devices when it first initialises, so the split must happen before any model loads.
A worker of several (server/supervisor.py) takes its own share of the GPUs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


def configure_threads(intra_op_threads: int) -> None:
    """Threads one TensorFlow op may use (0: TensorFlow's default, one per core); before any op runs.

    On a small CPU, one thread per op leaves a core to the server's own Python work,
    and at batch 1 it is also faster (no cross-thread hand-off at each LSTM step).
    """
    import tensorflow as tf

    if intra_op_threads and tf.config.threading.get_intra_op_parallelism_threads() != intra_op_threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
        except RuntimeError:
            log.warning("TensorFlow already started; intra_op_threads=%d not applied", intra_op_threads)


def worker_share(items: Sequence[T], worker: tuple[int, int]) -> list[T]:
    """The items one worker of several takes: worker i of n takes items i, i + n, ...; with
    fewer items than workers, workers share them round-robin. (-1, n): not a worker, all."""
    index, workers = worker
    if index < 0 or workers <= 1 or not items:
        return list(items)
    return list(items[index::workers]) or [items[index % len(items)]]


def resolve_devices(requested: str, cpu_devices: int, worker: tuple[int, int] = (-1, 1)) -> list[str]:
    """Device names for "auto" (all GPUs, else the CPU split into cpu_devices), "cpu", or a comma list.

    With "auto", a worker (its index, and how many there are) runs on its share of the
    GPUs only: the others are hidden from its TensorFlow before it touches them.
    """
    import tensorflow as tf

    if cpu_devices > 1:
        _split_cpu(cpu_devices)
    if requested == "auto":
        physical = tf.config.list_physical_devices("GPU")
        share = worker_share(physical, worker)
        if share != physical:
            tf.config.set_visible_devices(share, "GPU")
        gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
        if gpus:
            return gpus
        requested = "cpu"
    if requested == "cpu":
        return [d.name for d in tf.config.list_logical_devices("CPU")][: max(cpu_devices, 1)]
    names = [name.strip() for name in requested.split(",") if name.strip()]
    known = {d.name for d in tf.config.list_logical_devices()}
    known |= {n.replace("/device:", "/") for n in known}
    missing = [n for n in names if n not in known]
    if missing or not names:
        raise ValueError(f"devices {missing or requested!r} are not visible; visible: {sorted(known)}")
    return names


def _split_cpu(count: int) -> None:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    wanted = [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
    try:
        tf.config.set_logical_device_configuration(cpu, wanted)
    except RuntimeError:
        # TensorFlow already initialised (another server in this process configured it).
        have = len(tf.config.list_logical_devices("CPU"))
        if have < count:
            raise ValueError(
                f"cannot split the CPU into {count} devices: TensorFlow already started with {have}; "
                "set cpu_devices before anything else uses TensorFlow"
            ) from None
