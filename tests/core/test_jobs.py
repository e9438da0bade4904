"""Driving a job on the calling thread: every event reaches the caller in order, then the result."""

from __future__ import annotations

import pytest

from desktop_dpo.core.errors import JobCancelled
from desktop_dpo.core.jobs import CancelToken, Progress, drive, run_job


def counting(n: int, cancel: CancelToken | None = None):
    for i in range(n):
        if cancel is not None:
            cancel.raise_if_cancelled()
        yield Progress(i, n, f"step {i}")
    return f"counted {n}"


def test_drive_hands_each_event_over_in_order_and_returns_the_result():
    seen = []
    assert drive(counting(3), seen.append) == "counted 3"
    assert [e.done for e in seen] == [0, 1, 2]
    assert run_job(counting(3)) == ("counted 3", seen)


def test_a_handler_that_stops_the_job_ends_it_with_job_cancelled():
    token = CancelToken()
    seen = []

    def stop_after_first(event):
        seen.append(event)
        token.cancel()

    with pytest.raises(JobCancelled):
        drive(counting(5, token), stop_after_first)
    assert len(seen) == 1
