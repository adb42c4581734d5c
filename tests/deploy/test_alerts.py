"""deploy/hopcast-alerts.yml: rules promtool accepts, firing where they should on sample series."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.deploy.documented import DEPLOY

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
RULES = DEPLOY / "hopcast-alerts.yml"
SERIES = Path(__file__).with_name("hopcast-alerts.test.yml")


def promtool(*args: str) -> str:
    proc = subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_promtool_accepts_the_rules() -> None:
    assert "SUCCESS: 8 rules found" in promtool("check", "rules", str(RULES))


def test_the_alerts_fire_on_the_gateway_that_needs_a_look() -> None:
    assert "SUCCESS" in promtool("test", "rules", str(SERIES))
