"""The narrator: every syscall runbox makes, told on stderr as it happens.

Each wrapper in runbox.libc reports here with the call it made, its decoded
arguments, the result or the errno with a likely cause, and why the step is
there.  Because the wrapper that makes the call is the one that reports it,
the story cannot drift from what runs.

A line reads like strace, prefixed with the process that made the call:

    parent 4242  unshare(CLONE_NEWPID) = 0
                 why: the next child is PID 1 of a new PID namespace

The tracer works across fork: both sides narrate, each naming itself.  It
never starts a thread (no rich Live, no progress bar), because a thread
running at fork time would leave the child with locks nobody will release.
rich is imported only when narration is switched on, so a quiet run does not
pay for it.  When stderr is not a terminal, or NO_COLOR is set, the output is
plain, deterministic text.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.console import Console

# Width of the "who" column, so the calls line up in a column of their own.
WHO_WIDTH = 13

_console: Console | None = None
_role = "parent"


def enable(*, file: TextIO | None = None, color: bool | None = None) -> None:
    """Switch narration on, writing to file (stderr unless given).

    color=None lets rich decide: colour on a terminal, plain text on a pipe
    or when NO_COLOR is set.  Tests pass color=False for exact text.
    """
    global _console
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            # rich's own answer points fd 1 at /dev/null and exits: fd 1
            # is the container's stdout-to-be.  Let _emit deal with it.
            raise BrokenPipeError

    _console = _Console(
        file=file or sys.stderr,
        force_terminal=color,
        no_color=(color is False) or None,
        highlight=False,
        soft_wrap=True,
        emoji=False,
    )


def disable() -> None:
    """Switch narration off."""
    global _console
    _console = None


def enabled() -> bool:
    return _console is not None


def set_role(role: str) -> None:
    """Name this process in narration: "parent" or "child"."""
    global _role
    _role = role


def _who() -> str:
    return f"{_role} {os.getpid()}".ljust(WHO_WIDTH - 1) + " "


def _emit(head: str, style: str, notes: list[tuple[str, str]]) -> None:
    from rich.text import Text

    assert _console is not None  # callers check enabled() first
    text = Text(_who(), style="dim")
    text.append(head, style=style)
    pad = " " * WHO_WIDTH
    for label, note in notes:
        text.append(f"\n{pad}{label}: ", style="dim")
        text.append(note, style="italic" if label == "why" else "yellow")
    # One print is one write, so lines from parent and child never tear.
    # Narration must never stop the container: if stderr is gone (a
    # closed pipe, a full disk), the story ends and the run goes on.  What
    # is left in sys.stderr's buffer would fail again when Python flushes
    # it at exit, and turn the exit code into 120: stderr becomes
    # /dev/null for runbox itself (the container's fd 2 is untouched).
    try:
        _console.print(text)
    except OSError:
        broken = _console.file is sys.stderr
        disable()
        if broken:
            sys.stderr = open(os.devnull, "w")


def call(
    text: str, result: str, *, why: str | None = None, ok: bool = True,
    likely: str | None = None,
) -> None:
    """Narrate a finished call: `text = result`, why, and a likely cause."""
    if _console is None:
        return
    notes = []
    if likely:
        notes.append(("likely", likely))
    if why:
        notes.append(("why", why))
    _emit(f"{text} = {result}", "bold" if ok else "bold red", notes)


def before(text: str, *, why: str | None = None) -> None:
    """Narrate a call before it is made: execve does not come back to tell."""
    if _console is None:
        return
    _emit(f"{text} ...", "bold", [("why", why)] if why else [])


def note(message: str) -> None:
    """Narrate a decision that is not a syscall (what was found, and why)."""
    if _console is None:
        return
    _emit(message, "cyan", [])
