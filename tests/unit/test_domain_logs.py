"""`down` removes what libvirtd logged for the lab's domains, and nothing else."""

from __future__ import annotations

from labctl import virt


def test_only_the_labs_node_logs_are_removed_and_never_through_a_link(tmp_path):
    lxc, qemu, elsewhere = tmp_path / "lxc", tmp_path / "qemu", tmp_path / "elsewhere"
    for d in (lxc, qemu, elsewhere):
        d.mkdir()
    for f in ("ab-c1.log", "ab-g2.log", "ab-x-c1.log", "abc-c1.log", "ab-c1.log.old"):
        (lxc / f).write_text("x")
    (qemu / "ab-r1.log").write_text("x")
    (elsewhere / "precious").write_text("keep")
    (lxc / "ab-c2.log").symlink_to(elsewhere / "precious")
    names = ["ab-c1", "ab-c2", "ab-g2", "ab-r1", "ab-x-c1", "../lxc/abc-c1"]

    found = virt.domain_log_paths("ab", names, (lxc, qemu))
    assert [str(p.relative_to(tmp_path)) for p in found] == [
        "lxc/ab-c1.log",
        "lxc/ab-g2.log",
        "qemu/ab-r1.log",
    ]
    assert virt.remove_domain_logs("ab", names, (lxc, qemu)) == 3
    assert sorted(p.name for p in lxc.iterdir()) == [
        "ab-c1.log.old",
        "ab-c2.log",
        "ab-x-c1.log",
        "abc-c1.log",
    ]
    assert (elsewhere / "precious").read_text() == "keep"
    assert virt.remove_domain_logs("ab", names, (lxc, qemu)) == 0  # twice is fine


def test_missing_log_directories_are_nothing_to_remove(tmp_path):
    assert virt.remove_domain_logs("ab", ["ab-c1"], (tmp_path / "none",)) == 0
