import pytest
from hypothesis import HealthCheck, settings

from ocs.diameter.capabilities import LocalPeer
from ocs.diameter.dictload import load_directory


@pytest.fixture(scope="session")
def dictionary():
    return load_directory()


@pytest.fixture
def server_identity():
    return LocalPeer("ocs.example.net", "example.net")


@pytest.fixture
def client_identity():
    return LocalPeer("pgw.example.net", "example.net")


# bounded, deterministic-enough property tests: enough examples to matter, no wall-clock deadline
settings.register_profile("ocs", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ocs")
