"""The embedded ClamAV: a clamd that `bastion serve` starts, watches and restarts, and freshclam on a schedule.

Used only when BASTION_CLAMD_ADDRESS is unset. Everything lives in the data dir's `clamav/` folder: clamd.conf
and freshclam.conf (written at each start from the settings), the socket, the logs, and `status.json`, the
supervisor's account of itself that any process (scan workers, the admin page) reads.

Rules: clamd is started only when the binary exists and the database dir holds signatures (no signatures:
the malware scanner answers `unavailable` saying so, never `safe`); the supervisor keeps looking, so
signatures dropped in later or fetched by freshclam bring clamd up. A clamd that exits is restarted after a
back-off (1 s, doubling to 60 s while it keeps dying within a minute); scans in the gap are `unavailable`.
freshclam failing (no network) is recorded and retried, never fatal. Several `bastion serve` processes on one
data dir share one clamd: the one holding `supervisor.lock` supervises it.

(Over 500 lines on purpose: the supervisor, the configuration files it writes and the status it publishes are
one contract; split, each half would have to restate the other's file formats.)
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import logging
import os
import pwd
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from bastion.config import Settings

log = logging.getLogger("bastion.clamd")

# Files clamd loads signatures from (clamd refuses to start without one; .cfg/.ign/.fp files are not signatures).
SIGNATURE_SUFFIXES = frozenset({".cvd", ".cld", ".cud", ".hdb", ".hsb", ".hdu", ".hsu", ".mdb", ".msb", ".mdu",
                                ".msu", ".ndb", ".ndu", ".ldb", ".ldu", ".idb", ".cdb", ".cbc", ".pdb", ".gdb",
                                ".wdb", ".ftm", ".crb", ".yar", ".yara", ".imp"})
TICK = 1.0  # seconds between the supervisor's looks (a stat of the database dir and a poll of the process)
START_TIMEOUT = 600.0  # loading ClamAV's full database takes a minute or more on a small machine
MAX_BACKOFF = 60.0
STABLE_AFTER = 60.0  # a clamd up this long that exits is restarted after the shortest back-off again
VERSION_EVERY = 60.0  # seconds between VERSION checks of a running clamd (signature age on the admin page)
FRESHCLAM_TIMEOUT = 1800.0
FRESHCLAM_RETRY = 900.0  # a failed update is tried again after this (or the interval, if shorter)
NOT_INSTALLED = ("clamd is not installed (Debian: apt-get install clamav-daemon; scripts/serve installs it when "
                 "run as root)")


class ClamavPaths:
    """Where the embedded clamd keeps its files."""

    def __init__(self, settings: Settings) -> None:
        self.root = settings.clamav_dir
        self.db = settings.resolved_clamd_database_dir
        self.socket = self.root / "clamd.sock"
        self.clamd_conf = self.root / "clamd.conf"
        self.freshclam_conf = self.root / "freshclam.conf"
        self.clamd_log = self.root / "clamd.log"
        self.clamd_stderr = self.root / "clamd.stderr"
        self.freshclam_log = self.root / "freshclam.log"
        self.status = self.root / "status.json"
        self.lock = self.root / "supervisor.lock"
        self.tmp = self.root / "tmp"


def clamd_binary() -> str | None:
    found = shutil.which("clamd") or "/usr/sbin/clamd"
    return found if os.access(found, os.X_OK) else None


def freshclam_binary() -> str | None:
    found = shutil.which("freshclam") or "/usr/bin/freshclam"
    return found if os.access(found, os.X_OK) else None


def signature_files(db: Path) -> list[Path]:
    try:
        return sorted(p for p in db.iterdir() if p.suffix.lower() in SIGNATURE_SUFFIXES and p.is_file())
    except OSError:
        return []


def database_fingerprint(db: Path) -> tuple[tuple[str, int, int], ...]:
    """What changes when freshclam (or an operator) changes the database."""
    out = []
    for p in signature_files(db):
        try:
            st = p.stat()
        except OSError:
            continue
        out.append((p.name, st.st_size, st.st_mtime_ns))
    return tuple(out)


def clamd_conf(settings: Settings, paths: ClamavPaths) -> str:
    """clamd.conf with the limits the README asks of any clamd that scans models: whole files up to 4G, an
    alert (never "OK") for a file clamd stopped scanning at a limit, and a scan time as long as Bastion waits."""
    return "\n".join([
        f"LocalSocket {paths.socket}",
        "LocalSocketMode 600",
        "FixStaleSocket yes",
        f"DatabaseDirectory {paths.db}",
        f"TemporaryDirectory {paths.tmp}",
        "Foreground yes",
        f"LogFile {paths.clamd_log}",
        "LogTime yes",
        "LogFileMaxSize 20M",
        "LogRotate yes",
        "StreamMaxLength 4G",
        "MaxFileSize 4G",
        "MaxScanSize 4G",
        "AlertExceedsMax yes",
        f"MaxScanTime {max(1, settings.scan_timeout_seconds) * 1000}",
        "SelfCheck 600",  # clamd reloads a database changed under it (signatures dropped in by hand)
        "",
    ])


def freshclam_conf(settings: Settings, paths: ClamavPaths) -> str:
    lines = [
        f"DatabaseDirectory {paths.db}",
        f"UpdateLogFile {paths.freshclam_log}",
        # Run as root, freshclam would switch to the `clamav` user, who cannot write this database dir.
        f"DatabaseOwner {pwd.getpwuid(os.geteuid()).pw_name}",
        "ConnectTimeout 30",
        "ReceiveTimeout 600",
        "Foreground yes",
    ]
    if settings.freshclam_mirror:
        lines += [f"PrivateMirror {settings.freshclam_mirror}", "DNSDatabaseInfo no"]
    return "\n".join(lines) + "\n"


def parse_version(reply: str) -> dict[str, Any]:
    """clamd's VERSION reply, `ClamAV 1.4.6/27481/Mon Dec  7 09:18:45 2026`: engine, database version, its date
    and age. A database of custom signatures only (no `daily`) has no version or date."""
    engine, _, rest = reply.partition("/")
    version, _, date = rest.partition("/")
    out: dict[str, Any] = {"reply": reply, "engine": engine.strip(), "databaseVersion": None,
                           "databaseDate": None, "databaseAgeHours": None}
    if version.strip().isdigit():
        out["databaseVersion"] = int(version)
    try:
        when = datetime.strptime(" ".join(date.split()), "%a %b %d %H:%M:%S %Y").replace(tzinfo=UTC)
    except ValueError:
        return out
    out["databaseDate"] = when.isoformat()
    out["databaseAgeHours"] = round((datetime.now(UTC) - when).total_seconds() / 3600, 1)
    return out


def read_status(settings: Settings) -> dict[str, Any] | None:
    """The supervisor's last account of itself; None when there is none, or its process is gone (a status left
    by a `bastion serve` that was killed says nothing about now)."""
    try:
        status = json.loads((settings.clamav_dir / "status.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(status, dict):
        return None
    if status.get("state") != "stopped" and not _alive(status.get("supervisorPid")):
        return None
    return status


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def unavailable_reason(settings: Settings) -> str:
    """Why the embedded clamd cannot scan right now, for a scan's `unavailable` verdict."""
    status = read_status(settings)
    if status is None:
        return ("the embedded clamd is not running (`bastion serve` starts it; set BASTION_CLAMD_ADDRESS to use "
                "another clamd)")
    reason = status.get("reason") or f"clamd is {status.get('state', 'not running')}"
    fresh = status.get("freshclam") or {}
    if status.get("state") == "waiting" and fresh.get("lastError"):
        reason += f" (freshclam: {fresh['lastError']})"
    return str(reason)


def _die_with_parent() -> None:
    # clamd (and freshclam) get SIGTERM when the thread that started them ends, which is when `bastion serve`
    # ends, even by SIGKILL (which leaves no `finally` to stop them).
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _ping(socket_path: Path, command: str = "PING", timeout: float = 5.0) -> str:
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(socket_path))
        sock.sendall(f"z{command}\0".encode())
        data = b""
        while not data.endswith(b"\0") and (chunk := sock.recv(4096)):
            data += chunk
    return data.rstrip(b"\0").decode("utf-8", "replace").strip()


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts is not None else None


def _tail_errors(path: Path, limit: int = 3) -> str:
    """The last lines of a clamd or freshclam log that say what went wrong."""
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 16384))
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    wanted = [line.split("->", 1)[-1].strip() for line in lines if "ERROR" in line]
    return "; ".join(dict.fromkeys(wanted[-limit:]))[:500]


_LOG_PREFIX = re.compile(r"ERROR:\s*(?:\w{3} \w{3} +\d+ [\d:]+ \d{4} -> )?")


def _freshclam_error(output: str) -> str:
    """freshclam's distinct ERROR messages (the first say why, the last what failed), without timestamps."""
    found = (" ".join(_LOG_PREFIX.sub(" ", line).split()) for line in output.splitlines() if line.startswith("ERROR"))
    errors = list(dict.fromkeys(found))
    if len(errors) > 3:
        errors = [*errors[:2], errors[-1]]
    return "; ".join(errors)[:500]


AuditHook = Callable[[str, dict[str, Any]], None]


def audit_to(database_url: str) -> AuditHook:
    """Instance events through the one audit function. An engine per event, disposed after it: the serving
    process forks its workers while the supervisor runs, and a child must not inherit an open connection."""

    def record(action: str, details: dict[str, Any]) -> None:
        from bastion import audit
        from bastion.audit.actions import AuditAction
        from bastion.audit.context import AuditContext, bind_context
        from bastion.db import make_engine, make_session_factory, transaction

        engine = make_engine(database_url)
        try:
            with bind_context(AuditContext(via="system", actor_name="bastion")), \
                    transaction(make_session_factory(engine)) as session:
                audit.record(session, AuditAction(action), target=("instance", "clamd"), details=details)
        finally:
            engine.dispose()

    return record


class ClamdSupervisor:
    """Runs in `bastion serve`'s own process: one thread watches clamd, one runs freshclam."""

    def __init__(self, settings: Settings, audit_hook: AuditHook | None = None) -> None:
        self.settings = settings
        self.paths = ClamavPaths(settings)
        self.audit_hook = audit_hook
        self._stop = threading.Event()
        self._lock = threading.Lock()  # guards the status and the process handle
        self._proc: subprocess.Popen[bytes] | None = None
        self._freshclam: subprocess.Popen[bytes] | None = None
        self._lock_file: IO[bytes] | None = None
        self._threads: list[threading.Thread] = []
        self._started_at = 0.0
        self._fails = 0
        self._next_start = 0.0
        self._last_version_check = 0.0
        self._ever_started = False
        interval = settings.freshclam_interval_hours
        self.status: dict[str, Any] = {
            "mode": "embedded", "state": "stopped", "reason": None, "pid": None, "startedAt": None,
            "restarts": 0, "lastExit": None, "lastError": None, "socket": str(self.paths.socket),
            "databaseDir": str(self.paths.db), "signatureFiles": 0, "version": None,
            "supervisorPid": os.getpid(),
            "freshclam": {"enabled": interval > 0, "intervalHours": interval, "mirror": settings.freshclam_mirror,
                          "lastAttempt": None, "lastSuccess": None, "lastError": None, "nextAttempt": None},
        }

    # -- life cycle ------------------------------------------------------------------------------------
    def start(self) -> bool:
        """Start supervising unless another process on this data dir does; never blocks on clamd."""
        if not self.claim():
            return False
        self.step()  # the first look at once (status written before any request), without waiting on clamd
        self._threads = [threading.Thread(target=self._watch, name="clamd-supervisor", daemon=True)]
        if self.settings.freshclam_interval_hours > 0:
            self._threads.append(threading.Thread(target=self._updates, name="freshclam", daemon=True))
        for thread in self._threads:
            thread.start()
        return True

    def claim(self) -> bool:
        """Take the data dir's supervisor lock (False: another process holds it) and prepare the folders."""
        for folder in (self.paths.root, self.paths.db, self.paths.tmp):
            folder.mkdir(parents=True, exist_ok=True)
        self._lock_file = self.paths.lock.open("wb")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            log.info("clamd: another bastion serve on this data dir supervises it")
            self._lock_file.close()
            self._lock_file = None
            return False
        return True

    def stop(self) -> None:
        self._stop.set()
        fetching = self._freshclam
        if fetching is not None and fetching.poll() is None:
            fetching.terminate()  # its thread waits on it
        for thread in self._threads:
            thread.join(10)
        for proc in (self._freshclam, self._proc):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self._lock_file is not None:
            self._set(state="stopped", reason="bastion serve stopped", pid=None)
            self._lock_file.close()

    # -- status ------------------------------------------------------------------------------------------
    def _set(self, fresh: dict[str, Any] | None = None, **changes: Any) -> None:
        with self._lock:
            self.status.update(changes)
            if fresh:
                self.status["freshclam"].update(fresh)
            self.status["updatedAt"] = datetime.now(UTC).isoformat()
            tmp = self.paths.status.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.status, indent=1))
            tmp.replace(self.paths.status)

    def _audit(self, action: str, details: dict[str, Any]) -> None:
        if self.audit_hook is None:
            return
        try:
            self.audit_hook(action, details)
        except Exception:  # an audit write failing must not stop the supervision
            log.exception("clamd: could not record audit event %s", action)

    # -- clamd ------------------------------------------------------------------------------------------
    def _watch(self) -> None:
        while not self._stop.wait(TICK):
            try:
                self.step()
            except Exception:
                log.exception("clamd supervisor step failed")

    def step(self) -> None:
        """One look (the supervisor thread takes one a second): notice an exit, start clamd when it can run."""
        now = time.monotonic()
        proc = self._proc
        if proc is not None:
            code = proc.poll()
            if code is None:
                self._check_running(proc, now)
                return
            self._exited(proc, code, now)
        if len(str(self.paths.socket)) >= 104:
            too_long = (f"the socket path {self.paths.socket} is too long for a unix socket: use a shorter data "
                        "dir, or set BASTION_CLAMD_ADDRESS")
            if self.status["reason"] != too_long:
                log.error("clamd: %s", too_long)
                self._set(state="unavailable", reason=too_long)
            return
        binary = clamd_binary()
        if binary is None:
            if self.status["reason"] != NOT_INSTALLED:
                log.warning("clamd: %s; files get avScan `unavailable`", NOT_INSTALLED)
                self._set(state="unavailable", reason=NOT_INSTALLED)
            return
        files = signature_files(self.paths.db)
        if not files:
            reason = f"no ClamAV signatures yet in {self.paths.db}"
            if self.status["reason"] != reason:
                log.warning("clamd: %s (freshclam fetches them; until then avScan is `unavailable`)", reason)
                self._set(state="waiting", reason=reason, signatureFiles=0)
            return
        if now < self._next_start:
            return
        self._launch(binary, len(files), now)

    def _launch(self, binary: str, signature_count: int, now: float) -> None:
        self.paths.clamd_conf.write_text(clamd_conf(self.settings, self.paths))
        self.paths.socket.unlink(missing_ok=True)  # we hold the lock: no other clamd of ours listens on it
        try:
            with self.paths.clamd_stderr.open("wb") as stderr:
                proc = subprocess.Popen([binary, "-c", str(self.paths.clamd_conf)], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=stderr,
                                        preexec_fn=_die_with_parent)  # one libc call, no locks taken
        except OSError as exc:
            self._fails += 1
            self._next_start = now + min(MAX_BACKOFF, 2.0 ** (self._fails - 1))
            self._set(state="restarting", reason=f"clamd could not be started: {exc}", lastError=str(exc))
            return
        self._proc, self._started_at = proc, now
        log.info("clamd: starting (pid %d, %d signature files in %s)", proc.pid, signature_count, self.paths.db)
        self._set(state="starting", reason="clamd is loading its signatures", pid=proc.pid,
                  startedAt=datetime.now(UTC).isoformat(), signatureFiles=signature_count)

    def _check_running(self, proc: subprocess.Popen[bytes], now: float) -> None:
        if self.status["state"] == "starting":
            try:
                ready = _ping(self.paths.socket, timeout=2.0) == "PONG"
            except OSError:
                ready = False
            if ready:
                self._ready(proc, now)
            elif now - self._started_at > START_TIMEOUT:
                log.error("clamd: not answering %ds after start; restarting it", START_TIMEOUT)
                proc.kill()
            return
        if now - self._last_version_check >= VERSION_EVERY:
            self._refresh_version(now)

    def _ready(self, proc: subprocess.Popen[bytes], now: float) -> None:
        restarted = self._ever_started
        self._ever_started = True
        self._refresh_version(now)
        version = self.status.get("version") or {}
        log.info("clamd: ready (pid %d, %s)", proc.pid, version.get("reply", "version unknown"))
        self._set(state="running", reason=None)
        details = {"pid": proc.pid, "version": version.get("reply"), "databaseDir": str(self.paths.db)}
        if restarted:
            details.update(restarts=self.status["restarts"], lastExit=self.status["lastExit"])
        self._audit("instance.clamd_restart" if restarted else "instance.clamd_start", details)

    def _refresh_version(self, now: float) -> None:
        self._last_version_check = now
        try:
            reply = _ping(self.paths.socket, "VERSION", timeout=10.0)
        except OSError as exc:
            self._set(lastError=f"VERSION failed: {exc}")
            return
        self._set(version=parse_version(reply), signatureFiles=len(signature_files(self.paths.db)))

    def _exited(self, proc: subprocess.Popen[bytes], code: int, now: float) -> None:
        try:
            stderr = self.paths.clamd_stderr.read_text(errors="replace").strip()[-2000:]
        except OSError:
            stderr = ""
        uptime = now - self._started_at
        self._fails = self._fails + 1 if uptime < STABLE_AFTER else 1
        delay = min(MAX_BACKOFF, 2.0 ** (self._fails - 1))
        self._next_start = now + delay
        error = (stderr.splitlines()[-1] if stderr else "") or _tail_errors(self.paths.clamd_log) or f"exit {code}"
        how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
        log.warning("clamd: %s after %.0fs (%s); restarting in %.0fs", how, uptime, error, delay)
        self._proc = None
        self._set(state="restarting", reason=f"clamd {how}; restarting", pid=None, restarts=self.status["restarts"] + 1,
                  lastExit={"code": code, "at": datetime.now(UTC).isoformat(), "uptimeSeconds": round(uptime, 1)},
                  lastError=error[:500])

    # -- freshclam ------------------------------------------------------------------------------------------
    def _updates(self) -> None:
        delay = 0.0  # the first update at start: a new instance has no signatures
        while not self._stop.wait(delay):
            delay = self._retry_delay(self.update_signatures())

    def _retry_delay(self, ok: bool) -> float:
        """Seconds until the next freshclam run after one that succeeded (`ok`) or failed."""
        interval = self.settings.freshclam_interval_hours * 3600
        return interval if ok else min(interval, FRESHCLAM_RETRY)

    def _next_attempt(self, ok: bool) -> str:
        """When the next run is due, recorded in the same status write as the outcome it follows (a reader
        never sees an outcome without its next attempt)."""
        return _iso(time.time() + self._retry_delay(ok))

    def update_signatures(self) -> bool:
        """Run freshclam once; record the outcome, reload clamd if the database changed."""
        binary = freshclam_binary()
        attempt = time.time()
        if binary is None:
            self._set(fresh={"lastAttempt": _iso(attempt), "lastError": "freshclam is not installed",
                             "nextAttempt": self._next_attempt(False)})
            return False
        self.paths.freshclam_conf.write_text(freshclam_conf(self.settings, self.paths))
        before = database_fingerprint(self.paths.db)
        self._set(fresh={"lastAttempt": _iso(attempt), "running": True})
        try:
            self._freshclam = subprocess.Popen(
                [binary, f"--config-file={self.paths.freshclam_conf}", "--stdout", "--no-warnings"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent)
            out, _ = self._freshclam.communicate(timeout=FRESHCLAM_TIMEOUT)
            code = self._freshclam.returncode
        except subprocess.TimeoutExpired:
            self._freshclam.kill()
            out, code = self._freshclam.communicate()[0], -1
            out += f"\nERROR: freshclam took longer than {FRESHCLAM_TIMEOUT:.0f}s".encode()
        except OSError as exc:
            out, code = f"ERROR: {exc}".encode(), -1
        text = out.decode("utf-8", "replace")
        if self._stop.is_set():
            return False
        if code != 0:
            error = _freshclam_error(text) or f"freshclam exited with code {code}"
            was_failing = self.status["freshclam"].get("lastError") is not None
            log.warning("freshclam failed (code %s): %s; next try later", code, error)
            self._set(fresh={"lastError": error, "lastExitCode": code, "running": False,
                             "nextAttempt": self._next_attempt(False)})
            if not was_failing:
                self._audit("instance.signatures_update_failed", {"error": error, "exitCode": code})
            return False
        after = database_fingerprint(self.paths.db)
        self._set(fresh={"lastSuccess": _iso(time.time()), "lastError": None, "lastExitCode": 0, "running": False,
                         "nextAttempt": self._next_attempt(True)})
        if after != before:
            log.info("freshclam: signatures updated (%d files)", len(after))
            reloaded = False
            if self._proc is not None and self.status["state"] == "running":
                try:
                    reloaded = _ping(self.paths.socket, "RELOAD", timeout=10.0) == "RELOADING"
                except OSError:
                    reloaded = False
                self._last_version_check = 0.0  # the next look reads the new version
            self._audit("instance.signatures_update", {"files": [name for name, _s, _m in after],
                                                       "clamdReloaded": reloaded})
        return True


def instance_status(settings: Settings) -> dict[str, Any]:
    """The malware scanner's health for the admin page and `GET /api/admin/clamd`: the supervisor's account
    (embedded) or the configured clamd's answer (external), each with a live PING and the signature age."""
    if settings.embedded_clamd:
        status = read_status(settings) or {"mode": "embedded", "state": "not running",
                                           "reason": unavailable_reason(settings)}
        socket_path = Path(settings.resolved_clamd_address.removeprefix("unix://"))
    else:
        status = {"mode": "external", "address": settings.clamd_address}
        socket_path = None
    status["scannerEnabled"] = "av" in settings.scanners
    try:
        if socket_path is not None:
            reply = _ping(socket_path, "VERSION", timeout=5.0)
        else:
            from bastion.scanning.scanners.malware import ClamdClient

            reply = ClamdClient(settings.resolved_clamd_address, 5.0).command("VERSION")
        status["reachable"] = bool(reply)
        if reply:
            status["version"] = parse_version(reply)  # the age as of now
    except OSError as exc:
        status["reachable"] = False
        if status["mode"] == "external":
            status["reason"] = f"clamd at {settings.clamd_address} is not reachable: {exc}"
    if status["mode"] == "external":
        status["state"] = "running" if status["reachable"] else "unreachable"
    return status
