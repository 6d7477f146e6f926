"""A control client's commands awaiting replies: when every addressed mailbox has answered,
kombu's collection ends at once instead of waiting out its timeout.

kombu collects replies until a receive comes back empty after ``timeout`` (``celery inspect``'s
``-t``, 1 s by default) unless the command names its destinations; so every ``celery inspect
ping`` took its whole timeout after the last reply. The client knows how many mailboxes it sent
the command to, so it knows when the last reply came. A mailbox that never answers (its worker
was killed) leaves the collection to kombu's timeout, and is deleted afterwards if the command
is still unread there (:meth:`.listeners.Monitor.delete_unread`).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from typing import Any

from kombu.utils.json import loads

from .names import sqs_queue_name


@dataclasses.dataclass
class Awaited:
    """One command sent with ``reply_to``: the mailboxes it went to and who answered. (Kept by
    the process's :class:`.listeners.Monitor`: kombu publishes on a producer's channel of its
    own and collects on another.)"""

    #: the kombu name of the client's reply queue
    reply_queue: str
    urls: list[str]
    #: replies that end the collection: one per mailbox, or kombu's own limit (``-d``)
    expected: int
    destination: list[str] | None = None
    sent_at: float = dataclasses.field(default_factory=time.monotonic)
    replied: set[str] = dataclasses.field(default_factory=set)
    #: replies so far (two workers started with one node name answer twice)
    answers: int = 0

    @classmethod
    def of(cls, command: dict[str, Any], urls: list[str]) -> Awaited:
        """The wait for the replies to ``command`` (see :func:`command_of`), sent to ``urls``."""
        destination = command.get("destination")
        nodes = destination if isinstance(destination, list) and destination else None
        reply_to = command["reply_to"]
        return cls(f"{reply_to.get('routing_key')}.{reply_to.get('exchange')}", urls,
                   len(nodes) if nodes else len(urls), nodes)

    def heard(self, nodes: list[str]) -> None:
        self.answers += 1
        self.replied.update(nodes)

    @property
    def complete(self) -> bool:
        return self.answers >= self.expected

    def silent(self, prefix: str) -> list[str]:
        """The addressed mailboxes whose node did not answer (by the node in the queue name)."""
        answered = set(addressed(self.urls, sorted(self.replied), prefix)) if self.replied else set()
        return [url for url in addressed(self.urls, self.destination, prefix) if url not in answered]


def addressed(urls: list[str], destination: Any, prefix: str) -> list[str]:
    """The mailboxes among ``urls`` of the nodes a command names (``celery inspect -d``); all of
    them when it names none, or none of theirs is recognised (a name shortened with a hash)."""
    if not destination or not isinstance(destination, list):
        return urls
    starts = [f"{sqs_queue_name(prefix, f'{node}.celery.pidbox')}-" for node in destination
              if isinstance(node, str) and node]
    chosen = [url for url in urls if any(url.rsplit("/", 1)[-1].startswith(start) for start in starts)]
    return chosen or urls


def command_of(message: dict[str, Any]) -> dict[str, Any] | None:
    """The remote-control command of a pidbox message (kombu's Mailbox puts ``reply_to`` and
    ``destination`` in the body, still serialized here; commands are JSON), or None."""
    try:
        body = loads(message.get("body") or "{}")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def reply_of(payload: Any) -> tuple[str | None, list[str]]:
    """The ticket of a reply (kombu's message as the transport hands it over) and the nodes that
    answer in it (the keys of its body: ``{"w1@host": {"ok": "pong"}}``)."""
    if not isinstance(payload, dict):
        return None, []
    ticket = (payload.get("headers") or {}).get("ticket")
    body = payload.get("body")
    try:
        if (payload.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body or "")
        decoded = json.loads(body or "{}")
    except (ValueError, TypeError):
        return ticket, []
    return ticket, [str(node) for node in decoded] if isinstance(decoded, dict) else []
