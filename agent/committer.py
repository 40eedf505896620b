"""The frame loop's slow disk work on a thread of its own: closing and committing clips, and
sealing snapshots and events, each of which ends in several fsyncs (decision 22). Jobs run
one at a time, in the order they were given, so a clip is committed before the event that
names it."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

DEPTH = 4  # jobs waiting at most; then the frame loop waits for room


class Committer:
    """Runs jobs in order on the ``commit`` thread, started on the first job.

    At most ``depth`` jobs wait: a disk that cannot keep up then slows the frame loop instead
    of piling up pictures held for snapshots. ``drain()`` waits until every job given so far
    has run. A job that raises is logged and the next one runs.
    """

    def __init__(self, depth: int = DEPTH) -> None:
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=depth)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, job: Callable[[], None]) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="commit",
                                                daemon=True)
                self._thread.start()
        self._jobs.put(job)

    def drain(self) -> None:
        """Wait until every job submitted so far has run."""
        self._jobs.join()

    def close(self, timeout: float | None = None) -> int:
        """Run what is queued, then stop the thread. Waits at most ``timeout`` seconds (None:
        for as long as it takes) and returns how many jobs had not finished by then: 0 unless
        the disk stopped answering, and those jobs' clips, snapshots or events are not
        stored."""
        with self._start_lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return 0
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            self._jobs.put(None, timeout=timeout)
        except queue.Full:
            return self._jobs.unfinished_tasks
        thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        # the queue counts every job not yet done, and the stop marker after them
        return max(0, self._jobs.unfinished_tasks - 1) if thread.is_alive() else 0

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                job()
            except BaseException:  # one failed job must not stop the commits after it
                log.exception("commit: a background job failed")
            finally:
                # Let go of the job before waiting for the next: a snapshot job holds its
                # frame, and with it a decoder or camera buffer (3 MB at 1080p).
                job = None
                self._jobs.task_done()
