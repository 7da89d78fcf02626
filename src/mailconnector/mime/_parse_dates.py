"""Dates of header fields for the parser: RFC 5322, its obsolete forms, and what mailers write instead.

Written here rather than taken from ``email.utils`` so that results do not change between Python
releases (its date parsing changed behaviour in security fixes) and so that every repair is reported.
Total: a date that cannot be read is None, with a defect.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from mailconnector.mime._parse_decode import Defects

__all__ = ["parse_date"]

_MONTHS = {
    name: number
    for number, names in enumerate(
        [("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"), ("may",),
         ("jun", "june"), ("jul", "july"), ("aug", "august"), ("sep", "sept", "september"),
         ("oct", "october"), ("nov", "november"), ("dec", "december")],
        start=1,
    )
    for name in names
}
# RFC 5322 obsolete zone names, in minutes east of UTC.
_RFC_ZONES = {"UT": 0, "UTC": 0, "GMT": 0, "Z": 0, "EST": -300, "EDT": -240, "CST": -360, "CDT": -300,
              "MST": -420, "MDT": -360, "PST": -480, "PDT": -420}
# Names some mailers write although no RFC allows them; unambiguous enough to read.
_OTHER_ZONES = {"CET": 60, "CEST": 120, "MET": 60, "MEST": 120, "BST": 60, "WET": 0, "WEST": 60,
                "EET": 120, "EEST": 180, "MSK": 180, "JST": 540, "KST": 540, "HKT": 480, "SGT": 480,
                "AEST": 600, "AEDT": 660, "NZST": 720, "NZDT": 780, "HST": -600, "AKST": -540,
                "AKDT": -480}
_DATE = re.compile(
    r"""\s*(?:[A-Za-z]{2,9}\.?\s*,?\s*)?
    (?P<day>\d{1,2})\s*[-/\s]?\s*(?P<mon>[A-Za-z]{3,9})\.?\s*[-/\s]?\s*(?P<year>\d{2,4})\s*,?\s+
    (?P<h>\d{1,2})\s*:\s*(?P<mi>\d{1,2})(?:\s*:\s*(?P<s>\d{1,2})(?:[.,]\d+)?)?
    \s*(?P<zone>[+-]\d{1,2}:?\d{2}|[A-Za-z]{1,5})?
    \s*(?:\(.*\))?\s*""",
    re.X | re.S,
)
# The asctime form found in mbox "From " lines and some scripts: "Fri Mar  1 10:00:00 2024".
_ASCTIME = re.compile(
    r"\s*[A-Za-z]{3}\s+(?P<mon>[A-Za-z]{3})\s+(?P<day>\d{1,2})\s+(?P<h>\d{1,2}):(?P<mi>\d{2})"
    r"(?::(?P<s>\d{2}))?\s+(?:(?P<zone>[+-]\d{4}|[A-Za-z]{1,5})\s+)?(?P<year>\d{4})\s*"
)


_ZONES: dict[int, timezone] = {}


def _zone_minutes(zone: str | None, shown: str, defects: Defects) -> int:
    if not zone:
        defects.add(f"date {shown!r} has no time zone; read as UTC")
        return 0
    if zone[0] in "+-":
        digits = zone[1:].replace(":", "").rjust(4, "0")
        hours, minutes = int(digits[:-2]), int(digits[-2:])
        if hours > 23 or minutes > 59:
            raise ValueError("offset out of range")
        return (hours * 60 + minutes) * (-1 if zone[0] == "-" else 1)
    upper = zone.upper()
    if upper in _RFC_ZONES:
        return _RFC_ZONES[upper]
    if upper in _OTHER_ZONES:
        offset = _OTHER_ZONES[upper]
        shown_offset = f"{'-' if offset < 0 else '+'}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
        defects.add(f"date uses the time zone name {zone!r}; read as {shown_offset}")
        return offset
    defects.add(f"date {shown!r} has an unknown time zone {zone!r}; read as UTC")
    return 0


def _build(groups: dict[str, str | None], shown: str, defects: Defects) -> str:
    year_text = groups["year"] or ""
    year = int(year_text)
    if len(year_text) == 2:
        year += 2000 if year < 50 else 1900
    elif len(year_text) == 3:
        year += 1900
    month = _MONTHS.get((groups["mon"] or "").lower())
    if month is None:
        raise ValueError("unknown month")
    second = min(int(groups["s"] or 0), 59)  # a leap second is not representable
    offset = _zone_minutes(groups["zone"], shown, defects)
    zone = _ZONES.get(offset)
    if zone is None:
        zone = _ZONES[offset] = timezone(timedelta(minutes=offset))  # one per offset: a few thousand at most
    moment = datetime(year, month, int(groups["day"] or 0), int(groups["h"] or 0), int(groups["mi"] or 0),
                      second, tzinfo=zone)
    return moment.isoformat()


def parse_date(value: str, defects: Defects) -> str | None:
    """An RFC 5322 date as ISO 8601 with its offset, or None (with a defect) when it cannot be read."""
    text = value.strip()
    shown = text if len(text) <= 80 else text[:77] + "..."
    if len(text) > 200:
        defects.add(f"date {shown!r} could not be read")
        return None
    scratch = Defects()
    for pattern, note in ((_DATE, None), (_ASCTIME, "is in asctime form")):
        match = pattern.fullmatch(text)
        if match is None:
            continue
        try:
            result = _build(match.groupdict(), shown, scratch)
        except (ValueError, OverflowError):
            break
        for item in scratch.items:
            defects.add(item)
        if note:
            defects.add(f"date {shown!r} {note}; read anyway")
        return result
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        defects.add(f"date {shown!r} could not be read")
        return None
    defects.add(f"date {shown!r} is ISO 8601, not RFC 5322; read anyway")
    if moment.tzinfo is None:
        defects.add(f"date {shown!r} has no time zone; read as UTC")
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()
