"""Where runbox keeps images and per-container state.

Everything lives under one state root, /var/lib/runbox unless RUNBOX_ROOT
names another directory.  It is never inside the repository: a repository on
a shared folder (Vagrant's /vagrant is vboxsf or 9p) cannot hold an overlay's
upper directory, and a test run must not dirty the work tree.
"""

import os
from pathlib import Path

DEFAULT_ROOT = "/var/lib/runbox"


def state_root() -> Path:
    """The state root: $RUNBOX_ROOT (empty means unset), or /var/lib/runbox.

    A relative RUNBOX_ROOT is taken from the current directory and made
    absolute here, once: the container's process changes directory later.
    """
    return Path(os.environ.get("RUNBOX_ROOT") or DEFAULT_ROOT).absolute()


def images_dir() -> Path:
    """Where named images live, one directory each: images/NAME/rootfs."""
    return state_root() / "images"


def containers_dir() -> Path:
    """Where each running container keeps its overlay and state."""
    return state_root() / "containers"
