"""The scan queue: Huey as transport (SQLite file embedded, Redis for scale-out) and workers.

Huey removes a message when a worker takes it, so a worker killed mid-scan would lose it;
the scan_jobs table is therefore the source of truth and a sweeper re-queues expired leases.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from huey import RedisHuey, SqliteHuey
from huey.consumer import Consumer

from bastion.hub import Hub

log = logging.getLogger("bastion.scanning")


class ScanQueue:
    def __init__(self, hub: Hub) -> None:
        settings = hub.settings
        url = settings.queue_url
        if url and url.startswith(("redis://", "rediss://", "unix://")):
            self.huey: Any = RedisHuey(f"{settings.queue_name}-scans", url=url, results=False)
        else:
            queue_file = str(settings.resolved_data_dir / "queue.sqlite3")
            self.huey = SqliteHuey(f"{settings.queue_name}-scans", filename=queue_file, results=False)
        self.hub = hub

        def scan_job(job_id: int) -> None:
            from bastion.scanning.jobs import run_job

            outcome = run_job(hub, job_id)
            log.info("scan job %s: %s", job_id, outcome)

        def scan_jobs(job_ids: list[int]) -> None:
            from bastion.scanning.jobs import run_job

            for job_id in job_ids:
                log.info("scan job %s: %s", job_id, run_job(hub, job_id))

        self.task = self.huey.task(name="scan_job")(scan_job)
        self.batch_task = self.huey.task(name="scan_jobs")(scan_jobs)
        for extend in queue_extensions:
            extend(self)

    def enqueue(self, job_id: int, delay: int | None = None) -> None:
        if delay:
            self.task.schedule(args=(job_id,), delay=delay)
        else:
            self.task(job_id)

    def enqueue_many(self, job_ids: list[int]) -> None:
        """Hand jobs to the workers: one message each up to MAX_MESSAGES, beyond that as many messages of
        consecutive jobs (a message costs a queue write: 100,000 of them would take minutes). Workers
        still share the work; a job of a message whose worker died waits for its lease to expire, and
        the sweeper queues it again."""
        if len(job_ids) <= MAX_MESSAGES:
            for job_id in job_ids:
                self.task(job_id)
            return
        size = -(-len(job_ids) // MAX_MESSAGES)
        for i in range(0, len(job_ids), size):
            self.batch_task(list(job_ids[i:i + size]))


MAX_MESSAGES = 256  # per commit; see ScanQueue.enqueue_many

# Other durable jobs run by the scan workers, with their own table as the source of truth: a feature
# above registers its Huey task here (called with each new ScanQueue) and a sweep the sweeper runs
# (re-queue what a dead worker left). bastion.relocation registers region moves.
queue_extensions: list[Callable[[ScanQueue], None]] = []
sweep_hooks: list[Callable[[Hub], object]] = []


def attach(hub: Hub) -> ScanQueue:
    import bastion.scanning.enqueue  # noqa: F401  (registers the post-commit hook and the download guard)

    queue = ScanQueue(hub)
    hub.scan_queue = queue
    return queue


class _ThreadConsumer(Consumer):  # type: ignore[misc]
    """A consumer inside the server process: signal handlers belong to the server, not to us."""

    def _set_signal_handlers(self) -> None:
        pass


class Workers:
    """Scan workers plus the sweeper that re-queues jobs whose lease expired."""

    def __init__(self, queue: ScanQueue, workers: int, embedded: bool) -> None:
        self.queue = queue
        cls = _ThreadConsumer if embedded else Consumer
        self.consumer = cls(queue.huey, workers=workers, worker_type="thread", periodic=False,
                            check_worker_health=True, initial_delay=0.1, max_delay=1.0, backoff=1.15)
        self._stop = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep_loop, name="scan-sweeper", daemon=True)

    def _sweep_loop(self) -> None:
        from bastion.scanning.enqueue import rescan_outdated
        from bastion.scanning.jobs import scanner_versions, sweep, wake_waiting

        hub = self.queue.hub
        interval = max(1.0, min(30.0, hub.settings.scan_lease_seconds / 3))
        seen: dict[str, str] | None = None  # the scanner versions the last rescan pass ran for
        backlog = False
        while not self._stop.is_set():
            try:
                # A scanner that answers again (clamd up at last, or back after a restart): the files that
                # waited for it are scanned now, not at the end of their back-off.
                versions = scanner_versions(hub)
                back = [name for name, version in versions.items() if version != "unavailable"
                        and (seen is None or seen.get(name) == "unavailable")]
                if wake_waiting(hub, back):
                    log.info("scanners %s answer again: waiting scan jobs are due now", ", ".join(back))
                for hook in sweep_hooks:
                    hook(hub)
                requeued = sweep(hub)
                if requeued:
                    log.info("re-queued %d scan jobs with expired leases", len(requeued))
                # A new scanner or signature version (at start, or freshclam updated clamd while we
                # run): queue rescans, keeping the old verdicts. One VERSION command per pass; the
                # rescan query runs only when a version changed, and again until it finds nothing.
                if versions != seen or backlog:
                    count = rescan_outdated(hub)
                    if count:
                        log.info("queued %d rescans for scanner versions %s", count, versions)
                    seen, backlog = versions, count > 0
            except Exception:
                log.exception("scan sweeper failed; retrying")
            self._stop.wait(interval)

    def start(self) -> None:
        self.consumer.start()
        self._sweeper.start()

    def run_forever(self) -> None:
        """`bastion worker`: the consumer in the foreground, stopping cleanly on SIGTERM/SIGINT."""
        self._sweeper.start()
        try:
            self.consumer.run()
        finally:
            self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        self.consumer.stop(graceful=False)
