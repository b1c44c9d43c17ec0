"""Ctrl-C before runbox has made anything simply ends it.

Python turns SIGINT into KeyboardInterrupt, which in the middle of an
import prints a traceback.  Until runbox has something to undo there is
nothing to catch it for, so the command line imports this first and SIGINT
keeps the kernel's default action; the stages install their own handler
(process.SignalForwarder) once a container is on its way.
"""

import signal

signal.signal(signal.SIGINT, signal.SIG_DFL)
