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


@pytest.fixture(scope="session")
def pg_server():
    from pgserver import Server
    server = Server().start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def master_url(request, tmp_path):
    """A fresh, empty master database: SQLite in a temp dir, then a real PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:{tmp_path / 'master.db'}"
        return
    server = request.getfixturevalue("pg_server")
    if server.url is None:
        pytest.fail(f"PostgreSQL tests cannot run: {server.why}")
    url, name = server.database()
    yield url
    server.drop(name)


@pytest.fixture
def master(master_url):
    """A migrated master database (see master_url)."""
    from ocs.gateways.master import connect
    m = connect(master_url)
    m.migrate()
    yield m
    m.close()
