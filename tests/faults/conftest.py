from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "cluster: starts a three-node RabbitMQ cluster on this machine "
        "(runs only with HOPCAST_FAULTS_CLUSTER=1, from `make faults`)",
    )
