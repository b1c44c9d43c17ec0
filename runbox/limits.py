"""Resource limits as a user writes them, docker's way, made into OCI values.

    --memory 64m        memory.limit = 67108864
    --memory-swap 128m  memory and swap together (default: the memory
                        limit, so no swap; -1 for unlimited swap)
    --cpus 0.5          half of one CPU: quota 50000us per 100000us
    --pids-limit 16     at most 16 processes and threads

A bad value is a RunboxError naming the option, which ends runbox with 125.
"""

from __future__ import annotations

import os
import re

from runbox.errors import RunboxError
from runbox.spec import Cpu, Memory, Pids, Resources

# docker takes 1024-based units, with an optional "b" and case ignored.
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgtp]?)i?b?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40,
          "p": 1 << 50}

# Below this a container cannot even start a shell; docker refuses it too.
MIN_MEMORY = 6 << 20
CPU_PERIOD = 100_000
# The kernel's PID_MAX_LIMIT on 64-bit: pids.max refuses anything above.
MAX_PIDS = 4 << 20


def parse_size(option: str, text: str) -> int:
    """"64m" -> 67108864."""
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise RunboxError(
            f"{option}: bad size {text!r}: use a number with an optional "
            "unit b, k, m or g (for example 64m)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def format_size(size: int) -> str:
    """67108864 -> "64M", as the OOM report shows a limit."""
    for unit in "PTGMK":
        factor = _UNITS[unit.lower()]
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


def parse_memory(memory: str | None, swap: str | None) -> Memory | None:
    if memory is None:
        if swap is not None:
            raise RunboxError("--memory-swap needs --memory as well")
        return None
    limit = parse_size("--memory", memory)
    if limit < MIN_MEMORY:
        raise RunboxError(f"--memory: {memory!r} is below the minimum of 6m")
    if swap is None:
        return Memory(limit, limit)
    if swap.strip() == "-1":
        return Memory(limit, -1)
    total = parse_size("--memory-swap", swap)
    if total < limit:
        raise RunboxError(
            "--memory-swap is memory and swap together: it must be at "
            f"least --memory ({memory})")
    return Memory(limit, total)


def parse_cpus(text: str | None) -> Cpu | None:
    if text is None:
        return None
    try:
        cpus = float(text)
    except ValueError:
        raise RunboxError(f"--cpus: {text!r} is not a number") from None
    available = os.cpu_count() or 1
    if not 0.01 <= cpus <= available:
        raise RunboxError(
            f"--cpus: {text} is out of range: use 0.01 to {available}")
    return Cpu(round(cpus * CPU_PERIOD), CPU_PERIOD)


def parse_pids(text: str | None) -> Pids | None:
    if text is None:
        return None
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit()) or int(digits) < 1:
        raise RunboxError(
            f"--pids-limit: {text!r} is not a positive whole number")
    if int(digits) > MAX_PIDS:
        raise RunboxError(
            f"--pids-limit: {digits} is out of range: use 1 to {MAX_PIDS}")
    return Pids(int(digits))


def parse(*, memory: str | None = None, memory_swap: str | None = None,
          cpus: str | None = None, pids_limit: str | None = None,
          ) -> Resources:
    """All of docker's limit options as one OCI Resources."""
    return Resources(parse_memory(memory, memory_swap), parse_cpus(cpus),
                     parse_pids(pids_limit))
