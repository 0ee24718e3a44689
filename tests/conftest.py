"""Test fixtures: real Bastion servers (SQLite and PostgreSQL) on loopback, driven by real clients.

The one way to start a test server is `BastionServer`; every end-to-end test goes through it.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

# huggingface_hub reads these at import time: no Xet until Bastion speaks it, no telemetry,
# no update checks, a private cache per test session.
_HF_HOME = tempfile.mkdtemp(prefix="bastion-hfhome-")
os.environ.update({
    "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1", "HF_HOME": _HF_HOME, "HF_HUB_DISABLE_PROGRESS_BARS": "1",
})

from bastion import wiring  # noqa: E402

# Tests that call services directly get the same hooks and ports the app and the CLI fill.
wiring.load()

PG_ADMIN_URL = os.environ.get("BASTION_TEST_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
MiB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BastionServer:
    """A `bastion serve` subprocess with its own data dir (and database), strict authz on."""

    def __init__(self, data_dir: Path, database_url: str | None = None, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ)
        # The public URL as a deployment sets it: links in mail come from it, and the Host check is on.
        self.env.update({"BASTION_DATA_DIR": str(data_dir), "BASTION_STRICT_AUTHZ": "1",
                         "BASTION_PUBLIC_URL": self.url, "BASTION_MULTIPART_THRESHOLD": str(24 * MiB),
                         "BASTION_MULTIPART_CHUNK_SIZE": str(10 * MiB),
                         # Tests never reach the internet: no freshclam unless a test points it at a mirror.
                         "BASTION_FRESHCLAM_INTERVAL_HOURS": "0"})
        if database_url:
            self.env["BASTION_DATABASE_URL"] = database_url
        self.env.update(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "server.log"

    def start(self, timeout: float = 60) -> BastionServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "bastion.cli", "serve", "--port", str(self.port)],
                                     env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bastion serve exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()  # never leave a half-started server behind a failed start
        raise RuntimeError(f"bastion serve did not start:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bastion.cli", *args], env=self.env, capture_output=True,
                              text=True, check=check, timeout=120)

    def admin(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`bastion admin ARGS` run in this process (click's runner, the server's environment): for set-up
        steps such as create-org, add-member and create-token, without an interpreter start per call. The
        commands themselves are tested as separate processes through `cli` (tests/test_cli.py)."""
        from click.testing import CliRunner

        from bastion.cli import main

        result = CliRunner().invoke(main, ["admin", *args], env=self.env, catch_exceptions=False)
        done = subprocess.CompletedProcess(["bastion", "admin", *args], result.exit_code, result.stdout, result.stderr)
        if check:
            done.check_returncode()
        return done

    @property
    def database_url(self) -> str:
        return self.env.get("BASTION_DATABASE_URL") or f"sqlite:///{self.data_dir / 'bastion.sqlite3'}"

    def engine(self):  # type: ignore[no-untyped-def]
        """An engine on the server's database that writes audit events as the server does (its audit key
        installed); the caller disposes of it."""
        from bastion.audit import chain
        from bastion.config import Settings
        from bastion.db import make_engine

        engine = make_engine(self.database_url)
        key_file = self.env.get("BASTION_AUDIT_KEY_FILE")
        chain.install(engine, Path(key_file) if key_file else Settings(data_dir=self.data_dir).resolved_audit_key_file)
        return engine

    def create_user(self, name: str | None = None, role: str = "write", admin: bool = False,
                    password: str | None = None, token_name: str | None = None) -> tuple[str, str]:
        """A new user and a token for it: (username, token). Set-up, not the subject: the same service calls as
        `bastion admin create-user` and `create-token` (tested through the CLI in tests/test_cli.py), made in this
        process against the server's database, without two interpreter starts per user."""
        from bastion.accounts import service as accounts
        from bastion.audit.context import AuditContext, bind_context
        from bastion.db import make_session_factory, transaction
        from bastion.tokens import service as tokens

        name = name or f"u{secrets.token_hex(4)}"
        engine = self.engine()
        try:
            with bind_context(AuditContext(via="cli", actor_name="tests")), \
                    transaction(make_session_factory(engine)) as session:
                user = accounts.create_user(session, name, f"{name}@example.com", f"{name.title()} Test", admin,
                                            password=password, email_verified=True)
                secret = tokens.create_token(session, user, token_name or f"{name}-{role}", role).secret
        finally:
            engine.dispose()
        return name, secret

    def server_log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    return PG_ADMIN_URL


def create_pg_database(admin_url: str) -> tuple[str, str]:
    import sqlalchemy as sa

    name = f"bastion_test_{secrets.token_hex(5)}"
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return name, admin_url.rsplit("/", 1)[0] + f"/{name}"


def drop_pg_database(admin_url: str, name: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture(scope="session")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory, clamd: ClamdServer) -> Iterator[BastionServer]:
    server = BastionServer(tmp_path_factory.mktemp("bastion-sqlite"), env={"BASTION_CLAMD_ADDRESS": clamd.address}).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory, pg_admin_url: str,
              clamd: ClamdServer) -> Iterator[BastionServer]:
    name, url = create_pg_database(pg_admin_url)
    server = BastionServer(tmp_path_factory.mktemp("bastion-pg"), database_url=url,
                           env={"BASTION_CLAMD_ADDRESS": clamd.address}).start()
    yield server
    server.stop()
    drop_pg_database(pg_admin_url, name)


@pytest.fixture(scope="session")
def server(sqlite_server: BastionServer) -> BastionServer:
    """The default server for end-to-end tests (embedded SQLite)."""
    return sqlite_server


@pytest.fixture(params=["sqlite", "postgresql"])
def any_server(request: pytest.FixtureRequest) -> BastionServer:
    """Runs a test once per database backend (data layer, commits, concurrency)."""
    return request.getfixturevalue(f"{'pg' if request.param == 'postgresql' else 'sqlite'}_server")


@pytest.fixture
def user(server: BastionServer) -> tuple[str, str]:
    return server.create_user()


def hf_api(server: BastionServer, token: str | None):  # type: ignore[no-untyped-def]
    from huggingface_hub import HfApi

    return HfApi(endpoint=server.url, token=token if token is not None else False)


EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
CUSTOM_MALWARE_MARKER = b"BASTION-MALWARE-TEST-MARKER-7f3a"


def write_test_signatures(db: Path) -> None:
    """A ClamAV signature database of two signatures: EICAR (by hash) and CUSTOM_MALWARE_MARKER (by body)."""
    import hashlib

    db.mkdir(parents=True, exist_ok=True)
    (db / "bastion-test.hdb").write_text(f"{hashlib.md5(EICAR).hexdigest()}:{len(EICAR)}:Bastion.Test.EICAR\n")
    (db / "bastion-test.ndb").write_text(f"Bastion.Test.Custom:0:*:{CUSTOM_MALWARE_MARKER.hex()}\n")


def write_daily(db: Path, version: int, signatures: dict[str, bytes]) -> None:
    """What freshclam writes: a `daily` database (here unsigned, `.cud`) with this version, dated now, and
    these body signatures (name -> bytes); clamd's VERSION then names the version and the date."""
    import hashlib
    import io
    import tarfile

    stime = int(time.time())
    header = f"ClamAV-VDB:{time.strftime('%d %b %Y %H-%M %z')}:{version}:{len(signatures)}:90:X:X:bastion:{stime}"
    ndb = "".join(f"{name}:0:*:{data.hex()}\n" for name, data in signatures.items()).encode()
    info = f"{header}\ndaily.ndb:{len(ndb)}:{hashlib.sha256(ndb).hexdigest()}\n".encode()
    body = io.BytesIO()
    with tarfile.open(fileobj=body, mode="w:gz", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in (("COPYING", b"test signatures\n"), ("daily.info", info), ("daily.ndb", ndb)):
            member = tarfile.TarInfo(name)
            member.size, member.mtime = len(data), stime
            tar.addfile(member, io.BytesIO(data))
    db.mkdir(parents=True, exist_ok=True)
    tmp = db / "daily.cud.tmp"
    tmp.write_bytes(header.encode().ljust(512, b" ") + body.getvalue())
    tmp.rename(db / "daily.cud")


class ClamdServer:
    """A private clamd with a signature database written here (EICAR + one custom signature).

    `max_size` sets MaxFileSize, `stream_max_length` StreamMaxLength (default: max_size), `max_scan_size`
    MaxScanSize, in clamd.conf syntax ("1M"). MaxScanSize counts what clamd extracts from embedded content
    as well (a 240 MB random file sometimes needs more than 400M), so it defaults to the 4G Bastion's
    README asks of a deployment. AlertExceedsMax is on, as the README asks too.
    """

    def __init__(self, root: Path, max_size: str = "400M", stream_max_length: str | None = None,
                 max_scan_size: str = "4G") -> None:
        import shutil

        self.root = root
        self.binary = shutil.which("clamd") or "/usr/sbin/clamd"
        self.socket = root / "clamd.sock"
        self.db = db = root / "db"
        write_test_signatures(db)
        (root / "clamd.conf").write_text(
            f"LocalSocket {self.socket}\nDatabaseDirectory {db}\nForeground yes\nLogFile {root / 'clamd.log'}\n"
            f"StreamMaxLength {stream_max_length or max_size}\nMaxFileSize {max_size}\nMaxScanSize {max_scan_size}\nAlertExceedsMax yes\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self, name: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(30)
            s.connect(str(self.socket))
            s.sendall(f"z{name}\0".encode())
            reply = b""
            while not reply.endswith(b"\0") and (chunk := s.recv(4096)):
                reply += chunk
        return reply.rstrip(b"\0").decode()

    def publish_daily(self, version: int, signatures: dict[str, bytes]) -> str:
        """What freshclam does: a new `daily` database (here unsigned, `.cud`) with this version and
        these body signatures (name -> bytes), then RELOAD. Returns clamd's new VERSION reply."""
        write_daily(self.db, version, signatures)
        assert self.command("RELOAD") == "RELOADING"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            reply = self.command("VERSION")
            if f"/{version}/" in reply:
                return reply
            time.sleep(0.1)
        raise RuntimeError(f"clamd did not load daily version {version}")

    @property
    def address(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> ClamdServer:
        self.proc = subprocess.Popen([self.binary, "-c", str(self.root / "clamd.conf")], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.socket.exists():
                with socket.socket(socket.AF_UNIX) as s:
                    try:
                        s.connect(str(self.socket))
                        s.sendall(b"zPING\0")
                        if s.recv(16).startswith(b"PONG"):
                            return self
                    except OSError:
                        pass
            time.sleep(0.1)
        raise RuntimeError("clamd did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture(scope="session")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClamdServer]:
    server = ClamdServer(tmp_path_factory.mktemp("clamd")).start()
    yield server
    server.stop()


def random_binary(size: int) -> bytes:
    """Random bytes a scanner must call safe: the leading NUL is no pickle opcode. (Plain random bytes
    open with PROTO one time in 256, and a stream that claims to be a pickle and is not one is flagged.)"""
    return b"\x00" + os.urandom(size - 1)


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.1):  # type: ignore[no-untyped-def]
    """Poll until `predicate()` is truthy; return its value or fail with the last one."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")
