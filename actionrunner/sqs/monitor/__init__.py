"""Flower, ``celery inspect`` and ``celery events`` over SQS, with no server besides SQS.

Celery watches and steers workers through three exchanges that kombu's SQS transport cannot
route: remote control broadcasts on a fanout exchange (``celery.pidbox``), the replies on a
direct exchange (``reply.celery.pidbox``), and events on a topic exchange (``celeryev``). kombu's
virtual transports keep exchange bindings in each process's memory, so a worker never learns of
the reply queue ``celery inspect`` declared, nor of Flower's event queue: stock Celery on SQS
disables both ("No nodes replied"; Flower stays empty).

Here the bindings live in SQS itself, in queue names. Each listener gets a standard queue named
``<prefix><kind>-<name>``:

========  =========================================  =======================================
kind      the queue                                  who sends to it
========  =========================================  =======================================
``box``   a worker's mailbox (``<host>.celery.pidbox``)  a broadcast: every ``box`` queue
``rep``   a client's replies (``<oid>.reply.celery.pidbox``)  a worker's reply: that one queue
``ev``    an event listener (``celeryev.<uuid>``)    an event: every ``ev`` queue
========  =========================================  =======================================

A sender finds the listeners with ListQueues (by prefix, cached for a few seconds, refreshed at
once when a broadcast arrives, as Flower sends one when it starts), and sends from a background
thread with SendMessageBatch, so the worker's loop never waits on monitoring and events to one
queue share requests. With nobody listening, an event costs no request at all.

An idle worker nobody watches dozes: after ``mailbox_doze_after`` seconds with no action, no
command and no event listener, its mailbox is long-polled 20 s at a time (SQS's longest)
whatever the worker's own wait, its events go nowhere without a listing, and its queue is tagged
``actionrunner-dozing``. A command still reaches it at once; an action, a command or the knock a
new event listener sends to every mailbox when it declares its queue wakes it.

A control client knows how many mailboxes it sent a command to: when each has replied, kombu's
collection ends at once instead of waiting out its timeout (:mod:`.replies`). A mailbox that
leaves a command unread that long has no worker (killed): the client deletes it. The worker
replies to ``celery control shutdown`` before it stops (:mod:`.commands`).

The queues keep messages 60 s (SQS's minimum) and hide what was received for longer than that,
so a received message is never deleted: it expires. Events are one-way notices and control
messages carry their own deadlines; neither needs more. Listeners delete their queue when they
close; a workers' janitor deletes event queues whose listener died (messages waiting, none
received for a minute).

Modules, one job each:

* :mod:`.names` — the kinds of monitoring queue, their SQS names, their timings;
* :mod:`.channel` — :class:`MonitorChannel`: what kombu's calls do for the monitoring queues of
  one channel (names, declarations, publishing, receiving); the transport's channel holds one
  and hands it every call about a monitoring queue or exchange;
* :mod:`.mailbox` — :class:`Mailbox`: a worker's mailbox, its watchdog and its doze;
* :mod:`.listeners` — :class:`Monitor`: the listener queues a process knows and where a message
  goes (one per process and endpoint, :func:`monitor_for`);
* :mod:`.sender` — :class:`Sender`: the thread that sends, batched per queue;
* :mod:`.janitor` — :class:`Janitor`: deletes event queues whose listener died;
* :mod:`.replies` — a control client's commands awaiting replies (when the collection is done);
* :mod:`.commands` — the worker's remote-control commands that differ from Celery's.
"""

from __future__ import annotations

from .channel import MonitorChannel
from .janitor import Janitor
from .listeners import Monitor, monitor_for
from .mailbox import Mailbox
from .names import (
    DEFAULT_PREFIX,
    FAILURE_EVENTS,
    JANITOR_INTERVAL_SECONDS,
    KINDS,
    LISTING_TTL_SECONDS,
    MAX_QUEUE_NAME,
    REPLY_WAIT_SECONDS,
    RETENTION_SECONDS,
    VISIBILITY_SECONDS,
    Kind,
    is_monitoring_exchange,
    kind_of,
    sqs_queue_name,
)
from .sender import Sender

__all__ = ["DEFAULT_PREFIX", "FAILURE_EVENTS", "JANITOR_INTERVAL_SECONDS", "KINDS",
           "LISTING_TTL_SECONDS", "MAX_QUEUE_NAME", "REPLY_WAIT_SECONDS", "RETENTION_SECONDS",
           "VISIBILITY_SECONDS", "Janitor", "Kind", "Mailbox", "Monitor", "MonitorChannel", "Sender",
           "is_monitoring_exchange", "kind_of", "monitor_for", "sqs_queue_name"]
