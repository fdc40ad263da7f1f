"""Batches made ahead on one background thread, so the host's reading of step s+1's batch and
its transfer to the devices overlap the devices' work on step s (and the log step's wait on them).

A batch is a pure function of its step, so making it early changes nothing the step sees: a
resumed run stays bit-exact. One thread makes the batches in step order; the consumer gets them
in that order, then any error the producer raised, at the step it failed on.

    with Prefetcher(batch_at, range(first, end)) as batches:
        for step in range(first, end):
            state = train_step(state, next(batches))
"""

from __future__ import annotations

import collections
import threading
from typing import Callable, Generic, Iterable, TypeVar

Batch = TypeVar("Batch")

# Batches ready ahead of the step being run. Two keep the device fed across a log step's sync
# (one for the step dispatched right after it, one being made); more only hold device memory.
DEFAULT_DEPTH = 2


class Prefetcher(Generic[Batch]):
    """Iterator over `produce(step)` for each step of `steps`, made up to `depth` steps ahead.

    close() (or leaving the `with` block) stops the thread and joins it, also when the batches
    are not all taken: a stop signal, an error or a break in the loop leaves no thread behind.
    """

    def __init__(self, produce: Callable[[int], Batch], steps: Iterable[int], depth: int = DEFAULT_DEPTH):
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self._produce, self._steps, self._depth = produce, steps, depth
        self._ready: collections.deque[Batch] = collections.deque()
        self._changed = threading.Condition()  # guards every field below; notified on each change
        self._closed = False
        self._finished = False  # the producer has returned: all steps made, failed, or closed
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._make_batches, name="batch-prefetch", daemon=True)
        self._thread.start()

    def _make_batches(self) -> None:
        try:
            for step in self._steps:
                with self._changed:
                    self._changed.wait_for(lambda: self._closed or len(self._ready) < self._depth)
                    if self._closed:
                        return
                batch = self._produce(step)  # outside the lock: the consumer takes ready batches meanwhile
                with self._changed:
                    self._ready.append(batch)
                    self._changed.notify_all()
        except BaseException as error:  # noqa: BLE001 — handed to the consumer, raised there
            with self._changed:
                self._error = error
        finally:
            with self._changed:
                self._finished = True
                self._changed.notify_all()

    def __iter__(self) -> Prefetcher[Batch]:
        return self

    def __next__(self) -> Batch:
        with self._changed:
            self._changed.wait_for(lambda: self._ready or self._finished or self._closed)
            if self._ready:
                batch = self._ready.popleft()
                self._changed.notify_all()  # room for the producer
                return batch
            if self._error is not None:
                raise self._error
            raise StopIteration

    def close(self) -> None:
        """Stop making batches and join the thread; it finishes at most the batch it is making."""
        with self._changed:
            self._closed = True
            self._ready.clear()  # drop the device buffers now, not when the Prefetcher is collected
            self._changed.notify_all()
        self._thread.join()

    def __enter__(self) -> Prefetcher[Batch]:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
