"""Sampling the gateway under load with py-spy, and the summary of where its time went.

py-spy writes collapsed stacks (``frame;frame;frame count``); the summary is
the share of samples per function as the innermost frame (self) and anywhere
on the stack (inclusive).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

TOP = 25
_LOCATION = re.compile(r" \((?P<file>[^)]*)\)$")


def start(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """Start py-spy on ``pid`` and its children for ``seconds``; None if py-spy is missing."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        return None
    argv = [
        spy,
        "record",
        "--pid",
        str(pid),
        "--subprocesses",
        "--nonblocking",
        "--rate",
        "200",
        "--duration",
        str(int(seconds)),
        "--format",
        "raw",
        "--output",
        str(out),
    ]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _short(frame: str) -> str:
    """``func (path/to/module.py:12)`` as ``func (module.py)``."""
    match = _LOCATION.search(frame)
    if match is None:
        return frame
    name = frame[: match.start()]
    where = match.group("file").rsplit("/", 1)[-1].split(":", 1)[0]
    return f"{name} ({where})"


def summarize(path: Path, top: int = TOP) -> dict[str, list[tuple[str, float]]]:
    """The top functions by self and by inclusive share of samples, in percent."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";")]
        # The first frame names the process (or thread): skip it.
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    if not total:
        return {"self": [], "inclusive": []}

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(top)]

    return {"self": share(own), "inclusive": share(inclusive)}


def render(summary: dict[str, list[tuple[str, float]]]) -> str:
    lines = ["self %   function"]
    lines += [f"{pct:6.1f}   {name}" for name, pct in summary["self"]]
    lines += ["", "incl %   function"]
    lines += [f"{pct:6.1f}   {name}" for name, pct in summary["inclusive"]]
    return "\n".join(lines)
