"""How many queue batches a poller invokes at once: ``scalingConfig.maximumConcurrency`` at most, fewer while the
function throttles (the SQS + reserved-concurrency trap).

Lambda's SQS poller "scales down" when the function is throttled (AWS, "Configuring scaling behavior for SQS event
source mappings": with a maximum concurrency above the function's reserved concurrency the extra invocations are
throttled; Lambda backs off). A poller that kept ``maximumConcurrency`` batches in flight against a function
reserved lower would be answered 429 over and over (a throttle storm), and every batch it holds while backing off
ages towards its visibility timeout, comes back with a higher receive count and ends in the queue's DLQ for
throttling alone.

:class:`AdaptiveLimit` is an additive-increase / multiplicative-decrease limit on batch slots:

- a 429 lowers the limit to one less than the batches in flight (never below 1): those that did get through are
  what the function can take;
- the throttled batch gives its slot back and waits for a free one under the new limit before it invokes again, so
  it retries when another invocation finished instead of on a blind timer (it keeps its messages: a throttle is
  never a failed receive);
- every ``grow_after`` successful invocations in a row raise the limit by one, up to the maximum (the function's
  concurrency may have grown: one probe per ``grow_after`` successes bounds the throttles it costs).
"""

from __future__ import annotations

import asyncio

GROW_AFTER_SUCCESSES = 10  # successful invocations in a row before one more batch may run at once


class AdaptiveLimit:
    """Batch slots: ``acquire`` before reading a batch, ``release`` when it is settled; ``maximum`` ≥ 1."""

    def __init__(self, maximum: int, grow_after: int = GROW_AFTER_SUCCESSES) -> None:
        self.maximum = maximum
        self.limit = maximum  # slots usable now: 1 ≤ limit ≤ maximum
        self.in_use = 0
        self.grow_after = grow_after
        self._successes = 0
        self._changed = asyncio.Event()

    async def acquire(self) -> None:
        """Wait until fewer than ``limit`` slots are in use, then take one."""
        while self.in_use >= self.limit:
            self._changed.clear()
            await self._changed.wait()
        self.in_use += 1

    def release(self) -> None:
        """Give a slot back (the batch is settled, or was never read)."""
        self.in_use -= 1
        self._changed.set()

    def succeeded(self) -> None:
        """An invocation reached the function: count towards growing the limit back."""
        self._successes += 1
        if self._successes >= self.grow_after and self.limit < self.maximum:
            self.limit += 1
            self._successes = 0
            self._changed.set()

    async def throttled(self) -> None:
        """The caller (holding a slot) was answered 429: shrink, give the slot back, wait for one under the new limit.

        Returns holding a slot again."""
        self._successes = 0
        self.limit = max(1, min(self.limit, self.in_use - 1))
        self.release()
        try:
            await self.acquire()
        except BaseException:
            self.in_use += 1  # cancelled while waiting: the caller still releases the slot it thinks it holds
            raise
