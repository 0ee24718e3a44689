"""The grace period's end, on the scan workers' sweeper (bastion.scanning.queue.sweep_hooks): the repos of
deleted accounts whose grace period is over are deleted, at most once a minute per process."""

from __future__ import annotations

import logging
import time

from bastion.hub import Hub
from bastion.lifecycle import deletion
from bastion.scanning.queue import sweep_hooks

log = logging.getLogger("bastion.lifecycle")
INTERVAL = 60.0
_last: dict[int, float] = {}


def _sweep(hub: Hub) -> None:
    # The sweeper runs every few seconds; one cheap indexed query a minute is enough for a period of days.
    if time.monotonic() - _last.get(id(hub), -INTERVAL) < INTERVAL:
        return
    _last[id(hub)] = time.monotonic()
    purged = deletion.purge_due(hub)
    if purged:
        log.info("deleted the repositories of %d deleted accounts after their grace period: %s", len(purged),
                 ", ".join(purged))


if _sweep not in sweep_hooks:
    sweep_hooks.append(_sweep)
