"""The audit log's background work, in a daemon thread of `bastion serve` and of `bastion worker`: deliver the
outbox to the sinks (every second), sign a checkpoint when one is due, apply retention (hourly).

`tick(now)` does one round at the time given, so tests move the clock instead of sleeping. Several processes
may run it: sends are claimed under a lease, checkpoints and cuts are decided under the chain's lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from bastion.audit import checkpoints, delivery, retention
from bastion.config import Settings
from bastion.db import transaction, utcnow

log = logging.getLogger("bastion.audit")
RETENTION_EVERY = timedelta(hours=1)

# Each organization's retention period (days) by name: filled by bastion.orgs.service (a higher feature).
org_periods: Callable[[Session], dict[str, int]] | None = None


class AuditWorker:
    def __init__(self, sessions: sessionmaker[Session], settings: Settings,
                 transport: delivery.Transport | None = None, clock: Callable[[], datetime] = utcnow) -> None:
        self.sessions = sessions
        self.settings = settings
        self.transport = transport or delivery.NetworkTransport(settings.audit_sink_ca_file)
        self.clock = clock
        self._last_retention: datetime | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="audit-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.tick(self.clock())
            except Exception:  # the next round retries; the audit log's chores never stop the server
                log.exception("audit worker round failed")

    def tick(self, now: datetime) -> dict[str, Any]:
        s = self.settings
        out: dict[str, Any] = {"delivered": delivery.deliver_due(self.sessions, s.secret_key, now, self.transport,
                                                                  s.audit_delivery_max_attempts)}
        if checkpoints._signer is not None:
            out["checkpoint"] = checkpoints.maybe_write(self.sessions, now, s.audit_checkpoint_every,
                                                        timedelta(seconds=s.audit_checkpoint_interval_seconds))
        if self._last_retention is None or now - self._last_retention >= RETENTION_EVERY:
            self._last_retention = now
            out["retention"] = self.retention(now)
        return out

    def retention(self, now: datetime) -> dict[str, Any]:
        periods: dict[str, int] = {}
        if org_periods is not None:
            with transaction(self.sessions, readonly=True) as session:
                periods = org_periods(session)
        if not periods and not self.settings.audit_retention_days:
            return {"emptied": {}, "deleted": 0}
        return retention.run(self.sessions, self.settings.resolved_audit_archive_dir,
                             self.settings.audit_retention_days, periods, now)
