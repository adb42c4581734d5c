"""The documented deployment files, as a test uses them: with only ports and paths changed."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def substitute(source: Path, replacements: Mapping[str, str]) -> str:
    """``source``'s text with each key replaced by its value; each must be there once."""
    text = source.read_text()
    for old, new in replacements.items():
        count = len(re.findall(re.escape(old), text))
        if count != 1:
            raise AssertionError(f"{source.name} has {count} of {old!r}, expected one")
        text = text.replace(old, new)
    return text
