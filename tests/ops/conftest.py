"""Operations: the alert rules and the dashboard (ops/), checked by a real Prometheus."""

import pytest

from tests.ops import prometheus
from tests.system_packages import require


@pytest.fixture(scope="session")
def installed_prometheus() -> None:
    """prometheus and promtool from Debian's package, installed on first use."""
    require([prometheus.PROMETHEUS, prometheus.PROMTOOL], prometheus.PACKAGES, "The operations tests")
