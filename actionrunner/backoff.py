"""The one backoff of ActionRunner: exponential, capped, jittered.

Every wait after a failure — a retried action (:meth:`actionrunner.settle.Policy.backoff`), a
failed receive, delete or dead letter (:mod:`actionrunner.sqs.receiver`,
:mod:`actionrunner.sqs.housekeeper`), a refused batch entry, a throttled state request
(:mod:`actionrunner.state.throttling`) — is ``base * 2**(failures - 1)``, capped at ``cap``, then
jittered: ``"half"`` draws from the upper half (``[delay/2, delay]``: never much shorter than
asked, still spread), ``"full"`` from ``[0, delay]`` (AWS's "full jitter", for contended writes),
``"none"`` keeps the delay. A wait that does not grow — a poll, a "come back later" hint — is
spread by :func:`jittered` (``delay`` ± half of it), so that a fleet does not come back at once::

    >>> backoff(3, base=1.0, cap=60.0, jitter="none")
    4.0
    >>> 2.0 <= backoff(3, base=1.0, cap=60.0) <= 4.0
    True
    >>> 2.0 <= jittered(4.0) <= 6.0
    True
"""

from __future__ import annotations

import random
from typing import Literal

Jitter = Literal["half", "full", "none"]


def backoff(failures: int, *, base: float = 0.2, cap: float = 20.0, jitter: Jitter = "half") -> float:
    """Seconds to wait after ``failures`` failures in a row (1: the first)."""
    delay = min(cap, base * 2 ** max(0, failures - 1))
    if jitter == "none":
        return float(delay)
    low = delay / 2 if jitter == "half" else 0.0
    return float(random.uniform(low, delay))


def jittered(delay: float, *, spread: float = 0.5) -> float:
    """``delay`` spread by ± ``spread`` of it (0.5: between half and one and a half times)."""
    return float(random.uniform(delay * (1 - spread), delay * (1 + spread)))


__all__ = ["Jitter", "backoff", "jittered"]
