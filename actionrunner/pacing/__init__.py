"""Adaptive pacing: write as fast as the downstream (a DynamoDB stream's consumer) keeps up.

* :mod:`.controller` — the rule, a pure function: signals (throttling, the consumer's watermark,
  the writer's own backlog) in, a rate between a floor and a ceiling out;
* :mod:`.watermark` — the consumer's progress in the state table (published, read cached);
* :mod:`.shared` — the rate every worker shares: the state table's bucket, with a moving rate;
* :mod:`.pacer` — :class:`AdaptivePacer`, the three together (what writers call).

See docs/pacing.md.
"""

from __future__ import annotations

from .controller import Decision, PaceController, PaceLimits, Signals, Watermark
from .pacer import AdaptivePacer, PaceStats, iterator_age
from .watermark import WatermarkPublisher, WatermarkReader, WatermarkStore

__all__ = ["AdaptivePacer", "Decision", "PaceController", "PaceLimits", "PaceStats", "Signals",
           "Watermark", "WatermarkPublisher", "WatermarkReader", "WatermarkStore", "iterator_age"]
