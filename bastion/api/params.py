"""Numbers in URLs: a path segment or query parameter that must be a decimal integer (a discussion number, a
page index, a lock id, a cursor), read one way everywhere.
"""

from __future__ import annotations

# Bastion's integer columns are 32-bit in PostgreSQL: a larger id is no row, not a database error.
INT4_MAX = (1 << 31) - 1


def decimal(value: str | None, maximum: int = INT4_MAX) -> int | None:
    """`value` as an integer from 0 to `maximum` when it is written in ASCII digits, else None.

    `str.isdigit()` alone is not the test: it accepts other scripts' digits ('٣', another spelling of 3) and
    superscripts ('²', which int() refuses: a 500), and any length (an id no column can hold: a 500 too).
    """
    if not value or len(value) > len(str(maximum)) or not value.isascii() or not value.isdigit():
        return None
    number = int(value)
    return number if number <= maximum else None
