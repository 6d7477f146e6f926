"""The worker's receive loop: a thread per queue that keeps the worker fed and rides out AWS errors.

kombu's own loop receives through its asynchronous HTTP client, and a failed answer ends it: a 5xx
or a timeout comes back as a list where a dict was expected, a 4xx is raised into the event loop,
and either stops the worker. Here each FIFO queue has a :class:`Receiver` thread that calls
ReceiveMessage with boto3 (botocore's standard retries, timeouts), so that:

* any error — 5xx, throttling, a reset, a lost or slow answer, AccessDenied, an expired token — is
  logged once per episode (and once a minute while it lasts), waited out with a jittered, capped
  backoff, and the loop goes on; recovery is logged too. Nothing is raised into the event loop;
* every FIFO receive carries a ``ReceiveRequestAttemptId``, reused when the same receive is tried
  again, so that when an answer is lost SQS hands the same messages back instead of hiding them
  (and their groups) for a visibility timeout;
* it asks for 10 when there is room for 10, and for what room is left only when the worker is
  running low (a watermark, see ``demand``), so receives come back full.

Received messages reach the event loop's thread through a :class:`HubInbox`: a pipe the hub
watches, so they are handled at once, in the thread that owns every piece of channel state.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from .. import constants as C
from ..backoff import backoff
from ..errors import error_code

logger = logging.getLogger("actionrunner.worker")

#: Error codes that mean "this worker may not do that" (not a passing fault): logged as errors.
PERMISSION_CODES = frozenset({
    "AccessDenied", "AccessDeniedException", "ExpiredToken", "ExpiredTokenException",
    "InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch",
    "MissingAuthenticationToken", "KMS.AccessDeniedException", "KMS.DisabledException",
    "KMS.InvalidStateException", "KMS.NotFoundException", "KmsAccessDenied", "KmsDisabled",
})


class Episode:
    """A run of failures of one kind of request: a line when it starts (and when a new error code
    shows up in it), one a minute while it lasts, one when it ends."""

    def __init__(self, what: str, *, every: float = 60.0) -> None:
        self.what, self.every = what, every
        self.failures = 0
        self.started = self.logged = 0.0
        self.codes: set[str] = set()

    def failed(self, exc: BaseException) -> int:
        now = time.monotonic()
        self.failures += 1
        code = error_code(exc)
        if self.failures == 1:
            self.started, self.codes = now, set()
        elif code in self.codes and now - self.logged < self.every:
            return self.failures  # said already in this episode
        self.logged = now
        self.codes.add(code)
        if code in PERMISSION_CODES:
            logger.error("%s refused: %s (%s). This worker's credentials or role may not do it: "
                         "check its IAM policy, the queue's KMS key and the credentials' expiry. "
                         "Retrying with backoff (%d failed so far)", self.what, code,
                         str(exc)[:300], self.failures)
        else:
            logger.warning("%s failed: %s (%s); retrying with backoff (%d failed so far)",
                           self.what, code, str(exc)[:300], self.failures)
        return self.failures

    def succeeded(self) -> None:
        if self.failures:
            logger.warning("%s works again after %d failures in %.1f s", self.what, self.failures,
                           time.monotonic() - self.started)
        self.failures = 0


class HubInbox:
    """Calls handed from other threads to the event loop's thread, woken through a pipe.

    Every call runs inside ``try``: an exception is logged, never raised into the hub."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self._calls: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        hub.add_reader(self._read, self._drain)
        self.closed = False

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        self._calls.append((fn, args))
        with contextlib.suppress(OSError):  # the pipe is full (the hub drains it) or closed
            os.write(self._write, b"\0")

    def _drain(self, *_: Any) -> None:
        try:
            while os.read(self._read, 4096):
                pass
        except (BlockingIOError, OSError):
            pass
        while self._calls:
            fn, args = self._calls.popleft()
            try:
                fn(*args)
            except Exception:
                logger.exception("error handling %s in the worker's event loop (the worker goes on)",
                                 getattr(fn, "__name__", fn))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):  # the hub may already be gone at shutdown
            self.hub.remove_reader(self._read)
        self._drain()
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)


class Receiver(threading.Thread):
    """Receives from one queue while ``demand()`` asks for messages; hands them to ``deliver``."""

    def __init__(
        self,
        client: Any,
        queue_url: str,
        *,
        demand: Callable[[], int],
        deliver: Callable[[list[dict[str, Any]]], None],
        release: Callable[[list[dict[str, Any]]], None],
        wait_time_seconds: int,
        visibility_timeout: int,
        polling_interval: float = 0.1,
        system_attributes: list[str] | None = None,
        fifo: bool = True,
        backoff_base: float = 0.2,
        backoff_cap: float = 20.0,
    ) -> None:
        super().__init__(name=f"actionrunner-receiver-{queue_url.rsplit('/', 1)[-1]}", daemon=True)
        self.client, self.queue_url = client, queue_url
        self.demand, self.deliver, self.release = demand, deliver, release
        self.wait_time_seconds, self.visibility_timeout = wait_time_seconds, visibility_timeout
        self.polling_interval = polling_interval
        self.system_attributes = system_attributes or ["All"]
        self.fifo = fifo
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.episode = Episode(f"ReceiveMessage from {queue_url.rsplit('/', 1)[-1]}")
        self._wake = threading.Event()
        self._idle = False  #: waiting for room (only then does wake() need to signal)
        self._stopping = threading.Event()
        #: Requests made and messages received (for the benchmarks and tests).
        self.requests = 0
        self.received = 0

    def wake(self) -> None:
        """Room was freed: look at the demand now. A no-op unless the loop waits for room and
        there is now some to ask for: below the watermark most acks free room that ``demand``
        does not ask for yet, and waking the thread for each would only cost a thread switch."""
        if self._idle and self._wanted():
            self._wake.set()

    def _wanted(self) -> bool:
        try:
            return self.demand() > 0
        except Exception:  # the loop logs it; let it look
            return True

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def _pause(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def run(self) -> None:
        attempt_id: str | None = None
        count = 0
        while not self._stopping.is_set():
            try:
                wanted = self.demand()
            except Exception:
                logger.exception("receiver: cannot tell how many messages to ask for")
                wanted = 0
            if wanted <= 0 and attempt_id is None:
                self._idle = True
                if self.demand() <= 0:  # room freed between the two looks is not missed
                    self._wake.wait(0.25)
                self._idle = False
                self._wake.clear()
                continue
            if attempt_id is None:  # a new receive (a retried one keeps its id and its count)
                attempt_id, count = uuid.uuid4().hex, min(C.SQS_MAX_BATCH, wanted)
            params: dict[str, Any] = {
                "QueueUrl": self.queue_url, "MaxNumberOfMessages": count,
                "WaitTimeSeconds": self.wait_time_seconds,
                "VisibilityTimeout": self.visibility_timeout,
                "MessageSystemAttributeNames": self.system_attributes,
                "MessageAttributeNames": ["All"],
            }
            if self.fifo:
                params["ReceiveRequestAttemptId"] = attempt_id
            try:
                self.requests += 1
                response = self.client.receive_message(**params)
            except Exception as exc:
                self._pause(backoff(self.episode.failed(exc), base=self.backoff_base,
                                    cap=self.backoff_cap))
                continue
            self.episode.succeeded()
            attempt_id = None
            messages = [m for m in (response.get("Messages") or []) if isinstance(m, dict)
                        and m.get("ReceiptHandle")]
            if self._stopping.is_set():  # (stopped during the receive)
                if messages:
                    self.release(messages)
                break
            if messages:
                self.received += len(messages)
                try:
                    self.deliver(messages)
                except Exception:  # never lose them: they come back after the visibility timeout
                    logger.exception("receiver: could not hand %d messages over", len(messages))
            elif self.wait_time_seconds == 0 and self.polling_interval:
                self._pause(self.polling_interval)


__all__ = ["Episode", "HubInbox", "Receiver", "backoff", "error_code"]
