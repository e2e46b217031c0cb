"""What a benchmark ran on: the CPU's name and the instruction sets that set its speed.

A virtual machine may report only "AMD EPYC": the instruction sets say whether int8 has its dot-product
instructions (VNNI) and bf16 its own, which decide the int8 and bf16 figures (about 3x between CPUs that
share that name)."""

from __future__ import annotations

import platform
from pathlib import Path

__all__ = ["cpu_description"]

# /proc/cpuinfo flag -> name, in the order they are reported
_ISA = (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"),
        ("avx512_bf16", "AVX-512 BF16"), ("amx_tile", "AMX"))


def cpu_description(cpuinfo: str | None = None) -> str:
    """The CPU as a benchmark report names it, e.g. ``AMD EPYC (x86_64: AVX2, AVX-512, AVX-512 VNNI,
    AVX-512 BF16)`` or ``AMD EPYC (x86_64: AVX2; no AVX-512, VNNI, BF16 or AMX)``.

    Args:
        cpuinfo: the text of ``/proc/cpuinfo`` (read where not given; elsewhere only the name is told).
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    name, flags = "", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not name:
            name = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    if not flags:
        return name
    present = [label for flag, label in _ISA if flag in flags]
    missing = [label for label in ("AVX-512", "VNNI", "BF16", "AMX")
               if not any(label.split()[-1] in p for p in present)]
    text = ", ".join(present) or "no AVX2"
    if missing:
        text += "; no " + (", ".join(missing[:-1]) + " or " + missing[-1] if len(missing) > 1 else missing[0])
    return f"{name} ({platform.machine()}: {text})"
