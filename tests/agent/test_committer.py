"""The commit thread (agent/committer.py): jobs in order, and nothing of a job kept after it."""

from __future__ import annotations

import gc
import threading
import time
import weakref

from doorstep.agent.committer import Committer


class Picture:
    """Stands in for a frame a snapshot job holds (a decoder or camera buffer)."""


def test_jobs_run_in_order_and_a_failing_job_does_not_stop_the_next() -> None:
    done: list[int] = []
    committer = Committer()

    def fail() -> None:
        raise OSError("disk gone")

    for job in (lambda: done.append(1), fail, lambda: done.append(2)):
        committer.submit(job)
    committer.drain()
    committer.close()
    assert done == [1, 2]


def test_a_finished_job_lets_go_of_what_it_held() -> None:
    """The commit thread waits for the next job without keeping the last one: a snapshot
    job's frame (3 MB at 1080p) is freed as soon as the job has run, not when, minutes later,
    another job comes."""
    gc.disable()  # the frame must be freed by its reference count alone, at once
    try:
        committer = Committer()
        picture = Picture()
        held = weakref.ref(picture)
        seen: list[Picture] = []
        committer.submit(lambda p=picture: seen.append(p))
        del picture
        committer.drain()
        seen.clear()
        assert held() is None, "the commit thread still holds the last job's frame"
        committer.close()
    finally:
        gc.enable()


def test_close_gives_up_on_a_disk_that_no_longer_answers() -> None:
    """A job stuck in the disk must not hold shutdown: close() waits its timeout, then says how
    many jobs did not get done (the stuck one and the one behind it)."""
    stuck = threading.Event()
    done: list[str] = []
    committer = Committer()

    def write_to_a_dead_disk() -> None:
        stuck.wait()

    committer.submit(write_to_a_dead_disk)
    committer.submit(lambda: done.append("behind"))
    started = time.monotonic()
    assert committer.close(timeout=0.3) == 2
    assert time.monotonic() - started < 5
    assert done == []
    stuck.set()  # the disk answers again: the thread finishes what it had


def test_close_without_trouble_reports_nothing_lost() -> None:
    done: list[int] = []
    committer = Committer()
    for i in range(3):
        committer.submit(lambda i=i: done.append(i))
    assert committer.close(timeout=10) == 0
    assert done == [0, 1, 2]
