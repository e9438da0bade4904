"""Driving a job on the calling thread: every event reaches the caller in order, then the result."""

from __future__ import annotations

import pytest

from desktop_dpo.core.errors import JobCancelled
from desktop_dpo.core.jobs import CancelToken, Log, Progress, drive, recorded, relayed, run_job


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


def cleaning_up(cancel: CancelToken, record: list[str], *, notices: bool):
    """Counts to 10; on a stop, yields a last event from its clean-up, records it once, re-raises."""
    try:
        for i in range(10):
            if notices:
                cancel.raise_if_cancelled()
            yield Progress(i, 10)
        return "done"
    except JobCancelled:
        record.append("clean-up")
        yield Log("checkpointed")
        raise
    except GeneratorExit:
        record.append("closed")
        raise
    finally:
        record.append("finally")


@pytest.mark.parametrize("notices", [True, False], ids=["job-checks-token", "job-ignores-token"])
def test_a_set_token_stops_the_job_with_job_cancelled_whether_it_checks_the_token_or_not(notices):
    token = CancelToken()
    record: list[str] = []
    seen: list[object] = []

    def stop_at_the_second_event(event):
        seen.append(event)
        if len(seen) == 2:
            token.cancel()

    with pytest.raises(JobCancelled, match="Stopped as you asked"):
        drive(cleaning_up(token, record, notices=notices), stop_at_the_second_event, token)
    # The same clean-up runs once either way, and the event it yields still reaches the caller; no
    # GeneratorExit is involved in a stop.
    assert record == ["clean-up", "finally"]
    assert [type(e).__name__ for e in seen] == ["Progress", "Progress", "Log"]
    assert seen[-1] == Log("checkpointed")


def test_the_token_is_thrown_in_once_even_while_the_clean_up_yields():
    token = CancelToken()
    token.cancel()  # set before the first event: the job runs to its first yield, then stops there

    def clean_up_yields_twice():
        try:
            yield Progress(0, 1)
        except JobCancelled:
            yield Log("saving")
            yield Log("saved")
            return "stopped cleanly"

    seen: list[object] = []
    assert drive(clean_up_yields_twice(), seen.append, token) == "stopped cleanly"
    assert seen == [Progress(0, 1), Log("saving"), Log("saved")]


def test_a_handler_that_raises_abandons_the_job_at_once():
    record: list[str] = []

    def broken_handler(_event):
        raise RuntimeError("the display went away")

    with pytest.raises(RuntimeError, match="display went away"):
        drive(cleaning_up(CancelToken(), record, notices=True), broken_handler, CancelToken())
    assert record == ["closed", "finally"]  # closed now, in this thread, not at garbage collection


def test_a_recorded_job_records_each_event_before_the_driver_sees_it_and_passes_a_stop_on():
    token = CancelToken()
    record: list[str] = []
    rows: list[object] = []  # what the recording wrote, in order
    seen: list[tuple[object, int]] = []  # each event the driver saw, with the rows written by then

    def stop_at_the_second_event(event):
        seen.append((event, len(rows)))
        if len(seen) == 2:
            token.cancel()

    job = recorded(cleaning_up(token, record, notices=False), rows.append)
    with pytest.raises(JobCancelled):
        drive(job, stop_at_the_second_event, token)
    # The stop reached the inner job (its clean-up ran once, not a close), and the event of its clean-up was
    # recorded like the others, each before the driver saw it.
    assert record == ["clean-up", "finally"]
    assert rows == [Progress(0, 10), Progress(1, 10), Log("checkpointed")]
    assert [count for _, count in seen] == [1, 2, 3]
    assert drive(recorded(counting(2), rows.append), lambda event: None) == "counted 2"  # and the result


def test_closing_a_recorded_job_closes_the_job_it_records():
    record: list[str] = []
    job = recorded(cleaning_up(CancelToken(), record, notices=True), lambda event: None)
    next(job)
    job.close()
    assert record == ["closed", "finally"]


def test_a_relayed_job_passes_changed_events_drops_none_and_a_stop_still_reaches_it():
    token = CancelToken()
    record: list[str] = []
    seen: list[object] = []

    def only_even_steps_and_lines(event):
        if isinstance(event, Progress):
            return None if event.done % 2 else Log(f"step {event.done}")
        return Log(event.message.upper())

    def stop_at_the_second_seen(event):
        seen.append(event)
        if len(seen) == 2:
            token.cancel()

    with pytest.raises(JobCancelled):
        drive(
            relayed(cleaning_up(token, record, notices=False), only_even_steps_and_lines),
            stop_at_the_second_seen,
            token,
        )
    # Progress 1 was dropped, so the stop came at Progress 2; the inner job's clean-up ran and its event
    # was changed like the others.
    assert seen == [Log("step 0"), Log("step 2"), Log("CHECKPOINTED")]
    assert record == ["clean-up", "finally"]
    assert drive(relayed(counting(3), lambda event: None), lambda event: None) == "counted 3"  # the result


def test_closing_a_relayed_job_closes_the_job_it_relays():
    record: list[str] = []
    job = relayed(cleaning_up(CancelToken(), record, notices=True), lambda event: event)
    next(job)
    job.close()
    assert record == ["closed", "finally"]
