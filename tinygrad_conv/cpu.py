"""What the kernels need to know about the CPU they run on, read at run time: cache sizes.

Nothing here is tuned to one machine: the kernels size their blocks from these numbers, and
`show_config()` prints them. Where the operating system does not say, a common size is assumed
(and `source` says so).
"""

from __future__ import annotations

import functools
import glob
import os
import subprocess
import sys

# assumed when the operating system does not tell: sizes most x86-64 and ARM cores have
_DEFAULT = {"L1d": 32 * 1024, "L2": 1024 * 1024, "L3": 8 * 1024 * 1024}


def _parse_size(text: str) -> int:
    """'32K', '1024K', '32M', '65536' -> bytes."""
    text = text.strip().upper()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    return int(text.rstrip("KMG")) * scale


def _linux_sysfs() -> dict[str, int]:
    sizes = {}
    for index in sorted(glob.glob("/sys/devices/system/cpu/cpu0/cache/index*")):
        try:
            with open(os.path.join(index, "level")) as f:
                level = f.read().strip()
            with open(os.path.join(index, "type")) as f:
                kind = f.read().strip()
            with open(os.path.join(index, "size")) as f:
                size = _parse_size(f.read())
        except (OSError, ValueError):
            continue
        if kind in ("Data", "Unified"):
            sizes["L1d" if level == "1" else f"L{level}"] = size
    return sizes


def _macos_sysctl() -> dict[str, int]:
    sizes = {}
    for key, name in (("L1d", "hw.l1dcachesize"), ("L2", "hw.l2cachesize"),
                      ("L3", "hw.l3cachesize")):
        try:
            out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True,
                                 timeout=5, check=True).stdout
            if int(out) > 0:
                sizes[key] = int(out)
        except (OSError, ValueError, subprocess.SubprocessError):
            continue
    return sizes


@functools.cache
def cache_sizes() -> dict[str, int | str]:
    """{'L1d': bytes, 'L2': bytes (per core), 'L3': bytes, 'source': where they came from}."""
    found: dict[str, int] = {}
    if sys.platform.startswith("linux"):
        found = _linux_sysfs()
    elif sys.platform == "darwin":
        found = _macos_sysctl()
    sizes: dict[str, int | str] = {**_DEFAULT, **found}
    missing = sorted(set(_DEFAULT) - set(found))
    sizes["source"] = ("operating system" if not missing else
                       f"operating system, assumed {', '.join(missing)}" if found else
                       "assumed (the operating system did not say)")
    return sizes
