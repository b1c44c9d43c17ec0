"""Start-up time and memory: runbox beside runc and crun, in one run.

    python bench/run.py [--runs N] [--json FILE]

Every row starts a container that runs `true` in the same busybox rootfs,
as a whole process, the way a user would, and is timed from the outside:
wall time around the process, peak RSS from wait4(2).  The rows are run
interleaved, A B C A B C ..., so that whatever else the machine does falls
on all of them alike.  The table gives the median and the spread (first to
third quartile) and the ratios of `runbox run` to runc and to crun.

What differs between the runtimes, and so what the ratios mean:

  - runbox mounts an overlay over the image, for a copy-on-write root;
    runc and crun use the bundle's rootfs as it is, read-write.
  - All three get PID, mount, UTS and IPC namespaces, no network namespace
    (runbox has none yet, so it is taken out of runc's and crun's config),
    a memory and a pids limit, docker's 14 capabilities, no_new_privs and
    the same seccomp profile: runbox's default, given to runc and crun in
    their config.json (they compile it with libseccomp).
  - runc and crun keep state under a --root of their own here.
  - On a hybrid cgroup host whose v2 tree offers a controller, crun
    refuses to start at all; it then runs in a small wrapper (see
    crun_wrapper), whose cost alone is a row of its own.
  - runc's default spec mounts cgroupfs in the container; runbox does
    not, so that mount is taken out for runc and crun.

Requires root.  runc and crun come from Debian's packages, installed here
when missing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = REPO / ".venv/bin/python"
RUNBOX = REPO / ".venv/bin/runbox"


def ensure_packages(names: list[str]) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing],
                       check=True)


def make_bundle(work: Path, rootfs: Path) -> Path:
    """An OCI bundle for runc and crun doing runbox's work, as far as
    they can."""
    sys.path.insert(0, str(REPO))
    from runbox import capabilities, seccomp

    bundle = work / "bundle"
    shutil.copytree(rootfs, bundle / "rootfs", symlinks=True)
    subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = ["true"]
    config["process"]["noNewPrivileges"] = True
    caps = capabilities.DEFAULT
    config["process"]["capabilities"] = {
        k: caps for k in ("bounding", "effective", "permitted")}
    config["root"]["readonly"] = False
    linux = config["linux"]
    linux["namespaces"] = [n for n in linux["namespaces"]
                           if n["type"] != "network"]
    config["mounts"] = [m for m in config["mounts"] if m["type"] != "cgroup"]
    linux["resources"] = {"memory": {"limit": 64 << 20, "swap": 64 << 20},
                          "pids": {"limit": 64}}
    profile = seccomp.default_profile(set(caps)).to_oci()
    profile["architectures"] = ["SCMP_ARCH_X86_64"]
    linux["seccomp"] = profile
    (bundle / "config.json").write_text(json.dumps(config, indent=1))
    return bundle


def crun_wrapper() -> list[str]:
    """crun refuses a hybrid host whose cgroup2 tree offers a controller
    ("cgroups in hybrid mode not supported"), even with cgroups disabled.
    There it runs in a mount namespace of its own where an empty tmpfs
    hides that tree, so it sees plain v1 and uses it; the wrapper's own
    cost is a row of the table."""
    probe = Path("/sys/fs/cgroup/unified/cgroup.controllers")
    if probe.exists() and probe.read_text().strip():
        return ["unshare", "-m", "--propagation", "private", "sh", "-c",
                "mount -t tmpfs none /sys/fs/cgroup/unified && exec \"$@\"",
                "sh"]
    return []


CRUN_WRAPPER = crun_wrapper()


def rows(bundle: Path, state: Path, rootfs: Path) -> dict[str, list[str]]:
    quiet = ["-q", "--rootfs", str(rootfs)]
    limits = ["--memory", "64m", "--pids-limit", "64"]
    stage = {n: str(p) for n, p in (
        (1, "stages/01_fork_exec"), (2, "stages/02_namespaces"),
        (3, "stages/03_pivot_root"), (4, "stages/04_cgroups"),
        (5, "stages/05_security"))}
    found = {
        "runbox run true": [str(RUNBOX), "run", "--rootfs", str(rootfs),
                            *limits, "true"],
        "runbox run --trace true": [str(RUNBOX), "run", "--trace",
                                    "--rootfs", str(rootfs), *limits,
                                    "true"],
        "runc run": ["runc", "--root", str(state / "runc"), "run",
                     "--bundle", str(bundle), "{id}"],
        "crun run": [*CRUN_WRAPPER, "crun", "--root", str(state / "crun"),
                     "run", "--bundle", str(bundle), "{id}"],
        "python3 -c pass": [str(PY), "-c", "pass"],
        "stage 01 true": [str(PY), stage[1], "-q", "true"],
        "stage 02 true": [str(PY), stage[2], "-q", "true"],
    }
    if CRUN_WRAPPER:
        found["crun's wrapper alone"] = [*CRUN_WRAPPER, "true"]
    for n in (3, 4, 5):
        extra = limits if n >= 4 else []
        found[f"stage 0{n} true"] = [str(PY), stage[n], *quiet, *extra,
                                     "true"]
    return found


def run_once(argv: list[str], index: int, rss_file: Path,
             ) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one whole process.

    The RSS comes from GNU time, not from this process's wait4: a child
    forked from a large parent reports the parent's size until its exec,
    and Python is a large parent.  time's own small fork costs every row
    the same.
    """
    argv = [a.replace("{id}", f"bench-{os.getpid()}-{index}") for a in argv]
    start = time.perf_counter()
    code = subprocess.call(["/usr/bin/time", "-f", "%M", "-o", str(rss_file),
                            *argv], cwd=REPO, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"bench: {' '.join(argv)} exited {code}")
    return elapsed, int(rss_file.read_text().split()[-1])


def leftovers() -> tuple[list[str], list[str]]:
    """runbox's container directories and cgroups, as they are now."""
    from runbox import paths

    root = paths.containers_dir()
    dirs = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    cgroup = Path("/sys/fs/cgroup")
    groups = sorted(str(p) for parent in [cgroup / "runbox",
                                          *cgroup.glob("*/runbox")]
                    if parent.is_dir() for p in parent.iterdir()
                    if p.is_dir())
    return dirs, groups


def parallel(n: int, rootfs: Path) -> float:
    """Start n `runbox run true` at once; the time until all are done.
    All must succeed, and nothing of theirs may be left afterwards."""
    before = leftovers()
    start = time.perf_counter()
    procs = [subprocess.Popen([str(RUNBOX), "run", "--rootfs", str(rootfs),
                               "--memory", "64m", "--pids-limit", "64",
                               "true"], cwd=REPO) for _ in range(n)]
    codes = [p.wait() for p in procs]
    elapsed = time.perf_counter() - start
    if any(codes):
        raise SystemExit(f"bench: {sum(1 for c in codes if c)} of {n} "
                         "parallel containers failed")
    if leftovers() != before:
        raise SystemExit("bench: the parallel containers left state behind")
    return elapsed


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(values, n=4)
    return q[0], statistics.median(values), q[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=50)
    parser.add_argument("--json", type=Path,
                        default=REPO / "bench/results.json")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench: needs root", file=sys.stderr)
        return 125
    ensure_packages(["runc", "crun"])
    if not Path("/usr/bin/time").exists():
        subprocess.run(["apt-get", "install", "-y", "-qq", "time"],
                       check=True)
    sys.path.insert(0, str(REPO))
    from runbox import images

    rootfs = images.resolve_rootfs(None)
    with tempfile.TemporaryDirectory(prefix="runbox-bench-") as tmp:
        work = Path(tmp)
        bundle = make_bundle(work, rootfs)
        table = rows(bundle, work / "state", rootfs)
        times: dict[str, list[float]] = {name: [] for name in table}
        rss: dict[str, list[int]] = {name: [] for name in table}
        for i in range(args.runs):
            for name, argv in table.items():
                elapsed, peak = run_once(argv, i, work / "rss")
                times[name].append(elapsed)
                rss[name].append(peak)
        together = parallel(args.parallel, rootfs)

    report = {"machine": f"{os.uname().machine}, {os.cpu_count()} CPUs, "
                         f"Linux {os.uname().release}",
              "runs": args.runs, "rows": {}}
    print(f"{'row':26} {'median ms':>10} {'q1-q3 ms':>14} {'peak RSS':>9}")
    for name in table:
        q1, med, q3 = quartiles(times[name])
        peak = statistics.median(rss[name]) / 1024
        report["rows"][name] = {"median_ms": round(med * 1000, 1),
                                "q1_ms": round(q1 * 1000, 1),
                                "q3_ms": round(q3 * 1000, 1),
                                "peak_rss_mib": round(peak, 1)}
        print(f"{name:26} {med * 1000:10.1f} "
              f"{q1 * 1000:6.1f}-{q3 * 1000:<7.1f} {peak:7.1f}M")
    rb = report["rows"]["runbox run true"]["median_ms"]
    for other in ("runc run", "crun run"):
        ratio = rb / report["rows"][other]["median_ms"]
        report[f"runbox/{other.split()[0]}"] = round(ratio, 2)
        print(f"runbox run / {other}: {ratio:.2f}x")
    off = report["rows"]["runbox run true"]["median_ms"]
    on = report["rows"]["runbox run --trace true"]["median_ms"]
    print(f"tracer on / off: {on / off:.2f}x")
    report["parallel"] = {"containers": args.parallel,
                          "seconds": round(together, 2)}
    print(f"{args.parallel} containers at once: all succeeded in "
          f"{together:.1f} s, and left nothing behind")
    if CRUN_WRAPPER:
        print("crun ran in a wrapper hiding the hybrid host's cgroup2 tree")
        report["crun_wrapper"] = " ".join(CRUN_WRAPPER)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
