"""The failures runbox reports, each with the exit code it ends with.

Exit codes follow docker and runc, so scripts written for them read runbox
the same way:

    125  runbox itself failed (bad option, missing rootfs, a setup step)
    126  the command exists but cannot be executed
    127  the command was not found
    128+N  the container's process was killed by signal N

Anything else is the container process's own exit status.  Only the command
line prints a failure, once, as one line; everything below it raises.
"""

EXIT_RUNTIME = 125
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127


class RunboxError(Exception):
    """A failure to report as one line on stderr, ending with exit_code."""

    def __init__(self, message: str, *, exit_code: int = EXIT_RUNTIME) -> None:
        super().__init__(message)
        self.exit_code = exit_code
