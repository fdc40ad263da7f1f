"""The batch prefetcher: step order, the producer's errors raised in the consumer, a clean close."""

import threading
import time

import pytest

from bigmodel.prefetch import Prefetcher


def test_batches_come_in_step_order_and_at_most_depth_ahead():
    made = []

    def produce(step):
        made.append(step)
        time.sleep(0.001 * (step % 3))  # uneven production times must not reorder anything
        return step * 10

    with Prefetcher(produce, range(5, 25), depth=2) as batches:
        first = next(batches)
        time.sleep(0.05)  # let the producer run as far ahead as it may
        assert max(made) == 5 + 2  # the taken step, then two ready; none further
        assert [first, *batches] == [step * 10 for step in range(5, 25)]
    assert made == list(range(5, 25))


def test_an_error_in_the_producer_is_raised_in_the_consumer_after_the_good_batches():
    def produce(step):
        if step == 3:
            raise OSError("disk went away")
        return step

    with Prefetcher(produce, range(10)) as batches:
        assert [next(batches) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(OSError, match="disk went away"):
            next(batches)


def test_close_joins_the_thread_when_batches_are_left_untaken():
    before = threading.active_count()
    started = threading.Event()

    def produce(step):
        started.set()
        return step

    batches = Prefetcher(produce, range(1_000_000), depth=2)
    assert next(batches) == 0
    started.wait(5)
    batches.close()  # the producer is blocked on a full queue; close must wake and join it
    assert not any(thread.name == "batch-prefetch" for thread in threading.enumerate())
    assert threading.active_count() == before
    with pytest.raises(StopIteration):
        next(batches)


def test_leaving_the_block_on_an_error_stops_the_thread():
    with pytest.raises(RuntimeError, match="step failed"):
        with Prefetcher(lambda step: step, range(1_000_000)) as batches:
            next(batches)
            raise RuntimeError("step failed")
    assert not any(thread.name == "batch-prefetch" for thread in threading.enumerate())
