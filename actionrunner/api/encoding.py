"""What an action's inputs may hold to travel: checked before anything is sent.

JSON reads integers of any size, ``NaN``/``Infinity`` and lone surrogates (``"\\ud800"``); not
every part of the path does. The compact wire format and the state table's records encode with
orjson (64-bit integers, UTF-8 text), DynamoDB holds 38 digits, and pydantic's JSON mode turns
``NaN`` into ``null`` without a word. :func:`problems` names each value that would fail (as
kombu's ``EncodeError``, a 500) or change on the way, so the API answers 422 naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

#: The integers every reader and store on the path holds exactly (orjson's range).
INT_MIN, INT_MAX = -(2**63), 2**64 - 1
#: Nesting deeper than this is refused (orjson's own limit is 254).
MAX_DEPTH = 200


def problems(kwargs: dict[str, Any]) -> dict[str, str]:
    """``{dotted field path: what is wrong}`` for each value of ``kwargs`` that cannot be
    encoded as it is; empty when all can."""
    return dict(_walk(kwargs, (), 0))


def _walk(value: Any, path: tuple[str, ...], depth: int) -> Iterator[tuple[str, str]]:
    where = ".".join(path) or "(inputs)"
    if depth > MAX_DEPTH:
        yield where, f"is nested deeper than {MAX_DEPTH} levels"
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            yield where, (f"integer out of range: {value.bit_length()} bits; the inputs carry "
                          "integers from -2**63 to 2**64-1 (send larger numbers as strings)")
    elif isinstance(value, float):
        if not math.isfinite(value):
            yield where, "is not a finite number (NaN and Infinity are not JSON)"
    elif isinstance(value, str):
        if not _is_unicode(value):
            yield where, "is text with a lone surrogate (not valid Unicode)"
    elif isinstance(value, dict):
        for key, item in value.items():
            name = str(key)
            if not _is_unicode(name):
                yield where, "has a key with a lone surrogate (not valid Unicode)"
                continue
            yield from _walk(item, (*path, name), depth + 1)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _walk(item, (*path, str(index)), depth + 1)


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
