"""One scheduler call per poll interval for all of an operator's jobs.

The launcher polls each step's `get_status` from 50 ms, backing off to the operator's `poll_interval`
(`step_operators/polling.py`), and the steps of a run wait in threads of their own: asking the scheduler once per
job per poll would put N queue queries per interval on the cluster's controller (which admins of shared clusters
watch). A `JobPoller` answers every job from one shared answer, refreshed by one `query` of all the jobs it follows
at most once per interval, and on the launcher's back-off schedule while a job is new: a job that ends within a
second is noticed as soon as a bare `sbatch` + poll loop would notice it, not up to an interval later.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from conveyor.step_operators.batch.states import QueueEntry
from conveyor.step_operators.polling import poll_gap_at

__all__ = ["ANSWER_SLACK", "JobPoller"]

#: while a job is new, an answer serves this share of the launcher's poll gap at the time it was asked: a poll
#: that comes its gap after the last (plus the query's own time) always finds it due
ANSWER_SLACK = 0.8


class JobPoller:
    """The queue's last answer about every job followed, shared by the threads that poll them (thread-safe).

    A job asked about for the first time is followed from then on, and the queue is asked at once (the last answer
    did not cover it): jobs submitted together are covered by one call, as every caller adds its job before
    waiting for the one asking. Otherwise the last answer serves `interval()` seconds, or less while a job is new:
    as long as the launcher's back-off gap had grown when it was asked, counted from when the newest job was first
    asked about (`_lifetime`). So a new job costs a few more calls in its first second (about seven in all with
    poll_interval 0.5 s, where one per interval makes two or three), shared by the jobs new at the time. A job the
    queue no longer lists has left it: it is answered None without asking again, until `forget`.
    """

    def __init__(self, query: Callable[[Sequence[str]], dict[str, QueueEntry]], interval: Callable[[], float],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._query = query
        self._interval = interval
        self._clock = clock
        self._asking = threading.Lock()  # held while asking: concurrent callers wait for that answer
        self._ids = threading.Lock()  # guards the two sets below, never held while asking
        self._followed: set[str] = set()
        self._gone: set[str] = set()
        self._answer: dict[str, QueueEntry] = {}
        self._asked: frozenset[str] = frozenset()
        self._asked_at = float("-inf")
        self._newest_at = float("-inf")  # when a job was last asked about for the first time

    @property
    def followed(self) -> frozenset[str]:
        """The jobs the next call will ask about."""
        with self._ids:
            return frozenset(self._followed)

    def state(self, job_id: str, fresh: bool = False) -> QueueEntry | None:
        """The job as the queue lists it, None once it no longer does; `fresh` asks the queue now (after a
        cancel, waiting for the job to leave the queue)."""
        with self._ids:
            if job_id not in self._gone and job_id not in self._followed:
                self._followed.add(job_id)
                self._newest_at = self._clock()
        with self._asking:
            covered = job_id in self._asked or job_id in self._gone
            if fresh or not covered or self._clock() - self._asked_at >= self._lifetime():
                with self._ids:
                    ids = sorted(self._followed | ({job_id} if fresh else set()))
                asked_at = self._clock()
                answer = self._query(ids) if ids else {}
                with self._ids:
                    left = set(ids).difference(answer)
                    self._gone |= left
                    self._followed -= left
                self._answer, self._asked, self._asked_at = answer, frozenset(ids), asked_at
            return self._answer.get(job_id)

    def _lifetime(self) -> float:
        """How long the last answer serves: the launcher's poll gap when it was asked (it backs off from when the
        newest job was first asked about), less a fifth for the callers' own time between polls; at most an
        interval."""
        interval = self._interval()
        gap = poll_gap_at(self._asked_at - self._newest_at, interval)
        return interval if gap >= interval else ANSWER_SLACK * gap

    def forget(self, job_id: str) -> None:
        """Stop following a job (its step is over), or follow it afresh when asked next (the queue missed it)."""
        with self._ids:
            self._followed.discard(job_id)
            self._gone.discard(job_id)
