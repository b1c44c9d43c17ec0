"""mountinfo as proc(5) describes it, escapes included."""

from runbox import mountinfo

LINES = (
    "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 "
    "/dev/root rw,errors=continue\n"
    "40 23 0:37 / /sys/fs/cgroup/systemd rw,relatime shared:12 - cgroup "
    "cgroup rw,name=systemd\n"
)


def test_fields_and_escapes():
    first, second = mountinfo.parse(LINES)
    assert first.point == "/mnt/with space"
    assert first.optional == ("master:1",)
    assert (first.fstype, first.source) == ("ext3", "/dev/root")
    assert first.super_options == ("rw", "errors=continue")
    assert second.optional == ("shared:12",)
    assert second.super_options == ("rw", "name=systemd")


def test_this_process_has_a_root():
    assert any(m.point == "/" for m in mountinfo.read())
