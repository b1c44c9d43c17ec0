#!/usr/bin/env bash
# Make a Debian or Ubuntu machine ready for a runbox workshop.  As root:
#
#   scripts/provision.sh [REPO]        REPO defaults to /vagrant
#
# The Vagrantfile runs it on `vagrant up`; it works on any machine of that
# kind too.  It installs the Debian packages the stages and tests use,
# builds the venv and the default rootfs with the Makefile, and ends with
# `runbox doctor`, so a machine that cannot run the stages fails here, loudly.
# Running it again changes nothing and takes seconds.
#
# VENV and RUNBOX_ROOT are passed on to make.  The state root defaults to
# /var/lib/runbox, on the machine's own disk: an overlay cannot keep its
# upper layer on a shared folder.  The venv defaults to REPO/.venv, which
# needs a filesystem that takes symlinks; a shared folder that refuses them
# (VirtualBox's vboxsf does) is refused here, with the way around it.
# Nothing here mounts or configures cgroups: v1, v2 and hybrid hosts are
# all used as they are.

set -euo pipefail

repo=$(realpath "${1:-/vagrant}")
packages=(python3 python3-venv make gcc libc6-dev strace git ca-certificates)

say() { printf 'provision: %s\n' "$*"; }
fail() { printf 'provision: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "run it as root (sudo $0)"
[ -f "$repo/Makefile" ] || fail "$repo holds no runbox repository"

# Only what is missing, so a second run needs no network.
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'ok installed' \
        || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "${missing[@]}"
fi

# python -m venv makes symlinks (bin/python, lib64): on a filesystem that
# refuses them it fails halfway, with a message that names neither cause.
if [ -z "${VENV:-}" ]; then
    probe="$repo/.provision-symlink-$$"
    if ! ln -s Makefile "$probe" 2>/dev/null; then
        fail "$repo refuses symlinks (a shared folder?), so the venv cannot" \
            "live there: run VENV=/var/lib/runbox/venv $0 $repo, and give" \
            "make the same VENV=/var/lib/runbox/venv"
    fi
    rm -f "$probe"
fi

# The Makefile's own targets, as the README's commands will run them.
make -C "$repo" venv rootfs
make -C "$repo" --no-print-directory doctor
settings="${VENV:+VENV=$VENV }"
[ "${RUNBOX_ROOT:-/var/lib/runbox}" = /var/lib/runbox ] \
    || settings+="RUNBOX_ROOT=$RUNBOX_ROOT "
say "ready: cd $repo && sudo make ${settings}stage3 CMD=sh"
