"""Progress of `hybridprune run`: running trials are visible while they run, not only between trials."""

from __future__ import annotations

import re

import pytest

from hybridprune.cli import main

from test_search_support import write_study

pytestmark = pytest.mark.slow


def test_log_lines_announce_each_trial_before_it_finishes(tmp_path, capsys):
    path = write_study(tmp_path, name="lines", trials=2)
    assert main(["run", str(path)]) == 0  # not a terminal here: one line per event
    lines = capsys.readouterr().out.splitlines()
    started = {int(m.group(1)): i for i, line in enumerate(lines) if (m := re.match(r"trial (\d+) started", line))}
    done = {int(m.group(1)): i for i, line in enumerate(lines) if (m := re.match(r"trial (\d+) (done|failed)", line))}
    assert len(done) >= 2 and set(done) <= set(started), lines
    assert all(started[n] < done[n] for n in done)
    assert "trial 0 started (reference baseline)" in lines  # the references say what they are


def test_the_live_view_sees_the_running_trial(tmp_path):
    """With one worker the trials run in the calling thread; the view still polls while they run."""
    from hybridprune.search.local import run_local
    from hybridprune.search.service import load, prepare
    from hybridprune.search.study import counts, open_study

    path = write_study(tmp_path, name="live", trials=2, study_extra="references = false")
    cfg = load(str(path))
    _, ctx = prepare(cfg)
    watcher = open_study(cfg, create=False)
    seen: list[int] = []
    try:
        run_local(cfg, on_poll=lambda: seen.append(counts(watcher).running), ctx=ctx)
    finally:
        ctx.close()
    assert seen.count(1) >= 2  # at least once while each trial ran (polled when it starts)
    assert seen[-1] == 0 and max(seen) == 1  # the last poll shows the final state


def test_a_failing_progress_view_does_not_stop_the_study(tmp_path):
    from hybridprune.search.local import Poller

    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise RuntimeError("terminal gone")

    with Poller(broken) as poller:
        poller.poll()
        poller.poll()
    assert len(calls) == 3  # two on demand, one final; none raised
