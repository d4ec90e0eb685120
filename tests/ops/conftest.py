"""Operations: the alert rules and the dashboard (ops/), checked by a real Prometheus."""

import pytest

from tests.ops import prometheus


@pytest.fixture(scope="session")
def installed_prometheus() -> None:
    """prometheus and promtool from Debian's package, installed on first use."""
    problem = prometheus.ensure_installed()
    if problem is not None:
        pytest.fail(f"{problem}\nThe operations tests need it: apt-get install -y {' '.join(prometheus.PACKAGES)}")
