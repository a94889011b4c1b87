"""Hardware facts: the /proc, sysctl and vm_stat parsers over fixture text, and this machine."""

from __future__ import annotations

from node_agent import hardware
from node_agent.hardware import (
    Memory,
    capped,
    parse_cpu_model,
    parse_meminfo,
    parse_sysctl_int,
    parse_vm_stat,
)

MEMINFO = """\
MemTotal:       24684096 kB
MemFree:        23279324 kB
MemAvailable:   23582996 kB
Buffers:            7904 kB
Cached:           444036 kB
SwapCached:            0 kB
"""

OLD_MEMINFO = """\
MemTotal:        1000 kB
MemFree:          100 kB
Buffers:           20 kB
Cached:           300 kB
"""

X86_CPUINFO = """\
processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC 7763 64-Core Processor
stepping\t: 1
"""

PI_CPUINFO = """\
processor\t: 0
BogoMIPS\t: 108.00
Hardware\t: BCM2835
Revision\t: c03114
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""

VM_STAT = """\
Mach Virtual Memory Statistics: (page size of 16384 bytes)
Pages free:                                3522.
Pages active:                            249153.
Pages inactive:                          245887.
Pages speculative:                         1542.
Pages throttled:                              0.
Pages wired down:                        115066.
Pages purgeable:                           9178.
"Translation faults":                1218462418.
Pages copy-on-write:                   45004838.
File-backed pages:                       160413.
Anonymous pages:                         336169.
Pages stored in compressor:             1043867.
Pages occupied by compressor:            357406.
"""


def test_meminfo_reads_total_and_available_in_bytes() -> None:
    assert parse_meminfo(MEMINFO) == Memory(24684096 * 1024, 23582996 * 1024)


def test_meminfo_without_memavailable_estimates_it() -> None:
    assert parse_meminfo(OLD_MEMINFO) == Memory(1000 * 1024, 420 * 1024)


def test_cpu_model_on_x86_and_on_a_raspberry_pi() -> None:
    assert parse_cpu_model(X86_CPUINFO) == "AMD EPYC 7763 64-Core Processor"
    assert parse_cpu_model(PI_CPUINFO) == "Raspberry Pi 4 Model B Rev 1.4"
    assert parse_cpu_model("processor\t: 0\n") == ""


def test_sysctl_memsize() -> None:
    assert parse_sysctl_int("17179869184\n") == 17179869184
    assert parse_sysctl_int("") == 0


def test_vm_stat_counts_free_speculative_and_inactive_pages() -> None:
    assert parse_vm_stat(VM_STAT) == (3522 + 1542 + 245887) * 16384


def test_vm_stat_defaults_to_4k_pages() -> None:
    assert parse_vm_stat("Pages free:   10.\nPages inactive:   5.\n") == 15 * 4096


def test_this_machine() -> None:
    hw = hardware.detect()
    assert hw.accelerator_kind in ("apple", "nvidia", "cpu") and hw.accelerator_name
    assert hw.memory_total_bytes >= hw.memory_available_bytes > 0
    assert hw.os and hw.arch


def test_the_memory_cap_caps_every_memory_figure() -> None:
    hw = capped(hardware.detect(), 4096)
    assert hw.memory_total_bytes == hw.memory_available_bytes == 4096
    assert hw.accelerator_memory_bytes <= 4096
    assert capped(hw, None) is hw


def test_power_is_none_where_nothing_measures_it() -> None:
    watts = hardware.power_watts()
    assert watts is None or watts >= 0
