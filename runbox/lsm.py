"""AppArmor and SELinux: confinement by a profile the host's kernel enforces.

runbox ships no profile of its own and loads none: that takes the host's
tools (apparmor_parser, semodule).  What it does: with --security-opt
apparmor=PROFILE (a profile the host has loaded) or label=CONTEXT it asks
the kernel to apply it at execve; without, it says plainly that the
container runs without such confinement.  Nothing is pretended.
"""

from __future__ import annotations

import os

from runbox import libc, trace
from runbox.errors import RunboxError


def apparmor_enabled() -> bool:
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            return f.read().strip() == "Y"
    except OSError:
        return False


def selinux_enabled() -> bool:
    return os.path.exists("/sys/fs/selinux/enforce")


def check(apparmor: str | None, label: str | None) -> None:
    """Before anything starts: refuse what this host cannot do."""
    if apparmor and apparmor != "unconfined" and not apparmor_enabled():
        raise RunboxError(
            f"apparmor={apparmor}: AppArmor is not enabled on this host")
    if label and not selinux_enabled():
        raise RunboxError(f"label={label}: SELinux is not enabled here")


def _attr(name: str) -> str:
    """The /proc attribute file for the next execve's label."""
    path = f"/proc/self/attr/{name}/exec"
    return path if os.path.exists(path) else "/proc/self/attr/exec"


def apply(apparmor: str | None, label: str | None) -> None:
    """In the child, just before exec: ask for the profile or label."""
    if apparmor and apparmor != "unconfined":
        libc.write_file(_attr("apparmor"), f"exec {apparmor}",
                        why="AppArmor confines the command from its exec")
    elif label:
        libc.write_file(_attr("selinux"), label,
                        why="SELinux labels the command at its exec")
    elif apparmor_enabled() or selinux_enabled():
        trace.note("AppArmor or SELinux is on, but no profile was given: "
                   "the container is not confined by it")
    else:
        trace.note("no AppArmor or SELinux on this host: no confinement "
                   "by a security module")
