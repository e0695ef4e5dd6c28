"""The repository stands alone: what a user or contributor needs about hosts is in
its own docs/, and nothing points to notes outside it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIP = {".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
OUTSIDE = re.compile(r"host-facts|shared/docs")


def _text_files() -> list[tuple[Path, str]]:
    out = []
    for p in ROOT.rglob("*"):
        if SKIP & set(p.relative_to(ROOT).parts) or not p.is_file() or p.suffix == ".json":
            continue
        if p.resolve() == Path(__file__).resolve():
            continue
        try:
            out.append((p, p.read_text()))
        except (UnicodeDecodeError, OSError):
            continue
    return out


def test_nothing_points_to_notes_outside_the_repository():
    hits = [
        f"{p.relative_to(ROOT)}:{n}"
        for p, text in _text_files()
        for n, line in enumerate(text.splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert hits == []


def test_the_host_notes_are_in_docs_and_readme_and_scripts_point_there():
    host = ROOT / "docs" / "host.md"
    assert host.is_file()
    text = host.read_text()
    for topic in ("cgroup", "systemd", "KVM", "TCG", "libvirtd-ns"):
        assert topic in text, topic
    for f in ("README.md", "scripts/setup-host", "scripts/libvirtd-ns"):
        assert "docs/host.md" in (ROOT / f).read_text(), f


def test_relative_links_in_the_markdown_resolve():
    broken = []
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", md.read_text()):
            if not (md.parent / target).exists():
                broken.append(f"{md.relative_to(ROOT)} -> {target}")
    assert broken == []
