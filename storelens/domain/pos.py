"""Point-of-sale transactions: parsing times and amounts, validating one transaction.

Shared by ``POST /v1/transactions`` and ``storelens pos import``. Amounts are integers
in minor units of the currency (cents); a decimal amount (``"12.50"``) is converted with
the currency's number of decimals (ISO 4217: 2 for most, 0 for ``JPY``, 3 for ``KWD``).
"""
from __future__ import annotations

import datetime as dt
import decimal
import re
import time

from storelens.contract import messages as m

#: Largest timestamp accepted (every value stays a valid SQL/JSON integer).
MAX_TS_MS = 2**53 - 1
#: Earliest time of a sale, ms (1973-03-03): a smaller number is a time in seconds, not milliseconds.
MIN_SALE_MS = 100_000_000_000
#: How far past "now" a sale may be dated (tills with a fast clock); further is microseconds or a typo.
FUTURE_SLACK_MS = 86_400_000
#: Largest amount in minor units (a sum of many still fits int64).
MAX_AMOUNT_MINOR = 10**12
MAX_ITEMS = 100_000
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/#-]{0,127}$"
CURRENCY_PATTERN = r"^[A-Z]{3}$"
_ZERO_DECIMALS = {"BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND",
                  "VUV", "XAF", "XOF", "XPF"}
_THREE_DECIMALS = {"BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"}


def currency_decimals(currency: str) -> int:
    """Decimals of ``currency`` (ISO 4217 minor unit), 2 unless known otherwise."""
    return 0 if currency in _ZERO_DECIMALS else 3 if currency in _THREE_DECIMALS else 2


def check_sale_ms(ms: int, now_ms: int | None = None) -> int:
    """``ms`` if it can be the time of a sale in ms since the epoch, else ``ValueError`` saying what it looks like:
    seconds (before 1973) or microseconds / the future (more than a day after ``now_ms``, default the wall clock).

    Example:
        >>> check_sale_ms(1767225600000, now_ms=1767225600000)
        1767225600000
        >>> check_sale_ms(1767225600, now_ms=1767225600000)
        Traceback (most recent call last):
        ...
        ValueError: 1767225600 is before 1973-03-03 (100000000000 ms): a time in seconds? Give milliseconds
    """
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if ms < MIN_SALE_MS:
        raise ValueError(f"{ms} is before 1973-03-03 ({MIN_SALE_MS} ms): a time in seconds? Give milliseconds")
    if ms > now + FUTURE_SLACK_MS:
        raise ValueError(f"{ms} is more than a day in the future (now {now} ms): microseconds, or a wrong date? "
                         f"Give milliseconds")
    return ms


def parse_ts(text: str, now_ms: int | None = None) -> int:
    """ISO 8601 with a UTC offset (``2026-03-29T10:15:00+02:00``, ``...Z``) or ms since the epoch -> ms.

    The time of a sale: before 1973 (a time in seconds) or more than a day after ``now_ms`` (default the
    wall clock; microseconds) is a ``ValueError`` (:func:`check_sale_ms`).

    Example:
        >>> parse_ts("2026-01-01T00:00:00Z"), parse_ts("1767225600000")
        (1767225600000, 1767225600000)
    """
    s = text.strip()
    if re.fullmatch(r"\d{1,16}", s):
        ms = int(s)
    else:
        try:
            t = dt.datetime.fromisoformat(s[:-1] + "+00:00" if s.endswith(("Z", "z")) else s)
        except ValueError:
            raise ValueError(f"{text!r} is not an ISO 8601 time or ms since the epoch") from None
        if t.tzinfo is None:
            raise ValueError(f"{text!r} has no UTC offset (e.g. +02:00 or Z): the time would be ambiguous")
        ms = int((t - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) // dt.timedelta(milliseconds=1))
    if not 0 <= ms <= MAX_TS_MS:
        raise ValueError(f"{text!r} is out of range")
    return check_sale_ms(ms, now_ms)


def parse_amount(text: str, currency: str) -> int:
    """A decimal amount in major units (``"12.50"``) -> minor units (1250), exact; >= 0.

    Example:
        >>> parse_amount("12.5", "EUR"), parse_amount("1200", "JPY")
        (1250, 1200)
    """
    try:
        d = decimal.Decimal(text.strip())
    except decimal.InvalidOperation:
        raise ValueError(f"{text!r} is not a number") from None
    if not d.is_finite():
        raise ValueError(f"{text!r} is not a number")
    if d < 0:
        raise ValueError(f"{text!r} is negative")
    minor = d.scaleb(currency_decimals(currency))
    if minor != minor.to_integral_value():
        raise ValueError(f"{text!r} has more decimals than {currency} has ({currency_decimals(currency)})")
    if minor > MAX_AMOUNT_MINOR:
        raise ValueError(f"{text!r} is too large")
    return int(minor)


def transaction(transaction_id: str, store_id: str, register_id: str, ts_ms: int, amount_minor: int,
                currency: str, items_count: int) -> m.PosTransaction:
    """A validated :class:`~storelens.contract.messages.PosTransaction` (``ValueError`` naming the field)."""
    for name, value, pattern in (("transaction_id", transaction_id, ID_PATTERN),
                                 ("register_id", register_id, ID_PATTERN), ("currency", currency, CURRENCY_PATTERN)):
        if not re.fullmatch(pattern, value):
            raise ValueError(f"{name}: {value!r} does not match {pattern}")
    if not 0 <= ts_ms <= MAX_TS_MS:
        raise ValueError(f"time: {ts_ms} is out of range")
    if not 0 <= amount_minor <= MAX_AMOUNT_MINOR:
        raise ValueError(f"amount: {amount_minor} must be between 0 and {MAX_AMOUNT_MINOR} minor units")
    if not 0 <= items_count <= MAX_ITEMS:
        raise ValueError(f"items: {items_count} must be between 0 and {MAX_ITEMS}")
    return m.PosTransaction(transaction_id=transaction_id, store_id=store_id, register_id=register_id, ts_ms=ts_ms,
                            amount_minor=amount_minor, currency=currency, items_count=items_count)


CSV_COLUMNS = ("transaction_id", "register_id", "time", "amount", "items")


def _csv_line(text: str) -> list[str]:
    """The fields of one physical CSV line; ``ValueError`` naming the fault (an unclosed quote, a huge field)."""
    import csv

    text = text.rstrip("\r\n")
    try:
        next(csv.reader([text], strict=True), [])
    except csv.Error as exc:
        if "unexpected end of data" in str(exc):
            raise ValueError("unclosed quote (no field may span lines)") from None
        if "field limit" in str(exc):
            raise ValueError(f"{exc}") from None
    try:
        return next(csv.reader([text]), [])  # lenient as before otherwise ('"b"x' is bx)
    except csv.Error as exc:
        raise ValueError(str(exc)) from None


def read_csv(lines, store_id: str, default_currency: str = "EUR",
             now_ms: int | None = None) -> tuple[list[m.PosTransaction], list[str]]:
    """Transactions of a CSV export (header ``transaction_id,register_id,time,amount,items[,currency]``;
    ``time`` ISO 8601 with offset or ms, from 1973 to a day after ``now_ms``; ``amount`` decimal in major
    units) and one error per bad row, ``line N: ...`` (1-based file line numbers), e.g. ``line 3: time:
    1767225600 is before 1973-03-03 ...: a time in seconds?``. Good rows are returned whatever the bad ones.
    No field holds a line break: each physical line is parsed on its own, and a line with a stray quote is one
    bad row, ``line N: unclosed quote``, the lines after it are read as usual."""
    numbered = enumerate(lines, start=1)
    try:
        _, first_line = next(numbered)
        header = [h.strip().lower() for h in _csv_line(first_line)]
    except StopIteration:
        return [], ["line 1: empty file (expected a header " + ",".join(CSV_COLUMNS) + "[,currency])"]
    except UnicodeDecodeError:  # the file's, not the header's (a ValueError too): the caller names its line
        raise
    except ValueError as exc:
        return [], [f"line 1: {exc}"]
    missing = [c for c in CSV_COLUMNS if c not in header]
    unknown = [c for c in header if c not in (*CSV_COLUMNS, "currency")]
    if missing or unknown:
        return [], [f"line 1: header must be {','.join(CSV_COLUMNS)}[,currency]"
                    + (f"; missing {missing}" if missing else "") + (f"; unknown {unknown}" if unknown else "")]
    col = {c: header.index(c) for c in header}
    out: list[m.PosTransaction] = []
    errors: list[str] = []
    for line, text in numbered:
        try:
            row = _csv_line(text)
        except ValueError as exc:
            errors.append(f"line {line}: {exc} (the line is not imported)")
            continue
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            errors.append(f"line {line}: {len(row)} fields, expected {len(header)}")
            continue
        get = {c: row[i].strip() for c, i in col.items()}
        currency = get.get("currency") or default_currency
        field = "time"
        try:
            ts = parse_ts(get["time"], now_ms)
            field = "currency"
            if not re.fullmatch(CURRENCY_PATTERN, currency):
                raise ValueError(f"{currency!r} is not an ISO 4217 code")
            field = "amount"
            amount = parse_amount(get["amount"], currency)
            field = "items"
            if not re.fullmatch(r"\d{1,9}", get["items"]):
                raise ValueError(f"{get['items']!r} is not a whole number >= 0")
            field = ""
            out.append(transaction(get["transaction_id"], store_id, get["register_id"], ts, amount, currency,
                                   int(get["items"])))
        except ValueError as exc:
            errors.append(f"line {line}: {field + ': ' if field else ''}{exc}")
    return out, errors
