"""Dynamic batching: concurrent requests for one model and truncation share one forward pass.

A request becomes a ``Job``: its own latents and labels, drawn from its own seed before it is queued, so its images
do not depend on what it is batched with. One worker thread (never the event loop) takes the oldest job, waits up to
``max_wait_ms`` for more jobs with the same key (model, truncation, kind of input) until ``max_batch`` images are
collected, runs them as one forward and hands each job its rows. The queue holds at most ``queue_size`` jobs; a
full queue is ``QueueFull`` (the app answers 429 with Retry-After). A job that times out is dropped from the queue.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import torch


class QueueFull(Exception):
    """The queue holds ``queue_size`` jobs; ``retry_after`` is an estimate in seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"the server is busy (queue full): retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass(eq=False)
class Job:
    """One request's inputs: ``latents`` [n, ...] and ``labels`` ([n], [n, n_classes] or None) for model ``key``."""

    key: Hashable  # jobs with equal keys can share a forward
    latents: torch.Tensor
    labels: torch.Tensor | None
    submitted: float = field(default_factory=time.monotonic)
    future: asyncio.Future | None = None
    loop: asyncio.AbstractEventLoop | None = None

    @property
    def n(self) -> int:
        return len(self.latents)

    def deliver(self, result=None, error: BaseException | None = None) -> None:
        """Set the job's future from the worker thread (a job whose request has gone is skipped)."""

        def settle():
            if not self.future.done():
                self.future.set_exception(error) if error is not None else self.future.set_result(result)

        try:
            self.loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the request's event loop is closed
            pass


# forward(key, latents, labels) -> images [N, C, H, W] uint8 on the CPU
Forward = Callable[[Hashable, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


class Batcher:
    """The queue and its worker thread. ``forward`` runs one batch (at most ``max_batch`` images, except a single job
    larger than that, which runs alone in slices of ``max_batch``)."""

    def __init__(self, forward: Forward, max_batch: int = 100, max_wait_ms: float = 10.0, queue_size: int = 64):
        if max_batch < 1 or queue_size < 1 or max_wait_ms < 0:
            raise ValueError("max_batch and queue_size must be >= 1 and max_wait_ms >= 0")
        self.forward, self.max_batch, self.max_wait = forward, max_batch, max_wait_ms / 1000
        self.queue_size = queue_size
        self._jobs: deque[Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.forwards = 0  # forward passes run
        self.images = 0  # images generated
        self._seconds_per_forward = 0.0  # running average, for Retry-After

    # ------------------------------------------------------------------ the event loop's side
    async def run(self, job: Job, timeout: float | None = None) -> torch.Tensor:
        """Queue ``job`` and wait for its images (uint8 [n, C, H, W]); raises QueueFull or asyncio.TimeoutError
        (the job is then dropped from the queue if it has not started)."""
        job.loop = asyncio.get_running_loop()
        job.future = job.loop.create_future()
        self.submit(job)
        try:
            return await asyncio.wait_for(job.future, timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            self.cancel(job)
            raise

    def submit(self, job: Job) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            if len(self._jobs) >= self.queue_size:
                raise QueueFull(self.retry_after())
            self._jobs.append(job)
            self._start()
            self._cond.notify()

    def cancel(self, job: Job) -> None:
        with self._cond:
            if job in self._jobs:
                self._jobs.remove(job)
                self._cond.notify()

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained by one batch's worth (at least 1)."""
        batches = max(1, len(self._jobs) * 1.0 / max(1, self.max_batch))
        return max(1, round(self._seconds_per_forward * batches + 0.5))

    @property
    def queued(self) -> int:
        return len(self._jobs)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # ------------------------------------------------------------------ the worker thread
    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="scalegan-batcher", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        while True:
            batch = self._collect()
            if batch is None:
                return
            start = time.perf_counter()
            try:
                results = self._run(batch)
            except Exception as e:  # noqa: BLE001 - every waiting request gets the error, the worker lives on
                for job in batch:
                    job.deliver(error=e)
                continue
            seconds = time.perf_counter() - start
            self._seconds_per_forward = seconds if not self.forwards else 0.8 * self._seconds_per_forward + \
                0.2 * seconds
            for job, images in zip(batch, results):
                job.deliver(images)

    def _collect(self) -> list[Job] | None:
        """The next batch: the oldest job and the later ones with its key, once ``max_batch`` images are there or
        the oldest job has waited ``max_wait``; None when closed."""
        with self._cond:
            while True:
                while not self._jobs and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return None
                first = self._jobs[0]
                same = [j for j in self._jobs if j.key == first.key]
                remaining = first.submitted + self.max_wait - time.monotonic()
                if sum(j.n for j in same) >= self.max_batch or remaining <= 0:
                    break
                self._cond.wait(remaining)  # then look again: the oldest job may have timed out meanwhile
            batch, images = [], 0
            for job in same:
                if batch and images + job.n > self.max_batch:
                    break
                batch.append(job)
                images += job.n
            for job in batch:
                self._jobs.remove(job)
            return batch

    def _run(self, batch: list[Job]) -> list[torch.Tensor]:
        latents = torch.cat([j.latents for j in batch])
        labels = None if batch[0].labels is None else torch.cat([j.labels for j in batch])
        out = []
        for i in range(0, len(latents), self.max_batch):
            y = labels[i:i + self.max_batch] if labels is not None else None
            out.append(self.forward(batch[0].key, latents[i:i + self.max_batch], y))
            self.forwards += 1
        images = torch.cat(out)
        self.images += len(images)
        return list(images.split([j.n for j in batch]))
