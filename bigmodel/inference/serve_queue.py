"""The server's waiting line: a bounded queue of generation jobs and the one worker that runs them.

JAX is called from one thread only (a one-thread executor), one batch at a time, so the event
loop stays free to accept, validate and refuse requests while the model runs. A request that
finds `max_waiting` jobs already waiting is refused at once (`QueueFull`: the API answers 503),
never held in an unbounded backlog. The job being run does not count as waiting.

Batching: when the worker takes a job, it also takes the waiting jobs that can share its decode
(same `batch_key`) up to `max_rows` prompts, in arrival order. Only greedy jobs share: a greedy
row's tokens do not depend on its neighbours, while a sampled row's draws depend on its position
in the batch, so a sampled job runs alone and gives what `generate` gives for the same seed.
Not an `asyncio.Queue`: taking compatible jobs from the middle of the line needs a deque.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import time
from typing import Callable, Hashable

from bigmodel.inference.sampling import Sampling


class QueueFull(Exception):
    """No room: `max_waiting` jobs are already waiting."""


@dataclasses.dataclass(eq=False)
class Job:
    """One request, checked and tokenized; the worker fills `future` with its result."""

    prompts: list[str]
    encoded: list[list[int]]
    max_tokens: int
    sampling: Sampling
    seed: int
    stop: str | None
    future: asyncio.Future | None = None
    queued_at: float = dataclasses.field(default_factory=time.perf_counter)

    @property
    def batch_key(self) -> Hashable | None:
        """Jobs with equal keys may share one decode; None runs alone (sampled jobs)."""
        return (self.sampling, self.stop) if self.sampling.temperature == 0 else None


def take_batch(waiting: collections.deque, max_rows: int) -> list[Job]:
    """Remove and return the first job and the later ones that share its key, while their
    prompts fit in `max_rows` (the first job always goes: its prompts are within the limit)."""
    first = waiting.popleft()
    batch, rows = [first], len(first.prompts)
    if first.batch_key is not None:
        for job in list(waiting):
            if job.batch_key == first.batch_key and rows + len(job.prompts) <= max_rows:
                waiting.remove(job)
                batch.append(job)
                rows += len(job.prompts)
    return batch


class Worker:
    """Owns the queue and the model thread. `run_batch(jobs) -> results` (one per job) runs in
    the model thread; `serve_forever` is a task on the server's event loop."""

    def __init__(self, run_batch: Callable[[list[Job]], list[dict]], max_waiting: int, max_rows: int):
        self.run_batch, self.max_waiting, self.max_rows = run_batch, max_waiting, max_rows
        self.waiting: collections.deque[Job] = collections.deque()
        self.arrived = asyncio.Event()
        self.model_thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self.running = 0  # jobs in the batch being run

    def submit(self, job: Job) -> asyncio.Future:
        """Queue `job` and return the future of its result; QueueFull if the line is full."""
        if len(self.waiting) >= self.max_waiting:
            raise QueueFull(f"{len(self.waiting)} requests are waiting (--max_queue {self.max_waiting})")
        job.future = asyncio.get_running_loop().create_future()
        self.waiting.append(job)
        self.arrived.set()
        return job.future

    async def serve_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.waiting:
                self.arrived.clear()
                await self.arrived.wait()
                continue
            batch = [job for job in take_batch(self.waiting, self.max_rows) if not job.future.done()]  # done: the client left
            if not batch:
                continue
            self.running = len(batch)
            try:
                results = await loop.run_in_executor(self.model_thread, self.run_batch, batch)
            except Exception as error:  # noqa: BLE001 — the requests fail (500), the server goes on
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(error)
            else:
                for job, result in zip(batch, results):
                    if not job.future.done():
                        job.future.set_result(result)
            finally:
                self.running = 0

    def close(self) -> None:
        """Fail what still waits (the server is stopping) and let the model thread finish."""
        while self.waiting:
            job = self.waiting.popleft()
            if not job.future.done():
                job.future.set_exception(RuntimeError("the server is shutting down"))
        self.model_thread.shutdown(wait=True)
