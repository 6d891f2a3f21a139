"""The workflow scheduler's pure planner: which RayJob to start, which to delete, when to look again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from croniter import croniter
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from mlserve.operator.settings import SettingsError, read_schedule_settings
from mlserve.operator.spec.schedule import (
    MISSED_COUNT_CAP,
    InvalidSchedule,
    JobView,
    PlanReason,
    Schedule,
    ScheduleSettings,
    duplicate_cron_runs,
    job_view,
    next_time,
    parse_schedule,
    plan,
)

T0 = datetime(2026, 1, 1, 10, 0, 30, tzinfo=UTC)  # the MLServe's creation
EVERY_MINUTE = Schedule("* * * * *", start=T0)
HOURLY = Schedule("0 * * * *", start=datetime(2026, 1, 1, 9, 30, tzinfo=UTC))
DEFAULTS = ScheduleSettings()  # history 3, deadline 10 min, recheck 30 s


def at(hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(2026, 1, 1, hour, minute, second, tzinfo=UTC)


def finished(name: str, when: datetime) -> JobView:
    return JobView(name, when, finished=True)


def running(name: str, when: datetime) -> JobView:
    return JobView(name, when, finished=False)


# --- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("* * * * *", "* * * * *"),
        ("0 3 * * *", "0 3 * * *"),
        ("  */15   * * * 1-5 ", "*/15 * * * 1-5"),
        ("@daily", "@daily"),
        ("@hourly", "@hourly"),
    ],
)
def test_valid_schedules_are_normalised(text: str, normalised: str) -> None:
    assert parse_schedule(text) == normalised


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("* * * *", "4 fields"),
        ("* * * * * *", "6 fields"),
        ("61 * * * *", "not valid"),
        ("* 25 * * *", "not valid"),
        ("@every_minute", "unknown cron macro"),
        ("tomorrow at noon x y", "not valid"),
    ],
)
def test_invalid_schedules_say_what_to_write(text: str, hint: str) -> None:
    with pytest.raises(InvalidSchedule, match=hint):
        parse_schedule(text)


def test_plan_refuses_an_invalid_schedule() -> None:
    with pytest.raises(InvalidSchedule):
        plan(Schedule("* * *", start=T0), at(10, 5), None, [], DEFAULTS)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        plan(EVERY_MINUTE, datetime(2026, 1, 1, 10, 5), None, [], DEFAULTS)


@pytest.mark.parametrize(
    "kwargs",
    [{"history_limit": -1}, {"starting_deadline": timedelta(0)}, {"busy_recheck": timedelta(0)}],
)
def test_settings_are_validated(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ScheduleSettings(**kwargs)  # type: ignore[arg-type]


# --- when to start ------------------------------------------------------------------------


def test_nothing_before_the_first_time() -> None:
    result = plan(EVERY_MINUTE, at(10, 0, 45), None, [], DEFAULTS)
    assert result.reason is PlanReason.NOT_DUE
    assert result.start is None
    assert result.next_check == at(10, 1)
    assert result.next_time == at(10, 1)
    assert result.last_scheduled is None


def test_a_time_before_the_schedule_took_effect_never_runs() -> None:
    # 10:00 is before the MLServe existed (10:00:30).
    assert plan(EVERY_MINUTE, at(10, 0, 40), None, [], DEFAULTS).start is None


def test_first_time_starts() -> None:
    result = plan(EVERY_MINUTE, at(10, 1, 2), None, [], DEFAULTS)
    assert result.reason is PlanReason.START
    assert result.start == at(10, 1)
    assert result.last_scheduled == at(10, 1)
    assert result.next_time == at(10, 2)
    assert result.next_check == at(10, 2)
    assert result.missed == 0


def test_a_time_starts_exactly_on_the_minute() -> None:
    assert plan(EVERY_MINUTE, at(10, 1), None, [], DEFAULTS).start == at(10, 1)


def test_the_recorded_time_does_not_start_again() -> None:
    result = plan(EVERY_MINUTE, at(10, 1, 40), at(10, 1), [finished("j1", at(10, 1))], DEFAULTS)
    assert result.reason is PlanReason.NOT_DUE
    assert result.start is None
    assert result.last_scheduled == at(10, 1)
    assert result.next_check == at(10, 2)


def test_an_existing_job_proves_its_time_when_the_status_write_was_lost() -> None:
    # The RayJob of 10:01 was created but status.lastScheduledTime still says 10:00.
    jobs = [running("j1", at(10, 1))]
    result = plan(EVERY_MINUTE, at(10, 1, 5), at(10, 0), jobs, DEFAULTS)
    assert result.start is None
    assert result.reason is PlanReason.NOT_DUE
    assert result.last_scheduled == at(10, 1)


def test_after_downtime_only_the_latest_missed_time_starts() -> None:
    result = plan(EVERY_MINUTE, at(10, 5, 10), at(10, 0), [], DEFAULTS)
    assert result.reason is PlanReason.CATCH_UP
    assert result.start == at(10, 5)
    assert result.missed == 4  # 10:01 .. 10:04
    assert result.last_scheduled == at(10, 5)
    assert result.next_check == at(10, 6)


def test_missed_times_beyond_the_starting_deadline_do_not_start() -> None:
    # Hourly; down from 10:00 to 13:20; the 13:00 run is 20 min late, the deadline is 10.
    result = plan(HOURLY, at(13, 20), at(10, 0), [], DEFAULTS)
    assert result.reason is PlanReason.DEADLINE_MISSED
    assert result.start is None
    assert result.missed == 3  # 11:00, 12:00, 13:00
    assert result.last_scheduled == at(13, 0)  # dropped for good, not counted again
    assert result.next_check == at(14, 0)
    again = plan(HOURLY, at(13, 21), result.last_scheduled, [], DEFAULTS)
    assert again.reason is PlanReason.NOT_DUE and again.missed == 0


def test_the_latest_missed_time_within_the_deadline_starts_once() -> None:
    late = ScheduleSettings(starting_deadline=timedelta(minutes=30))
    result = plan(HOURLY, at(13, 20), at(10, 0), [], late)
    assert result.reason is PlanReason.CATCH_UP
    assert result.start == at(13, 0)
    assert result.missed == 2  # 11:00 and 12:00 never run


def test_without_a_deadline_the_latest_time_runs_however_late() -> None:
    no_deadline = ScheduleSettings(starting_deadline=None)
    result = plan(HOURLY, at(23, 59), at(10, 0), [], no_deadline)
    assert result.start == at(23, 0)
    assert result.missed == 12


def test_missed_count_is_capped() -> None:
    long_ago = datetime(2025, 1, 1, tzinfo=UTC)
    result = plan(Schedule("* * * * *", long_ago), at(10, 0, 10), long_ago, [], DEFAULTS)
    assert result.start == at(10, 0)
    assert result.missed == MISSED_COUNT_CAP - 1


def test_clock_going_back_starts_nothing() -> None:
    result = plan(EVERY_MINUTE, at(10, 2, 30), at(10, 5), [finished("j", at(10, 5))], DEFAULTS)
    assert result.reason is PlanReason.NOT_DUE
    assert result.start is None
    assert result.last_scheduled == at(10, 5)
    assert result.next_check == at(10, 6)


def test_times_in_another_offset_are_read_as_the_same_instant() -> None:
    plus_two = timezone(timedelta(hours=2))
    result = plan(EVERY_MINUTE, datetime(2026, 1, 1, 12, 1, 5, tzinfo=plus_two), None, [], DEFAULTS)
    assert result.start == at(10, 1)
    assert result.start is not None and result.start.tzinfo is UTC


def test_macros_are_understood() -> None:
    result = plan(Schedule("@hourly", start=at(9, 30)), at(10, 0, 20), None, [], DEFAULTS)
    assert result.start == at(10, 0)
    assert result.next_time == at(11, 0)


# --- Forbid: one run at a time --------------------------------------------------------------


def test_a_running_job_holds_the_due_time_back() -> None:
    jobs = [running("j1", at(10, 1))]
    result = plan(EVERY_MINUTE, at(10, 2, 1), at(10, 1), jobs, DEFAULTS)
    assert result.reason is PlanReason.BUSY
    assert result.start is None
    assert result.running == ("j1",)
    assert result.last_scheduled == at(10, 1)  # 10:02 is not recorded: it waits
    assert result.next_time == at(10, 2)
    assert result.next_check is not None
    assert result.next_check <= at(10, 2, 31)


def test_the_waiting_time_starts_when_the_job_finishes_within_the_deadline() -> None:
    jobs = [finished("j1", at(10, 1))]
    result = plan(EVERY_MINUTE, at(10, 2, 40), at(10, 1), jobs, DEFAULTS)
    assert result.start == at(10, 2)
    assert result.reason is PlanReason.START


def test_a_job_running_past_the_deadline_drops_the_waiting_times() -> None:
    # Hourly job started at 10:00 runs until 11:30; 11:00 waited and is now too late.
    done = [finished("j10", at(10, 0))]
    result = plan(HOURLY, at(11, 30), at(10, 0), done, DEFAULTS)
    assert result.reason is PlanReason.DEADLINE_MISSED
    assert result.start is None
    assert result.missed == 1


def test_busy_recheck_never_passes_the_deadline_of_the_waiting_time() -> None:
    settings = ScheduleSettings(busy_recheck=timedelta(hours=1))
    result = plan(HOURLY, at(11, 2), at(10, 0), [running("j10", at(10, 0))], settings)
    assert result.reason is PlanReason.BUSY
    assert result.next_check == at(11, 10)


# --- history ------------------------------------------------------------------------------


def test_history_keeps_the_newest_finished_jobs_and_never_a_running_one() -> None:
    jobs = [finished(f"j{m}", at(10, m)) for m in range(1, 6)] + [running("j6", at(10, 6))]
    result = plan(EVERY_MINUTE, at(10, 6, 30), at(10, 6), jobs, DEFAULTS)
    assert result.delete == ("j1", "j2")
    assert "j6" not in result.delete


def test_history_is_trimmed_when_a_new_job_starts() -> None:
    jobs = [finished(f"j{m}", at(10, m)) for m in range(1, 5)]
    result = plan(EVERY_MINUTE, at(10, 5, 1), at(10, 4), jobs, DEFAULTS)
    assert result.start == at(10, 5)
    assert result.delete == ("j1",)


def test_history_limit_zero_deletes_every_finished_job() -> None:
    jobs = [finished("a", at(10, 1)), finished("b", at(10, 2)), running("c", at(10, 3))]
    result = plan(EVERY_MINUTE, at(10, 3, 5), at(10, 3), jobs, ScheduleSettings(history_limit=0))
    assert result.delete == ("a", "b")


# --- properties ---------------------------------------------------------------------------

EXPRESSIONS = ["* * * * *", "*/5 * * * *", "0 * * * *", "30 2 * * *", "15,45 9-17 * * 1-5"]
BASE = datetime(2026, 3, 1, tzinfo=UTC)


def cron_times(expression: str, after: datetime, until: datetime) -> list[datetime]:
    times: list[datetime] = []
    iterator = croniter(expression, after)
    while True:
        moment = iterator.get_next(datetime).astimezone(UTC)
        if moment > until:
            return times
        times.append(moment)


deadlines = st.one_of(st.none(), st.integers(1, 180).map(lambda m: timedelta(minutes=m)))


@given(
    expression=st.sampled_from(EXPRESSIONS),
    start_offset=st.integers(0, 3 * 24 * 60),
    last_offset=st.one_of(st.none(), st.integers(0, 3 * 24 * 60)),
    now_offset=st.integers(0, 6 * 24 * 60 * 60),
    busy=st.booleans(),
    deadline=deadlines,
)
@hypothesis_settings(max_examples=300, deadline=None)
def test_a_started_time_is_the_latest_allowed_one(
    expression: str,
    start_offset: int,
    last_offset: int | None,
    now_offset: int,
    busy: bool,
    deadline: timedelta | None,
) -> None:
    start = BASE + timedelta(minutes=start_offset)
    last = None if last_offset is None else BASE + timedelta(minutes=last_offset)
    now = BASE + timedelta(seconds=now_offset)
    jobs = [running("r", last)] if busy and last is not None else []
    settings = ScheduleSettings(starting_deadline=deadline)
    result = plan(Schedule(expression, start), now, last, jobs, settings)

    earliest = max(start, last) if last is not None else start
    candidates = cron_times(expression, earliest, now)
    if deadline is not None:
        candidates = [t for t in candidates if t > now - deadline]
    if result.start is None:
        assert busy or not candidates or result.reason is PlanReason.DEADLINE_MISSED
    else:
        assert not jobs, "started while a job was running"
        assert result.start == candidates[-1]
        assert result.last_scheduled == result.start
    assert result.next_check is not None and result.next_check >= now


@st.composite
def timelines(draw: st.DrawFn) -> tuple[str, ScheduleSettings, list[int], list[int]]:
    expression = draw(st.sampled_from(EXPRESSIONS[:3]))
    settings = ScheduleSettings(
        history_limit=draw(st.integers(0, 4)),
        starting_deadline=draw(deadlines),
        busy_recheck=timedelta(seconds=draw(st.integers(5, 120))),
    )
    # gaps between operator ticks (seconds): mostly short, sometimes hours of downtime
    gaps = draw(st.lists(st.one_of(st.integers(1, 90), st.integers(600, 6 * 3600)), min_size=1, max_size=60))
    durations = draw(st.lists(st.integers(1, 7200), min_size=1, max_size=20))
    return expression, settings, gaps, durations


@given(timelines())
@hypothesis_settings(max_examples=150, deadline=None)
def test_simulated_operator_never_runs_two_jobs_at_once(
    timeline: tuple[str, ScheduleSettings, list[int], list[int]],
) -> None:
    expression, settings, gaps, durations = timeline
    start = BASE + timedelta(seconds=7)
    jobs: dict[str, tuple[datetime, datetime]] = {}  # name -> (scheduled time, finishes at)
    last: datetime | None = None
    started: list[datetime] = []
    now = start
    for gap in gaps:
        now += timedelta(seconds=gap)
        views = [JobView(n, t, finished=end <= now) for n, (t, end) in jobs.items()]
        result = plan(Schedule(expression, start), now, last, views, settings)

        assert set(result.delete) <= {v.name for v in views if v.finished}
        for name in result.delete:
            del jobs[name]
        if result.start is not None:
            assert all(v.finished for v in views), "two runs at once"
            assert result.start not in started, "a time started twice"
            assert result.start <= now
            if settings.starting_deadline is not None:
                assert now - result.start < settings.starting_deadline
            name = f"job-{int(result.start.timestamp()) // 60}"
            jobs[name] = (result.start, now + timedelta(seconds=durations[len(started) % len(durations)]))
            started.append(result.start)
        last = result.last_scheduled

        # idempotent: the same decision again, after applying it, changes nothing
        views = [JobView(n, t, finished=end <= now) for n, (t, end) in jobs.items()]
        again = plan(Schedule(expression, start), now, last, views, settings)
        assert again.start is None
        assert again.delete == ()
        finished_count = sum(v.finished for v in views)
        assert finished_count <= settings.history_limit

    assert started == sorted(started)
    assert all(t in cron_times(expression, start, now) for t in started)


@given(
    expression=st.sampled_from(EXPRESSIONS[:3]),
    ticks=st.integers(1, 200),
)
@hypothesis_settings(max_examples=40, deadline=None)
def test_with_frequent_ticks_and_short_jobs_every_time_runs(expression: str, ticks: int) -> None:
    start = BASE + timedelta(seconds=3)
    now = start
    last: datetime | None = None
    started: list[datetime] = []
    for _ in range(ticks):
        now += timedelta(seconds=20)
        views = [JobView(f"j{i}", t, finished=True) for i, t in enumerate(started[-3:])]
        result = plan(Schedule(expression, start), now, last, views, DEFAULTS)
        if result.start is not None:
            started.append(result.start)
        last = result.last_scheduled
    assert started == cron_times(expression, start, now)


def test_next_time_is_strictly_after() -> None:
    assert next_time("0 * * * *", at(10, 0)) == at(11, 0)
    assert next_time("0 * * * *", at(10, 0, 1)) == at(11, 0)


def test_settings_from_the_environment() -> None:
    assert read_schedule_settings({}) == ScheduleSettings()
    read = read_schedule_settings({"MLSERVE_SCHEDULE_HISTORY_LIMIT": "5", "MLSERVE_SCHEDULE_STARTING_DEADLINE": "1h"})
    assert read.history_limit == 5
    assert read.starting_deadline == timedelta(hours=1)
    assert read_schedule_settings({"MLSERVE_SCHEDULE_STARTING_DEADLINE": "none"}).starting_deadline is None
    with pytest.raises(SettingsError, match="MLSERVE_SCHEDULE_HISTORY_LIMIT"):
        read_schedule_settings({"MLSERVE_SCHEDULE_HISTORY_LIMIT": "three"})


# --- reading live RayJobs --------------------------------------------------------------------------


def _rayjob(status: dict[str, str] | None = None, **metadata: object) -> dict[str, object]:
    meta: dict[str, object] = {
        "name": "etl-dev-202601011000",
        "annotations": {"mlserve.darwin.io/scheduled-time": "2026-01-01T10:00:00Z"},
        **metadata,
    }
    return {"metadata": meta, "status": status or {}}


@pytest.mark.parametrize(
    ("status", "finished"),
    [
        ({}, False),
        ({"jobDeploymentStatus": "Initializing"}, False),
        ({"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}, False),
        ({"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}, True),
        ({"jobDeploymentStatus": "Failed"}, True),
        ({"jobStatus": "STOPPED"}, True),
        ({"jobStatus": "failed"}, True),
    ],
)
def test_a_rayjob_is_finished_when_kuberay_says_so(status: dict[str, str], finished: bool) -> None:
    view = job_view(_rayjob(status))
    assert view is not None
    assert view.finished is finished
    assert view.scheduled_time == at(10, 0)


def test_a_rayjob_being_deleted_counts_as_finished() -> None:
    view = job_view(_rayjob({"jobStatus": "RUNNING"}, deletionTimestamp="2026-01-01T10:01:00Z"))
    assert view is not None and view.finished


def test_a_rayjob_without_a_scheduled_time_is_not_a_scheduled_run() -> None:
    assert job_view({"metadata": {"name": "etl-dev-d7", "annotations": {}}}) is None


# --- RayJobs KubeRay's RayCronJob controller made twice for one cron time ---------------------

CRON_UID = "0b1c-cron"


def _kuberay_run(
    name: str,
    stamp: str,
    created: str = "2026-01-01T10:00:00Z",
    owner: str = CRON_UID,
    controller: bool = True,
    **meta: object,
) -> dict[str, object]:
    """A RayJob as KubeRay 1.6's RayCronJob controller creates it (``constructRayJob``)."""
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": created,
            "labels": {"ray.io/cronjob-name": "etl-dev"},
            "annotations": {"ray.io/cronjob-scheduled-timestamp": stamp},
            "ownerReferences": [{"kind": "RayCronJob", "name": "etl-dev", "uid": owner, "controller": controller}],
            **meta,
        }
    }


def test_one_run_per_cron_time_is_no_duplicate() -> None:
    jobs = [
        _kuberay_run("etl-dev-abcde", "2026-01-01T10:00:00Z"),
        _kuberay_run("etl-dev-fghjk", "2026-01-01T10:01:00Z"),
    ]
    assert duplicate_cron_runs(jobs, CRON_UID) == ()


def test_a_second_run_of_one_cron_time_is_a_duplicate_of_the_first_made() -> None:
    jobs = [
        _kuberay_run("etl-dev-bqjcn", "2026-01-01T10:00:00Z", created="2026-01-01T10:00:01Z"),
        _kuberay_run("etl-dev-sjh7s", "2026-01-01T10:00:00Z", created="2026-01-01T10:00:00Z"),
        _kuberay_run("etl-dev-xxxxx", "2026-01-01T10:01:00Z"),
    ]
    (duplicate,) = duplicate_cron_runs(jobs, CRON_UID)
    assert (duplicate.name, duplicate.kept, duplicate.scheduled_time) == (
        "etl-dev-bqjcn",
        "etl-dev-sjh7s",
        "2026-01-01T10:00:00Z",
    )


def test_runs_made_in_the_same_second_keep_the_first_name() -> None:
    jobs = [_kuberay_run(name, "2026-01-01T10:00:00Z") for name in ("etl-dev-zzzzz", "etl-dev-bbbbb", "etl-dev-mmmmm")]
    found = duplicate_cron_runs(jobs, CRON_UID)
    assert [(d.name, d.kept) for d in found] == [("etl-dev-mmmmm", "etl-dev-bbbbb"), ("etl-dev-zzzzz", "etl-dev-bbbbb")]
    assert duplicate_cron_runs(list(reversed(jobs)), CRON_UID) == found


def test_the_same_instant_written_two_ways_is_one_cron_time() -> None:
    jobs = [
        _kuberay_run("etl-dev-aaaaa", "2026-01-01T10:00:00Z"),
        _kuberay_run("etl-dev-bbbbb", "2026-01-01T11:00:00+01:00"),
    ]
    assert [d.name for d in duplicate_cron_runs(jobs, CRON_UID)] == ["etl-dev-bbbbb"]


@pytest.mark.parametrize(
    "other",
    [
        _kuberay_run("etl-dev-other", "2026-01-01T10:00:00Z", owner="another-cron"),
        _kuberay_run("etl-dev-going", "2026-01-01T10:00:00Z", deletionTimestamp="2026-01-01T10:00:02Z"),
        {"metadata": {**_kuberay_run("etl-dev-nostamp", "")["metadata"], "annotations": {}}},
        _kuberay_run("etl-dev-badstamp", "not a time"),
    ],
    ids=["another-raycronjob", "being-deleted", "no-time", "unreadable-time"],
)
def test_only_live_runs_of_this_raycronjob_with_a_time_count(other: dict[str, object]) -> None:
    jobs = [_kuberay_run("etl-dev-aaaaa", "2026-01-01T10:00:00Z"), other]
    assert duplicate_cron_runs(jobs, CRON_UID) == ()


def test_an_owner_reference_that_is_not_the_controller_does_not_count() -> None:
    job = _kuberay_run("etl-dev-bbbbb", "2026-01-01T10:00:00Z", controller=False)
    assert duplicate_cron_runs([_kuberay_run("etl-dev-aaaaa", "2026-01-01T10:00:00Z"), job], CRON_UID) == ()
