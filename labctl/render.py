"""Text templates from templates/ (shipped inside the wheel as labctl/templates)."""

from __future__ import annotations

import string
from functools import cache
from pathlib import Path


@cache
def templates_dir() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parent / "templates"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("labctl templates directory not found")


def template_text(name: str) -> str:
    """templates/NAME as it is (a script whose `$` are its own)."""
    return (templates_dir() / name).read_text()


def render(name: str, **values: object) -> str:
    """Fill templates/NAME; a missing value is an error, not a silent blank."""
    text = template_text(name)
    return string.Template(text).substitute({k: str(v) for k, v in values.items()})
