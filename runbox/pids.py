"""A process by its pid, read from /proc/PID/stat (proc(5)).

A pid alone can name another process once its first owner has died and
been reaped, so runbox records a pid together with the process's start time
and checks both before it signals or trusts it.
"""

from __future__ import annotations


def _fields(pid: int) -> list[str] | None:
    """The stat fields after the command name, None if pid is gone.

    The name may hold spaces and parentheses: the fields follow the last
    ")".  The first one, the state, is field 3 of proc(5).
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_time(pid: int) -> str | None:
    """pid's start time in clock ticks since boot (field 22)."""
    fields = _fields(pid)
    return fields[19] if fields else None


def running(pid: int, start: str | None = None) -> bool:
    """Whether pid is a live process (and, given start, that very one).

    A zombie is not: it has died, and only waits for its parent to reap
    it, which may take a while when that parent is slow.
    """
    fields = _fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return start is None or fields[19] == start
