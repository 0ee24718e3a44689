"""Where an event came from: the `location` of an address, from a MaxMind-format (.mmdb) database.

The database is opened once per process (memory-mapped by the reader) and only when configured
(`BASTION_GEOIP_DATABASE`); without one, events have no location. Private, loopback and unknown
addresses have none either.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Any

import maxminddb


@lru_cache(maxsize=4)
def _reader(path: str) -> maxminddb.Reader:
    return maxminddb.open_database(path)


class Locator:
    """Looks addresses up in one database; remembers the answers for the addresses of one export."""

    def __init__(self, database: Path | None, memo_size: int = 4096) -> None:
        self._reader = _reader(str(database)) if database is not None else None
        self._memo: dict[str, dict[str, str] | None] = {}
        self._memo_size = memo_size

    def locate(self, ip: str | None) -> dict[str, str] | None:
        """The Hub's `location {formatted, country?, city?}` of `ip`, or None."""
        if self._reader is None or not ip:
            return None
        if ip in self._memo:
            return self._memo[ip]
        found = self._lookup(ip)
        if len(self._memo) >= self._memo_size:
            self._memo.clear()  # bounded: an export of many addresses must not grow without limit
        self._memo[ip] = found
        return found

    def _lookup(self, ip: str) -> dict[str, str] | None:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None
        if not addr.is_global:
            return None
        assert self._reader is not None
        try:
            record: Any = self._reader.get(addr)
        except (ValueError, maxminddb.InvalidDatabaseError):
            return None
        if not isinstance(record, dict):
            return None
        city = _name(record.get("city"))
        country = _name(record.get("country"))
        if not city and not country:
            return None
        out: dict[str, str] = {"formatted": ", ".join(p for p in (city, country) if p)}
        if country:
            out["country"] = country
        if city:
            out["city"] = city
        return out


def _name(entry: object) -> str | None:
    if not isinstance(entry, dict):
        return None
    names = entry.get("names")
    if isinstance(names, dict):
        name = names.get("en") or next((v for v in names.values() if isinstance(v, str)), None)
        if isinstance(name, str):
            return name
    code = entry.get("iso_code")
    return code if isinstance(code, str) else None
