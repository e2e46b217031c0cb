"""What a benchmark ran on: the CPU's name and the instruction sets that set its speed.

A virtual machine may report only "AMD EPYC": the instruction sets say whether int8 has its dot-product
instructions (VNNI) and bf16 its own, which decide the int8 and bf16 figures (about 3x between CPUs that
share that name)."""

from __future__ import annotations

import platform
from pathlib import Path

__all__ = ["cpu_description", "cpu_flags", "has_bf16", "has_vnni"]

# /proc/cpuinfo flag -> name, in the order they are reported
_ISA = (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"),
        ("avx512_bf16", "AVX-512 BF16"), ("amx_tile", "AMX"))


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The first CPU's flags in ``/proc/cpuinfo`` (empty where there is none)."""
    for line in (_cpuinfo() if cpuinfo is None else cpuinfo).splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has bf16 instructions (AVX-512 BF16 or AMX): without them a bf16 matrix multiply
    is emulated (a 4096 x 4096 product took minutes on an AVX2 CPU) and measures no peak."""
    return bool(cpu_flags(cpuinfo) & {"avx512_bf16", "amx_bf16"})


def has_vnni(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI or AMX). Without them
    PyTorch's int8 matrix multiply falls back to a reference kernel (1.7 GOP/s on an AVX2 CPU, against
    onnxruntime's hundreds), which measures no peak."""
    return bool(cpu_flags(cpuinfo) & {"avx512_vnni", "avx_vnni", "amx_int8"})


def cpu_description(cpuinfo: str | None = None) -> str:
    """The CPU as a benchmark report names it, e.g. ``AMD EPYC (x86_64: AVX2, AVX-512, AVX-512 VNNI,
    AVX-512 BF16)`` or ``AMD EPYC (x86_64: AVX2; no AVX-512, VNNI, BF16 or AMX)``.

    Args:
        cpuinfo: the text of ``/proc/cpuinfo`` (read where not given; elsewhere only the name is told).
    """
    cpuinfo = _cpuinfo() if cpuinfo is None else cpuinfo
    name = next((line.partition(":")[2].strip() for line in cpuinfo.splitlines()
                 if line.partition(":")[0].strip() == "model name"), "")
    flags = cpu_flags(cpuinfo)
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
