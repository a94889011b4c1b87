"""Facts about this machine: accelerator, memory, and power draw where the hardware reports it.

Linux reads /proc; NVIDIA GPUs are read through NVML (`pynvml`, imported lazily, optional).
macOS asks `sysctl` and `vm_stat`; on Apple Silicon the accelerator is the unified-memory GPU.
The parsers are plain functions over text so they can be tested with fixture strings anywhere.
"""

from __future__ import annotations

import logging
import platform
import re
import subprocess
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from node_agent.types import Hardware

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Memory:
    """System memory now, in bytes."""

    total: int
    available: int


@dataclass(frozen=True)
class Gpus:
    """NVIDIA GPUs as NVML reports them."""

    name: str
    count: int
    memory_bytes: int


def detect() -> Hardware:
    """This machine's hardware facts."""
    system, arch = platform.system(), platform.machine()
    mem = memory()
    if system == "Darwin":
        brand = _run(["sysctl", "-n", "machdep.cpu.brand_string"]).strip() or "Mac"
        kind = "apple" if arch == "arm64" else "cpu"
        return _hardware(kind, brand, 1, mem.total, mem, system, arch)
    gpus = _nvidia_gpus()
    if gpus is not None:
        return _hardware("nvidia", gpus.name, gpus.count, gpus.memory_bytes, mem, system, arch)
    name = parse_cpu_model(_read_text("/proc/cpuinfo")) or platform.processor() or arch
    return _hardware("cpu", name, 1, mem.total, mem, system, arch)


def memory() -> Memory:
    """Total and available system memory now."""
    if platform.system() == "Darwin":
        total = parse_sysctl_int(_run(["sysctl", "-n", "hw.memsize"]))
        return Memory(total, min(total, parse_vm_stat(_run(["vm_stat"]))))
    return parse_meminfo(_read_text("/proc/meminfo"))


def power_watts() -> float | None:
    """Power the accelerators draw now, in watts; None when it cannot be measured."""
    nvml = _nvml()
    if nvml is None:
        return None  # Macs need root (powermetrics) to report power; not worth it for an agent
    try:
        count = nvml.nvmlDeviceGetCount()
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        return float(sum(nvml.nvmlDeviceGetPowerUsage(h) for h in handles)) / 1000.0
    except Exception as exc:  # NVML errors are many and driver-specific; none is fatal here
        logger.debug("NVML power reading failed: %s", exc)
        return None


def capped(hardware: Hardware, limit_bytes: int | None) -> Hardware:
    """The same facts with memory capped at `limit_bytes` (a testing knob), or unchanged."""
    if limit_bytes is None:
        return hardware
    return replace(
        hardware,
        memory_total_bytes=min(hardware.memory_total_bytes, limit_bytes),
        memory_available_bytes=min(hardware.memory_available_bytes, limit_bytes),
        accelerator_memory_bytes=min(hardware.accelerator_memory_bytes, limit_bytes),
    )


def _hardware(
    kind: str, name: str, count: int, accel_bytes: int, mem: Memory, system: str, arch: str
) -> Hardware:
    return Hardware(
        accelerator_kind=kind,
        accelerator_name=name,
        accelerator_count=count,
        accelerator_memory_bytes=accel_bytes,
        memory_total_bytes=mem.total,
        memory_available_bytes=mem.available,
        os=system.lower(),
        arch=arch,
    )


# --- parsers -----------------------------------------------------------------------------------


def parse_meminfo(text: str) -> Memory:
    """Total and available memory from /proc/meminfo (values are in kB)."""
    fields = dict(re.findall(r"^(\w+):\s+(\d+)", text, flags=re.MULTILINE))
    total = int(fields.get("MemTotal", 0)) * 1024
    if "MemAvailable" in fields:
        available = int(fields["MemAvailable"]) * 1024
    else:  # kernels before 3.14 lack MemAvailable; free + page cache is the old estimate
        available = sum(int(fields.get(k, 0)) for k in ("MemFree", "Buffers", "Cached")) * 1024
    return Memory(total, available)


def parse_cpu_model(text: str) -> str:
    """The CPU model from /proc/cpuinfo ("" when it names none, as on some ARM boards)."""
    for key in ("model name", "Model", "Hardware"):  # x86, then ARM boards' own names
        match = re.search(rf"^{key}\s*:\s*(.+)$", text, flags=re.MULTILINE)
        if match:
            return match.group(1).strip()
    return ""


def parse_sysctl_int(text: str) -> int:
    """An integer answer from `sysctl -n` (0 when missing)."""
    text = text.strip()
    return int(text) if text.isdigit() else 0


def parse_vm_stat(text: str) -> int:
    """Available bytes from `vm_stat`: free, speculative and inactive pages can be reclaimed."""
    size = re.search(r"page size of (\d+) bytes", text)
    page = int(size.group(1)) if size else 4096
    counts = dict(re.findall(r'^"?([\w -]+?)"?:\s+(\d+)\.', text, flags=re.MULTILINE))
    reclaimable = ("Pages free", "Pages speculative", "Pages inactive")
    pages = sum(int(counts.get(k, 0)) for k in reclaimable)
    return pages * page


# --- NVIDIA ------------------------------------------------------------------------------------


@cache
def _nvml() -> Any:
    """The initialised pynvml module, or None when there is no NVIDIA driver or no pynvml."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # ImportError, or NVMLError when no driver is loaded
        logger.debug("NVML unavailable: %s", exc)
        return None
    return pynvml


def _nvidia_gpus() -> Gpus | None:
    """The machine's NVIDIA GPUs (the first one's name, all of their memory), or None."""
    nvml = _nvml()
    if nvml is None:
        return None
    try:
        count = nvml.nvmlDeviceGetCount()
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        if not handles:
            return None
        name = nvml.nvmlDeviceGetName(handles[0])
        total = sum(nvml.nvmlDeviceGetMemoryInfo(h).total for h in handles)
    except Exception as exc:  # a driver/library mismatch must not stop the agent
        logger.warning("NVML failed, treating this node as CPU-only: %s", exc)
        return None
    name = name.decode() if isinstance(name, bytes) else str(name)
    return Gpus(name=name, count=count, memory_bytes=int(total))


def nvidia_memory() -> tuple[Memory, ...]:
    """Total and free memory of each NVIDIA GPU, in NVML's order; () without NVML."""
    nvml = _nvml()
    if nvml is None:
        return ()
    try:
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
        infos = [nvml.nvmlDeviceGetMemoryInfo(h) for h in handles]
    except Exception as exc:  # as in _nvidia_gpus: a driver mismatch must not stop the agent
        logger.warning("NVML memory reading failed: %s", exc)
        return ()
    return tuple(Memory(int(i.total), int(i.free)) for i in infos)


def has_nvidia_gpu() -> bool:
    """Whether NVML sees at least one NVIDIA GPU."""
    return _nvidia_gpus() is not None


def _run(argv: list[str]) -> str:
    """A command's stdout, or "" when it is missing or fails (facts degrade, the agent runs)."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        logger.debug("%s failed: %s", argv[0], exc)
        return ""


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""
