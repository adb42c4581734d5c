"""The docs say what the code does: every setting is in the README's table."""

from __future__ import annotations

from pathlib import Path

from hopcast._core.settings import PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]


def test_readme_lists_every_setting_with_its_default() -> None:
    readme = (ROOT / "README.md").read_text()
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, tuple):
            default = ",".join(default)
        shown = "(none)" if default in (None, "") else f"`{default}`"
        row = f"| `--{name.replace('_', '-')}` | `{PREFIX}{name.upper()}` | {shown} |"
        assert row in readme, f"README is missing or has a stale row for {name}: {row}"


def test_readme_starts_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    head = readme.split("```sh", 1)[1].split("```", 1)[0]
    assert "make demo" in head and "make test" in head
