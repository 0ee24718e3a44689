"""Region moves on the scan workers: a Huey task per move, re-queued by the sweeper when its worker died."""

from __future__ import annotations

import logging

from bastion.hub import Hub
from bastion.relocation import service
from bastion.scanning.queue import ScanQueue, queue_extensions, sweep_hooks

log = logging.getLogger("bastion.relocation")


def _extend(queue: ScanQueue) -> None:
    hub = queue.hub

    def region_move(move_id: int) -> None:
        try:
            log.info("region move %s: %s", move_id, service.run_move(hub, move_id))
        except Exception:
            log.exception("region move %s failed", move_id)

    queue.region_move_task = queue.huey.task(name="region_move")(region_move)  # type: ignore[attr-defined]


def _enqueue(hub: Hub, move_id: int) -> None:
    queue = hub.scan_queue
    task = getattr(queue, "region_move_task", None)
    if task is None:
        raise RuntimeError("no scan queue in this process to run the region move on")
    task(move_id)


def _sweep(hub: Hub) -> None:
    moved = service.sweep(hub)
    if moved:
        log.info("re-queued %d region moves whose worker stopped", len(moved))


if _extend not in queue_extensions:
    queue_extensions.append(_extend)
    sweep_hooks.append(_sweep)
    service.enqueue_hooks.append(_enqueue)
