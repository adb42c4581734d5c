"""deploy/hopcast.service passes ``systemd-analyze verify``, and its numbers fit the settings."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from hopcast._core.settings import PREFIX, Settings
from hopcast._supervisor import STOP_MARGIN
from tests.deploy.documented import DEPLOY, substitute

SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
UNIT = DEPLOY / "hopcast.service"
ENV_FILE = DEPLOY / "hopcast.env"
HOPCAST = Path(sys.executable).parent / "hopcast"
"""The `hopcast` command of the environment running the tests."""


def unit_here(folder: Path, executable: Path) -> Path:
    """The documented unit with its executable and environment file on this machine."""
    env_file = folder / "hopcast.env"
    shutil.copy(ENV_FILE, env_file)
    unit = folder / "hopcast.service"
    unit.write_text(
        substitute(
            UNIT,
            {
                "ExecStart=/opt/hopcast/bin/hopcast": f"ExecStart={executable}",
                "EnvironmentFile=/etc/hopcast/hopcast.env": f"EnvironmentFile={env_file}",
            },
        )
    )
    return unit


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    assert HOPCAST.is_file()
    checked = verify(unit_here(tmp_path, HOPCAST))
    # Any complaint (an unknown key, a bad value, a missing executable) fails.
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")

    # ... and it does look: the same unit naming an executable that is not there fails.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    broken = verify(unit_here(elsewhere, tmp_path / "no-such-hopcast"))
    assert broken.returncode != 0
    assert "no-such-hopcast" in broken.stdout + broken.stderr


def service_section() -> dict[str, list[str]]:
    """The unit's ``[Service]`` keys and their values (a key may come several times)."""
    found: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def example_environment() -> dict[str, str]:
    variables = {}
    for raw in ENV_FILE.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            variables[key] = value
    return variables


def test_the_example_environment_file_holds_settings_only() -> None:
    variables = example_environment()
    known = {PREFIX + name.upper() for name in Settings.model_fields}
    assert variables.keys() <= known, variables.keys() - known
    Settings.from_env(variables)  # every value is valid (a bad one raises ConfigError)


def test_the_unit_stops_gracefully_and_has_a_descriptor_per_connection() -> None:
    service = service_section()
    settings = Settings.from_env(example_environment())
    assert "--workers" in service["ExecStart"][0]
    assert service["Restart"] == ["on-failure"]
    assert service["RestartPreventExitStatus"] == ["2"]  # a bad setting: restarting cannot help
    assert service["KillSignal"] == ["SIGTERM"]
    # systemd kills what is left only after the workers' grace and the supervisor's wait
    assert float(service["TimeoutStopSec"][0]) > settings.shutdown_grace + STOP_MARGIN
    # each worker may hold --max-connections streams, each one a descriptor
    assert int(service["LimitNOFILE"][0]) >= settings.max_connections + 1024
    assert service["EnvironmentFile"] == ["/etc/hopcast/hopcast.env"]
