"""Memory sizes as people write them: ``512`` (MiB, as xl), ``512M``, ``2G``, ``2GiB``, ``1048576K``.

Units are binary (K = KiB = 1024 bytes), as in xl and Xen; "B" after a unit changes nothing
("2GB" is 2 GiB), because a guest's memory is never counted in powers of ten.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_UNIT_KIB = {"k": 1, "m": 1024, "g": 1024**2, "t": 1024**3}
_SIZE = re.compile(r"^\s*(\d{1,20}(?:\.\d{1,20})?)\s*([kmgt])?(?:i?b)?\s*$", re.IGNORECASE)

HINT = "use MiB or a size like 512M or 2G"


def _shown(value: object) -> str:
    if isinstance(value, str):
        return '"' + (value if len(value) <= 40 else value[:37] + "...") + '"'
    return repr(value)


_TOO_LARGE_KIB = Decimal(2**60)  # 1 ZiB: far above what Xen supports, far below Decimal's 28 digits


def parse_size_mib(value: object) -> int:
    """The size ``value`` stands for, in MiB; ValueError (with a message for people) otherwise.

    An int or a plain number is MiB; a string may carry a K, M, G or T unit.  The result must be
    a positive whole number of MiB: Xen hands memory to guests in pages, xentool in MiB.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{_shown(value)} is not a size; {HINT}")
    if isinstance(value, (int, float)):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{_shown(value)} is not a size; {HINT}")
        amount_kib = Decimal(value) * 1024
    else:
        match = _SIZE.match(value)
        if not match:
            raise ValueError(f"{_shown(value)} is not a size; {HINT}")
        number, unit = match.groups()
        try:
            amount_kib = Decimal(number) * _UNIT_KIB[(unit or "m").lower()]
        except InvalidOperation:  # pragma: no cover - the pattern admits only plain decimals
            raise ValueError(f"{_shown(value)} is not a size; {HINT}") from None
    if amount_kib <= 0:
        raise ValueError(f"{_shown(value)} is not a size; a size must be more than 0")
    if amount_kib > _TOO_LARGE_KIB:  # also keeps the remainder below within Decimal's precision
        raise ValueError(f"{_shown(value)} is larger than any machine's memory; give a size in MiB, like 512 or 2G")
    if amount_kib % 1024:
        raise ValueError(f"{_shown(value)} is not a whole number of MiB; round it to MiB")
    return int(amount_kib // 1024)
