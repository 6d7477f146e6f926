"""AWS's batch calls, ten entries at a time, with each entry's fate sorted out once.

Every ``*Batch`` call of SQS (SendMessageBatch, DeleteMessageBatch,
ChangeMessageVisibilityBatch) and SNS's PublishBatch takes at most ten entries, each with an
``Id``, and answers with the ``Failed`` ones; a whole call may fail too. :func:`in_batches`
makes the calls and yields one :class:`Chunk` per call, which says which items went through and
which did not (and why); each caller decides only what to do with the failures (retry, give up,
report)::

    >>> def call(entries):
    ...     return {"Failed": [{"Id": "1", "Code": "ReceiptHandleIsInvalid", "SenderFault": True}]}
    >>> [chunk] = in_batches(call, ["h1", "h2"], lambda h: {"ReceiptHandle": h})
    >>> chunk.succeeded(), [(h, f["Code"]) for h, f in chunk.failed()]
    (['h1'], [('h2', 'ReceiptHandleIsInvalid')])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from . import constants as C
from .errors import error_code

T = TypeVar("T")


@dataclass
class Chunk(Generic[T]):
    """The items of one batch call and what became of them."""

    items: list[T]
    #: position in :attr:`items` → SQS's ``Failed`` entry (``Code``, ``Message``, ``SenderFault``)
    failures: dict[int, Mapping[str, Any]] = field(default_factory=dict)
    #: the whole call failed: none of its entries is known to be done
    error: BaseException | None = None

    def succeeded(self) -> list[T]:
        """The items SQS took."""
        if self.error is not None:
            return []
        return [item for index, item in enumerate(self.items) if index not in self.failures]

    def failed(self) -> list[tuple[T, Mapping[str, Any]]]:
        """The items SQS did not take, each with its failure (for a failed call: the call's error,
        as a failure that is not the sender's fault unless AWS said so)."""
        if self.error is not None:
            exc = self.error
            status = (getattr(exc, "response", None) or {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
            failure = {"Code": error_code(exc), "Message": str(exc)[:500],
                       "SenderFault": isinstance(status, int) and 400 <= status < 500}
            return [(item, failure) for item in self.items]
        return [(self.items[index], failure) for index, failure in sorted(self.failures.items())]


def in_batches(
    call: Callable[[list[dict[str, Any]]], Mapping[str, Any]],
    items: Sequence[T],
    entry: Callable[[T], dict[str, Any]],
    *,
    catch: type[BaseException] | tuple[type[BaseException], ...] = Exception,
) -> Iterator[Chunk[T]]:
    """Call ``call(entries)`` for every ten ``items`` (each entry ``entry(item)`` with its ``Id``);
    yield each call's :class:`Chunk`. An exception of a ``catch`` class ends up in the chunk's
    :attr:`~Chunk.error`; any other is raised (``catch=()``: every one)."""
    for start in range(0, len(items), C.SQS_MAX_BATCH):
        chunk = list(items[start : start + C.SQS_MAX_BATCH])
        entries = [{"Id": str(index), **entry(item)} for index, item in enumerate(chunk)]
        try:
            response = call(entries)
        except catch as exc:
            yield Chunk(chunk, error=exc)
            continue
        failures: dict[int, Mapping[str, Any]] = {}
        for failure in response.get("Failed") or []:
            index = str(failure.get("Id", ""))
            if index.isdigit() and int(index) < len(chunk):
                failures[int(index)] = failure
        yield Chunk(chunk, failures)


__all__ = ["Chunk", "error_code", "in_batches"]
