"""Dynamic batching: the images of concurrent requests answered by one forward pass.

`Batcher.submit` puts (image, params, future) on a queue; one loop takes the first waiting image, then gathers more
for at most ``max_wait_ms`` or until ``max_batch`` (and no longer than other requests are on their way: read or
decoded while it waits), groups them by their parameters (`Inference.run` takes one
``top``/``score_threshold`` per call) and runs ONE `Inference.run` per group in the model's single worker thread
(the event loop never runs the model; torch's own thread count is left as it is). Each future gets its image's
answer. A request whose future was cancelled (its caller timed out: 504) is dropped before the forward pass, and a
result that comes after it is discarded.

The queue is bounded: `submit` refuses (503, ``Retry-After: 1``) when ``queue`` requests already wait for the
model (queued or being gathered; not those in the running forward pass).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

from convkit.serve.limits import HTTPError

__all__ = ["Batcher"]


@dataclass
class _Item:
    image: object
    params: tuple
    future: asyncio.Future


@dataclass
class Stats:
    """What /stats reports: images answered, forward passes, the largest batch, refused and late requests."""

    requests: int = 0
    batches: int = 0
    largest_batch: int = 0
    rejected: int = 0
    timeouts: int = 0
    dropped: int = 0
    sizes: dict = field(default_factory=dict)  # batch size -> forward passes of that size

    def to_dict(self) -> dict:
        return {"requests": self.requests, "batches": self.batches, "largest_batch": self.largest_batch,
                "rejected": self.rejected, "timeouts": self.timeouts, "dropped": self.dropped,
                "batch_sizes": {str(k): v for k, v in sorted(self.sizes.items())}}


class Batcher:
    """Gathers images into batches for `run(images, **dict(params))`, run in `executor` (one thread).

    Args:
        run: called as ``run(list_of_images, **dict(params))`` -> one answer per image (`Inference.run`).
        executor: where `run` runs (a ThreadPoolExecutor of one thread: the model is used by one thread only).
        max_batch, max_wait_ms, queue: see `convkit.serve.limits.Limits`.
        in_flight: the number of requests the server is handling (reading, decoding, waiting); when no more are
            than those gathered, the batch goes at once instead of waiting out ``max_wait_ms`` (a lone client
            pays no wait).
    """

    def __init__(self, run: Callable, executor: Executor, max_batch: int, max_wait_ms: float, queue: int,
                 in_flight: Callable[[], int] | None = None):
        self.run, self.executor, self.in_flight = run, executor, in_flight
        self.max_batch, self.max_wait, self.capacity = max_batch, max_wait_ms / 1000, queue
        self.queue: asyncio.Queue[_Item] = asyncio.Queue()
        self.waiting = 0  # submitted and not yet taken into a forward pass (queued or being gathered)
        self.stats = Stats()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def submit(self, images: list, params: dict) -> list[asyncio.Future]:
        """Queues `images` (all of one request) with `params`; one future per image.

        Raises:
            HTTPError: 503 with ``Retry-After: 1`` when the queue has no room for them all.
        """
        if self.waiting + len(images) > self.capacity:
            self.stats.rejected += 1
            raise HTTPError(503, f"the server is busy: {self.waiting} requests wait for the model (--queue "
                            f"{self.capacity}); retry later", {"Retry-After": "1"})
        loop = asyncio.get_running_loop()
        key = tuple(sorted(params.items()))
        futures = []
        for image in images:
            future = loop.create_future()
            self.queue.put_nowait(_Item(image, key, future))
            futures.append(future)
        self.waiting += len(images)
        return futures

    async def _gather(self) -> list[_Item]:
        batch = [await self.queue.get()]
        loop = asyncio.get_running_loop()
        end = loop.time() + self.max_wait
        while len(batch) < self.max_batch:
            try:
                batch.append(self.queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = end - loop.time()
            if remaining <= 0 or (self.in_flight is not None and self.in_flight() <= len(batch)):
                break  # out of time, or no other request is being read or decoded: none could join
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            self.waiting -= len(batch)
            live = [item for item in batch if not item.future.done()]  # the callers that gave up are dropped
            self.stats.dropped += len(batch) - len(live)
            groups: dict[tuple, list[_Item]] = {}
            for item in live:
                groups.setdefault(item.params, []).append(item)
            for key, items in groups.items():
                try:
                    answers = await loop.run_in_executor(
                        self.executor, lambda items=items, key=key: self.run([i.image for i in items], **dict(key)))
                except asyncio.CancelledError:
                    for item in items:
                        item.future.cancel()
                    raise
                except Exception as err:  # a bug in the model code: each caller gets it (500), the loop goes on
                    for item in items:
                        if not item.future.done():
                            item.future.set_exception(err)
                    continue
                stats = self.stats
                stats.requests += len(items)
                stats.batches += 1
                stats.largest_batch = max(stats.largest_batch, len(items))
                stats.sizes[len(items)] = stats.sizes.get(len(items), 0) + 1
                for item, answer in zip(items, answers):
                    if not item.future.done():  # a caller that timed out meanwhile: its answer is dropped
                        item.future.set_result(answer)
