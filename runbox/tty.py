"""A terminal of the container's own (-t), with job control inside.

The container must not share the caller's terminal: a process with a
controlling terminal can push keystrokes into it (TIOCSTI) and they run in
the caller's shell after the container is gone.  With -t the child opens a
new pseudo-terminal in the container's own devpts, makes its slave side the
controlling terminal of a new session, and hands the master side to runbox
over a socket (SCM_RIGHTS).  runbox copies bytes between its own terminal,
put in raw mode, and the master: Ctrl-C travels as a byte and the
container's terminal turns it into SIGINT for the foreground job there.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import sys
import termios
import tty as stdlib_tty
from typing import TYPE_CHECKING

from runbox import libc

if TYPE_CHECKING:
    import socket

TIOCGPTN = 0x80045430
TIOCSPTLCK = 0x40045431
TIOCGPTPEER = 0x5441


def socketpair() -> tuple[socket.socket, socket.socket]:
    """The channel the master fd travels through: parent end, child end."""
    # socket is imported only with -t: it costs every start 3 ms.
    import socket

    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


def setup_child(channel: socket.socket) -> None:
    """In the container, after /dev/pts is mounted: a new pty as the
    controlling terminal of a new session, on fds 0, 1 and 2."""
    import socket

    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    number = struct.unpack(
        "I", fcntl.ioctl(master, TIOCGPTN, struct.pack("I", 0)))[0]
    slave = os.open(f"/dev/pts/{number}", os.O_RDWR | os.O_NOCTTY)
    socket.send_fds(channel, [b"m"], [master])
    os.close(master)
    channel.close()

    libc.setsid(why="a session of the container's own")
    libc.ioctl(slave, termios.TIOCSCTTY, 0, name="TIOCSCTTY",
               why="the new pty becomes its controlling terminal")
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


def receive_master(channel: socket.socket) -> int:
    """The master fd the child sent; -1 if it sent none."""
    import socket

    _, fds, _, _ = socket.recv_fds(channel, 1, 1)
    channel.close()
    return fds[0] if fds else -1


def _copy_size(master: int) -> None:
    if not os.isatty(sys.stdin.fileno()):
        return
    size = fcntl.ioctl(sys.stdin.fileno(), termios.TIOCGWINSZ, b"\0" * 8)
    fcntl.ioctl(master, termios.TIOCSWINSZ, size)


def relay(master: int) -> None:
    """Copy between our stdin/stdout and the master until the container's
    side is closed, or ours.  Our terminal is raw meanwhile and restored
    after.

    The master is non-blocking and input waits in a buffer until the
    terminal takes it: a container that is busy writing (cat fed a large
    pipe) never stops runbox from reading what it writes, so the two
    cannot wait on each other.  When our own terminal goes (a window
    closed, ssh dropped) or our output's reader does, the master is
    closed: the container's terminal hangs up too, as it would have at a
    terminal of its own.
    """
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    saved = None
    if os.isatty(stdin):
        saved = termios.tcgetattr(stdin)
        stdlib_tty.setraw(stdin)
    old_winch = signal.signal(signal.SIGWINCH,
                              lambda *_: _copy_size(master))
    _copy_size(master)
    os.set_blocking(master, False)
    reading = True
    pending = b""
    line_done = True
    try:
        while True:
            # Once our input has ended, every read of the container's
            # finds the end: a Ctrl-D whenever it has read all before
            # (see _eof), looked at every 0.1 s.
            if not reading and not pending and _unread(master) == 0:
                pending, line_done = _eof(master, line_done), True
            inputs = [master] + ([stdin] if reading and not pending else [])
            outputs = [master] if pending else []
            ready, writable, _ = select.select(
                inputs, outputs, [], None if reading else 0.1)
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except BlockingIOError:
                    data = None
                except OSError:  # EIO: every slave fd is closed
                    data = b""
                if data == b"":
                    return
                if data and not _write_all(stdout, data):
                    return  # nobody reads us any more: hang up
            if writable:
                try:
                    pending = pending[os.write(master, pending):]
                except BlockingIOError:
                    pass
            if stdin in ready:
                try:
                    data = os.read(stdin, 65536)
                except BlockingIOError:
                    continue  # a non-blocking stdin with nothing after all
                except OSError:  # EIO: our terminal has hung up
                    return
                if data:
                    pending = data
                    line_done = data.endswith(b"\n")
                elif saved is not None:
                    return  # our terminal has hung up: hang up the other
                else:
                    # The end of a pipe: keep showing output, and tell the
                    # container, as a person would.
                    reading = False
    finally:
        signal.signal(signal.SIGWINCH, old_winch)
        if saved is not None:
            try:
                termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
            except termios.error:
                pass  # hung up: there is no terminal left to restore
        os.close(master)


def _write_all(fd: int, data: bytes) -> bool:
    """Write all of data; False if fd's other side has gone (EIO from a
    hung-up terminal, EPIPE from a closed pipe).  A non-blocking fd that
    is full is waited on."""
    while data:
        try:
            data = data[os.write(fd, data):]
        except BlockingIOError:
            select.select([], [fd], [])
        except OSError:
            return False
    return True


def _eof(master: int, line_done: bool) -> bytes:
    """What tells the container's terminal that our input has ended, as a
    person would: its EOF character (Ctrl-D), twice after a line left
    unfinished, since the first only ends that line.

    A person presses it once what came before has been read, and so does
    runbox, and again whenever the container has read it: a read after
    the end finds the end again, as from a pipe.  Each is needed: a shell
    switches its terminal to raw mode for its prompt, and a Ctrl-D taken
    in as the canonical end just before reads as nothing then.  In raw
    mode it is a byte: a line editor takes it for the end all the same; a
    full-screen program fed from a pipe gets one Ctrl-D, whatever that
    means to it, every tenth of a second while it reads, until it ends
    or runbox is stopped."""
    eof = termios.tcgetattr(master)[6][termios.VEOF]
    return eof * (1 if line_done else 2)


def _unread(master: int) -> int:
    """How many bytes of input the container's side has yet to read: the
    count on the terminal's other end, opened for the moment and closed
    (kept open, it would hide the container's last close from runbox)."""
    try:
        peer = fcntl.ioctl(master, TIOCGPTPEER,
                           os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return 0  # before Linux 4.13: the end is told without waiting
    try:
        count = fcntl.ioctl(peer, termios.FIONREAD, b"\0" * 4)
    finally:
        os.close(peer)
    return struct.unpack("i", count)[0]


def own_session() -> None:
    """Without -t: a new session, so the caller's terminal is not the
    container's controlling terminal and TIOCSTI cannot reach it."""
    libc.setsid(why="no controlling terminal: TIOCSTI cannot push "
                    "keystrokes into the caller's")
