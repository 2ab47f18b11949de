"""Build logs tell the truth: chronological, everything the build wrote kept, the final status last.

Real worker processes (``tests/fixtures_service.py``) against a real redis-server. Each test reads
the log twice, stored (the LOGS artifact) and live (the Redis stream), and checks they agree.
"""

from __future__ import annotations

from conda_store_jupyter.schema import BuildStatus
from conda_store_jupyter.worker.logs import live_lines, read_log, stored_or_live_log
from conda_store_jupyter.worker.queue import BuildQueue

from .fixtures_service import QUICK, SLOW, build_row, make_build, status_of, wait_for, wait_in_pip_stage, wait_status


def _live(store, build_id: int) -> list[str]:
    wait_for(lambda: read_log(store, build_id)[2], 10, "the live log to be finished")
    return live_lines(store, build_id)


def test_completed_build_live_and_stored_logs_agree(service_factory):
    env = service_factory()
    store = env.store
    build_id = make_build(store, QUICK)
    BuildQueue(store).enqueue_build(build_id)
    env.start_worker("--burst")
    assert wait_status(store, build_id, BuildStatus.COMPLETED, BuildStatus.FAILED, env=env)[0] == BuildStatus.COMPLETED
    stored = stored_or_live_log(store, build_id).splitlines()
    assert stored[0].startswith(f"build {build_id} (") and stored[-1].startswith("BUILD COMPLETED in ")
    assert _live(store, build_id) == stored


def test_submission_warnings_open_the_stored_log_of_a_build_the_worker_ran(service_factory):
    """``prefix:`` is accepted but said: the warning the API writes at submission stays the first
    line of the log the worker stores, not only of the live one."""
    from conda_store_jupyter.api import submit
    from conda_store_jupyter.api.environments import prepare_specification

    env = service_factory()
    store = env.store
    spec = prepare_specification(store, QUICK + "prefix: /etc\n")
    assert spec.warnings
    build_id = submit(store, namespace="default", specification=spec)
    env.start_worker("--burst")
    assert wait_status(store, build_id, BuildStatus.COMPLETED, BuildStatus.FAILED, env=env)[0] == BuildStatus.COMPLETED
    stored = stored_or_live_log(store, build_id).splitlines()
    assert stored[0] == f"WARNING: {spec.warnings[0]}" and stored[1].startswith(f"build {build_id} (")
    assert _live(store, build_id) == stored


def test_canceled_build_keeps_its_output_then_one_final_line(service_factory, hanging_index):
    env = service_factory(pip_index_url=hanging_index.url)
    store = env.store
    build_id = make_build(store, SLOW)
    BuildQueue(store).enqueue_build(build_id)
    env.start_worker()
    wait_in_pip_stage(store, build_id, env)
    wait_for(lambda: hanging_index.open > 0, 60, "uv to connect to the pip index")

    BuildQueue(store).cancel_build(build_id)
    assert wait_status(store, build_id, BuildStatus.CANCELED, BuildStatus.FAILED, timeout=30, env=env) == (
        BuildStatus.CANCELED, "canceled by user")
    stored = stored_or_live_log(store, build_id).splitlines()
    final = "BUILD CANCELED: canceled by user"
    assert stored[-1] == final and stored.count(final) == 1, stored
    # The build's own output, in the order it was written, comes first.
    assert stored[0].startswith(f"build {build_id} (")
    assert stored.index("-- solve") < stored.index("-- install") < stored.index("-- pip") < len(stored) - 1
    assert _live(store, build_id) == stored


def test_build_canceled_while_its_process_starts_has_a_log_of_its_own(service_factory, hanging_index):
    """Canceled right after a worker claimed it: the build process (just forked) may not have
    written anything yet, but the log still says which build ran where, then the final line."""
    env = service_factory(pip_index_url=hanging_index.url)
    store = env.store
    build_id = make_build(store, SLOW)
    BuildQueue(store).enqueue_build(build_id)
    env.start_worker()
    wait_for(lambda: status_of(store, build_id)[0] != BuildStatus.QUEUED, 60, "a worker to claim the build",
             interval=0.01)
    BuildQueue(store).cancel_build(build_id)
    wait_status(store, build_id, BuildStatus.CANCELED, BuildStatus.FAILED, timeout=30, env=env)
    stored = stored_or_live_log(store, build_id).splitlines()
    assert stored[0].startswith(f"build {build_id} (") and " on " in stored[0]
    assert stored[-1] == "BUILD CANCELED: canceled by user" and stored.count(stored[-1]) == 1, stored
    assert _live(store, build_id) == stored


def test_canceled_queued_build_has_one_line(service_factory):
    store = service_factory().store
    build_id = make_build(store, SLOW)
    BuildQueue(store).enqueue_build(build_id)
    BuildQueue(store).cancel_build(build_id)
    assert stored_or_live_log(store, build_id) == "BUILD CANCELED: canceled by user\n"
    assert _live(store, build_id) == ["BUILD CANCELED: canceled by user"]


def test_failed_build_is_chronological_with_the_cause_on_top_and_last(service_factory):
    env = service_factory()
    store = env.store
    build_id = make_build(store, "name: nope\ndependencies:\n  - no-such-package\n")
    BuildQueue(store).enqueue_build(build_id)
    env.start_worker("--burst")
    status, info = wait_status(store, build_id, BuildStatus.FAILED, BuildStatus.COMPLETED, env=env)
    assert status == BuildStatus.FAILED and "no-such-package" in info
    final = f"BUILD FAILED: {info}"
    stored = stored_or_live_log(store, build_id).splitlines()
    # One summary line on top (whoever opens the log reads the cause first), then the build's
    # output in order, then the final status as the very last line (what `tail` shows).
    assert stored[0] == final and stored[1] == ""
    assert stored[2].startswith(f"build {build_id} (")
    assert stored.index("-- solve") < next(i for i, line in enumerate(stored) if line.startswith("== solve:"))
    assert stored[-1] == final and stored.count(final) == 2, stored
    assert _live(store, build_id) == stored[2:]
    assert not build_row(store, build_id).prefix_path(store.store_path).exists()  # half-built prefix removed


def test_build_stopped_by_its_timeout_ends_with_the_reason(service_factory, hanging_index):
    env = service_factory(pip_index_url=hanging_index.url, build_timeout=12)
    store = env.store
    build_id = make_build(store, SLOW)
    BuildQueue(store).enqueue_build(build_id)
    env.start_worker()
    status, info = wait_status(store, build_id, BuildStatus.FAILED, BuildStatus.COMPLETED, timeout=90, env=env)
    assert status == BuildStatus.FAILED and "12" in info and "limit" in info, info
    wait_for(lambda: hanging_index.open == 0, 15, "uv to be stopped")  # the whole process group
    final = f"BUILD FAILED: {info}"
    stored = stored_or_live_log(store, build_id).splitlines()
    assert stored[:2] == [final, ""] and stored[-1] == final and stored.count(final) == 2, stored
    assert stored[2].startswith(f"build {build_id} (") and "-- pip" in stored
    assert _live(store, build_id) == stored[2:]
    assert status_of(store, build_id)[0] == BuildStatus.FAILED
