"""A real PostgreSQL server for the tests.

Reuses a server on 127.0.0.1:5432 when one answers (trust auth, user
``postgres`` or the current user; override with OCS_TEST_PG=postgresql://...).
Otherwise starts a throwaway cluster with initdb/pg_ctl in a temp folder on a
free port, as the ``postgres`` user when running as root (initdb refuses root),
and stops it at the end. Each test gets its own fresh database.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid


def _try(url: str) -> bool:
    import psycopg
    try:
        psycopg.connect(url, connect_timeout=3).close()
        return True
    except psycopg.Error:
        return False


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    paths = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return paths[-1] if paths else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self):
        self.url: str | None = None
        self.why = ""
        self._tmp = None
        self._pg_ctl = None
        self._user = None

    def start(self) -> "Server":
        if importlib.util.find_spec("psycopg") is None:
            self.why = "psycopg is not installed"
            return self
        env = os.environ.get("OCS_TEST_PG")
        candidates = [env] if env else [f"postgresql://{u}@127.0.0.1:5432/postgres"
                                        for u in ("postgres", pwd.getpwuid(os.getuid()).pw_name)]
        for url in candidates:
            if _try(url):
                self.url = url
                return self
        initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
        if not initdb or not pg_ctl:
            self.why = "no PostgreSQL on 127.0.0.1:5432 and no initdb/pg_ctl to start one"
            return self
        self._tmp = tempfile.mkdtemp(prefix="ocs-pg-")
        os.chmod(self._tmp, 0o755)
        data, port = os.path.join(self._tmp, "data"), _free_port()
        run = []
        if os.getuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                self.why = "running as root and there is no postgres user for initdb"
                return self
            os.chown(self._tmp, pw.pw_uid, pw.pw_gid)
            run = ["runuser", "-u", "postgres", "--"]
            self._user = "postgres"
        subprocess.run(run + [initdb, "-D", data, "-A", "trust", "-U", "postgres", "--no-sync"],
                       check=True, capture_output=True)
        self._pg_ctl = run + [pg_ctl, "-D", data]
        subprocess.run(self._pg_ctl + ["-w", "-l", os.path.join(self._tmp, "log"), "-o",
                                       f"-p {port} -k {self._tmp} -c listen_addresses=127.0.0.1"
                                       " -c fsync=off", "start"], check=True, capture_output=True)
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        return self

    def stop(self) -> None:
        if self._pg_ctl:
            subprocess.run(self._pg_ctl + ["-m", "immediate", "stop"], capture_output=True)
            shutil.rmtree(self._tmp, ignore_errors=True)

    def database(self) -> tuple[str, str]:
        """(url of a new empty database, its name)."""
        import psycopg
        name = "ocs_t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url, autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        return self.url.rsplit("/", 1)[0] + "/" + name, name

    def drop(self, name: str) -> None:
        import psycopg
        with psycopg.connect(self.url, autocommit=True) as c:
            c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
