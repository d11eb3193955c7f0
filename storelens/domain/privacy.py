"""k-anonymity of the aggregates over people: one rule for every route that describes people.

An aggregate (a group, bucket or row: an age band, a product's interest, a zone-to-zone flow,
a path, a median dwell) computed from fewer than ``k`` people is *suppressed*: its value is
``null`` and the row says ``suppressed: true``. Nobody can then read one person's age,
gender, emotion, route or dwell off a narrow query. ``k`` is ``privacy.k_min`` (default 5).

* :func:`is_suppressed` -- the rule for one group: ``0 < n < k`` (an empty group reveals
  nobody and is shown as it is).
* :func:`suppress_counts` -- a breakdown of one total into cells (e.g. tracks per gender):
  cells of ``1..k-1`` people are withheld, and when exactly one cell was withheld the
  smallest other non-empty cell is withheld too (secondary suppression), so the withheld
  count cannot be recovered as the total minus the others. A breakdown of ``1..k-1`` people
  in all is withheld whole, its empty cells too (the zeros around the one person's cell
  would name it).
* :func:`keep` -- a value of a group, or ``None`` when the group is suppressed.

The API applies these in its route layer (``storelens.api.routes``), for every response that
aggregates people.

Example:
    >>> is_suppressed(3, k=5), is_suppressed(0, k=5), is_suppressed(5, k=5)
    (True, False, False)
    >>> suppress_counts({"female": 7, "male": 2, "unknown": 12}, k=5)
    ({'female': None, 'male': None, 'unknown': 12}, True)
    >>> keep(41.5, n=4, k=5), keep(41.5, n=9, k=5)
    (None, 41.5)
"""
from __future__ import annotations

from typing import Mapping, TypeVar

T = TypeVar("T")

#: Default of ``privacy.k_min``.
DEFAULT_K = 5


def is_suppressed(n: int, k: int = DEFAULT_K) -> bool:
    """Whether a group of ``n`` people must be withheld: ``0 < n < k``.

    Raises:
        ValueError: ``k`` below 1 or ``n`` negative.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if n < 0:
        raise ValueError(f"a group cannot have {n} people")
    return 0 < n < k


def keep(value: T, n: int, k: int = DEFAULT_K) -> T | None:
    """``value`` of a group of ``n`` people, or ``None`` when the group is suppressed."""
    return None if is_suppressed(n, k) else value


def suppress_counts(counts: Mapping[str, int], k: int = DEFAULT_K) -> tuple[dict[str, int | None], bool]:
    """``(cells, any_suppressed)``: the cells of a breakdown with the small ones withheld (``None``).

    The cells are a breakdown of one total (their sum: each person in one cell). When that total is
    ``1..k-1`` people every cell is withheld, the empty ones too: with one person, the cells shown as 0
    would leave theirs as the only one withheld. Otherwise primary suppression withholds every cell
    of ``1..k-1`` people. If that withheld exactly one cell, the smallest other non-empty cell (ties:
    the first in order) is withheld too, so that the published total minus the other cells does not
    give it away. Empty cells stay 0. Key order is kept.

    Example:
        >>> suppress_counts({"0-17": 0, "18-24": 6, "25-34": 9}, k=5)
        ({'0-17': 0, '18-24': 6, '25-34': 9}, False)
        >>> suppress_counts({"a": 1, "b": 2, "c": 30}, k=5)
        ({'a': None, 'b': None, 'c': 30}, True)
        >>> suppress_counts({"female": 0, "male": 1, "unknown": 0}, k=5)
        ({'female': None, 'male': None, 'unknown': None}, True)
    """
    if is_suppressed(sum(int(n) for n in counts.values()), k):
        return dict.fromkeys(counts), True
    out: dict[str, int | None] = {key: (None if is_suppressed(int(n), k) else int(n)) for key, n in counts.items()}
    withheld = [key for key, v in out.items() if v is None]
    if len(withheld) == 1:
        others = [(n, i, key) for i, (key, n) in enumerate(out.items()) if n]
        if others:
            out[min(others)[2]] = None
    return out, any(v is None for v in out.values())
