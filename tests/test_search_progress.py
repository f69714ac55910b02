"""Progress of `hybridprune run`: running trials are visible while they run, not only between trials."""

from __future__ import annotations

import re

import pytest

from hybridprune.cli import main

from helpers import write_study

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


def test_fine_tune_progress_is_recorded_and_shown_with_an_eta(tmp_path):
    """A running trial's fine-tune writes step/total/elapsed/ETA; ``run`` turns it into lines."""
    import optuna

    from hybridprune.commands.search import _progress_lines
    from hybridprune.search import trials as T
    from hybridprune.search.objective import _Progress
    from hybridprune.training import StepInfo

    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = study.ask()
    clock = iter([1.0, 10.0, 20.0])
    progress = _Progress(trial, every_s=5.0)
    progress.clock = lambda: next(clock)
    progress.start = progress.last = 0.0
    progress(StepInfo(1, 40, 0.0, 0.0, 0.0, 0.1))  # 1 s after the start: too soon to write
    assert T.PROGRESS not in study.trials[0].user_attrs
    progress(StepInfo(10, 40, 0.0, 0.0, 0.0, 0.1))  # 10 s: written, ETA from the rate so far
    assert study.trials[0].user_attrs[T.PROGRESS] == {"step": 10, "total": 40, "elapsed_s": 10.0, "eta_s": 30.0}
    assert _progress_lines(study) == ["trial 0: fine-tune step 10/40, 10 s elapsed, ETA 30 s"]
    last: dict = {}
    assert len(_progress_lines(study, last)) == 1 and _progress_lines(study, last) == []  # every 30 s in logs
    progress.offset, progress.total = 40, 120  # the next rung of a multi-fidelity ladder
    progress(StepInfo(20, 80, 0.0, 0.0, 0.0, 0.1))
    recorded = study.trials[0].user_attrs[T.PROGRESS]
    assert recorded["step"] == 60 and recorded["total"] == 120
