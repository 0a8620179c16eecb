"""Where the model runs and in which precision, decided once with accelerate's view of the machine.

bf16 is fast only where the hardware has bf16 matrix units (avx512_bf16 / AMX on x86 CPUs, Ampere+ GPUs); on a
CPU without them PyTorch emulates it and a ViT step gets ~500x *slower*, so "auto" checks the hardware first.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform

import torch

from .errors import VizError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
ENV_PRECISION = "VFV_PRECISION"
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def accelerate_state():
    """accelerate's per-process state (a singleton): rank, world size and device of this process.

    On a machine without GPUs it must be created with cpu=True, or processes launched together are not joined
    into one gloo group."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' takes the device accelerate assigns to this process (one GPU per process under `accelerate launch`)."""
    if device in (None, "", "auto"):
        return accelerate_state().device
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise VizError(f"Unknown device '{device}': use auto, cpu, cuda or cuda:N.") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise VizError(f"Device '{device}' is not available here", option="device", value=device,
                       fix="{option:use} cpu or auto.")
    return resolved


@functools.cache
def cpu_has_bf16_units() -> bool:
    """True when the CPU advertises native bf16 matrix instructions (Linux /proc/cpuinfo flags)."""
    if platform.system() != "Linux":
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_precision(precision: str, device: torch.device) -> str:
    """Pick bf16 where the hardware runs it natively, fp16 on older GPUs, fp32 otherwise.

    VFV_PRECISION (e.g. fp32) replaces what "auto" would pick: for numbers that must not depend on the machine."""
    if precision not in PRECISIONS:
        raise VizError(f"Unknown precision '{precision}': use one of {', '.join(PRECISIONS)}.")
    pinned = os.environ.get(ENV_PRECISION, "").strip()
    if precision == "auto" and pinned not in ("", "auto"):
        if pinned not in PRECISIONS:
            raise VizError(f"{ENV_PRECISION}={pinned!r} is not a precision: set it to one of {', '.join(PRECISIONS)}.")
        return pinned
    if precision != "auto":
        return precision
    if device.type == "cuda":
        from accelerate.utils import is_bf16_available

        return "bf16" if is_bf16_available() else "fp16"
    if device.type == "cpu":
        return "bf16" if cpu_has_bf16_units() else "fp32"
    return "fp32"


def available_cpus() -> int:
    """CPUs this process can really use: its affinity mask, capped by a cgroup CPU quota (containers such as a
    Space see the host's cores but may use only their quota)."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        count = min(count, max(1, int(quota)))
    return max(1, count)


def _cgroup_cpu_quota() -> float | None:
    """CPUs allowed by the cgroup (v2 cpu.max, else v1 cfs quota), None when unlimited or unknown."""
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read())
        period = int(open("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def limit_cpu_threads() -> int:
    """Never more torch threads than usable CPUs: on a 2-core machine 4 threads made a ViT-B/16 step 40x slower
    (60.5 s against 1.5 s). An explicit OMP_NUM_THREADS is left alone. Returns the thread count in use."""
    cpus = available_cpus()
    if torch.get_num_threads() > cpus and not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(cpus)
    return torch.get_num_threads()


def autocast(device: torch.device, precision: str):
    """Mixed-precision context for the model's forward pass; parameters being optimized stay fp32 outside it."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])
