"""The consumer's options: one typed object, one default per option.

Celery hands a transport its options as a dict (``broker_transport_options``, filled from the
settings by :mod:`actionrunner.celery_config`); :meth:`ConsumerOptions.of` reads that dict once,
so every default is written here and nowhere else::

    >>> ConsumerOptions.of({"visibility_timeout": 45}).visibility_timeout
    45
    >>> ConsumerOptions.of({}).max_decoded_bytes == DEFAULT_MAX_DECODED_BYTES
    True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import constants as C

#: Default bound on decoded bodies (``ACTIONRUNNER_MAX_DECODED_BYTES``): senders refuse bodies over
#: it, workers refuse to inflate or fetch past it.
DEFAULT_MAX_DECODED_BYTES = C.DEFAULT_MAX_DECODED_BYTES
#: Seconds past its long poll a receive may take before it is given up and tried again.
RECEIVE_GRACE_SECONDS = 5.0


@dataclass(frozen=True, kw_only=True)
class ConsumerOptions:
    """What the FIFO consumer is told by the transport options."""

    dlq_name: str = C.DEFAULT_DLQ_NAME
    #: queue name → its DLQ's name (lanes); a queue not listed uses ``dlq_name``
    dlq_names: Mapping[str, str] = field(default_factory=dict)
    payload_bucket: str | None = None
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES
    visibility_timeout: int = 30
    wait_time_seconds: int = C.SQS_MAX_WAIT_SECONDS
    polling_interval: float = 0.1
    #: seconds between visibility extensions (None: the housekeeper's own, from the timeout)
    heartbeat_interval: float | None = None
    payload_fetch_attempts: int = 5
    #: the general read timeout of AWS clients (``client-config``), if one is set
    read_timeout: float | None = None

    @classmethod
    def of(cls, options: Mapping[str, Any], **overrides: Any) -> ConsumerOptions:
        """The options in kombu's ``transport_options`` dict (``overrides`` win)."""
        fields: dict[str, Any] = {}
        casts: tuple[tuple[str, Callable[[Any], Any]], ...] = (
            ("visibility_timeout", int), ("wait_time_seconds", int), ("polling_interval", float))
        for name, cast in casts:  # 0 means 0
            if options.get(name) is not None:
                fields[name] = cast(options[name])
        casts = (("dlq_name", str), ("payload_bucket", str), ("max_decoded_bytes", int),
                 ("heartbeat_interval", float), ("payload_fetch_attempts", int))
        for name, cast in casts:
            if options.get(name):  # unset, empty or 0: the default
                fields[name] = cast(options[name])
        if options.get("dlq_names"):
            fields["dlq_names"] = dict(options["dlq_names"])
        general = (options.get("client-config") or {}).get("read_timeout")
        if general:
            fields["read_timeout"] = float(general)
        fields.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**fields)

    def dlq_for(self, queue_url: str) -> str:
        """The name of the DLQ of the queue at ``queue_url``."""
        return str(self.dlq_names.get(queue_url.rsplit("/", 1)[-1]) or self.dlq_name)

    @property
    def receive_read_timeout(self) -> float:
        """A receive gives up soon after its long poll (see :mod:`.receiver`)."""
        timeout = self.wait_time_seconds + RECEIVE_GRACE_SECONDS
        return min(self.read_timeout, timeout) if self.read_timeout else timeout


__all__ = ["DEFAULT_MAX_DECODED_BYTES", "RECEIVE_GRACE_SECONDS", "ConsumerOptions"]
