"""Fault tolerance and parallelism: kill -9 a worker mid-study and resume; two workers, one storage."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from optuna.trial import TrialState

from hybridprune.cli import main

from helpers import REPO, load, write_study

pytestmark = pytest.mark.slow


def _unique_params(trials) -> bool:
    keys = [tuple(sorted(t.params.items())) for t in trials]
    return len(keys) == len(set(keys))


def _wait_for(path, proc, n=1, running=0, limit=300):
    """Poll the study's SQLite file read-only until ``n`` trials are complete and ``running`` RUNNING.

    Read-only so that the test never races the worker at creating the schema; the limit only
    guards against hangs.
    """
    import sqlite3

    db = path.parent / "run" / "study.db"
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"worker exited early: {proc.communicate()}"
        if db.exists():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as con:
                    states = dict(con.execute("SELECT state, COUNT(*) FROM trials GROUP BY state").fetchall())
                if states.get("COMPLETE", 0) >= n and states.get("RUNNING", 0) >= running:
                    return
            except sqlite3.OperationalError:  # schema not there yet
                pass
        time.sleep(0.1)
    raise AssertionError("the study did not get there")


def test_kill_9_mid_study_then_resume(tmp_path):
    path = write_study(tmp_path, name="killed", trials=4)
    proc = subprocess.Popen([sys.executable, "-m", "hybridprune.cli", "run", str(path), "--no-progress"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(path, proc)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    _, study = load(path)
    if any("worker" not in t.user_attrs for t in study.get_trials(states=(TrialState.RUNNING,))):
        time.sleep(4)  # killed between ask() and the objective naming its worker: the resume fails it once
        # its heartbeat, or its start where it never beat, is older than the grace period (3 s)
    first = study.get_trials(states=(TrialState.COMPLETE,))
    assert first
    before = {t.number: (t.values, t.user_attrs["artifacts"]) for t in first}

    assert main(["run", str(path), "--no-progress"]) == 0
    cfg, study = load(path)
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    evaluated = [t for t in complete if "duplicate_of" not in t.user_attrs]
    assert len(evaluated) == 4
    assert _unique_params(evaluated)  # the resumed run fine-tuned no finished configuration again
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    for number, (values, artifacts) in before.items():  # nothing completed was lost or redone
        t = trials[number]
        assert t.state == TrialState.COMPLETE and t.values == values and t.user_attrs["artifacts"] == artifacts
        assert all((cfg.artifact_dir / a).is_file() for a in artifacts.values())
    assert len({t.number for t in trials}) == len(trials)
    for t in trials:  # a trial killed mid-way is failed (its worker is gone) and retried with the same params
        if t.state == TrialState.FAIL:
            assert "fail_reason" not in t.user_attrs
            retries = [r for r in trials if r.system_attrs.get("failed_trial") == t.number]
            assert len(retries) == 1 and retries[0].params == t.params
            # queued before any new sample; it runs unless queued references already finish the study
            assert retries[0].state in (TrialState.COMPLETE, TrialState.WAITING)
    # references are enqueued once, whatever happened
    refs = [t.params for t in trials if t.user_attrs.get("reference") and "failed_trial" not in t.system_attrs]
    assert len(refs) == len({tuple(sorted(p.items())) for p in refs})


def test_two_workers_share_one_storage(tmp_path):
    # a generous grace period: a busy machine must not make a live worker's trial look dead
    path = write_study(tmp_path, name="pair", trials=4, heartbeat=2, grace=60)
    assert main(["run", str(path), "--workers", "2", "--no-progress"]) == 0
    cfg, study = load(path)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    evaluated = [t for t in complete if "duplicate_of" not in t.user_attrs]
    # each worker stops once the study holds 4 evaluated trials; a race can add at most one more
    assert 4 <= len(evaluated) <= 5
    assert _unique_params(evaluated)  # no configuration was fine-tuned twice
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.FAIL))
    workers = {t.user_attrs["worker"] for t in complete}
    assert all(w.split(":")[-1] != str(os.getpid()) for w in workers)  # trials ran in the worker processes
    assert all((cfg.artifact_dir / t.user_attrs["artifacts"]["onnx"]).is_file() for t in complete)


def test_orphaned_running_trial_without_heartbeat_does_not_hang_the_study(tmp_path):
    """A trial left RUNNING with no heartbeat (e.g. by a killed Ray driver) never goes stale."""
    import optuna

    from hybridprune.search.local import worker
    from hybridprune.search.service import load as load_cfg
    from hybridprune.search.service import prepare

    path = write_study(tmp_path, name="orphan", trials=1, heartbeat=1, grace=2, study_extra="references = false")
    cfg = load_cfg(str(path))
    _, ctx = prepare(cfg)
    optuna.load_study(study_name="orphan", storage=cfg.storage_url).ask()  # RUNNING, never heartbeats
    assert worker(cfg, ctx=ctx) == 1
    _, study = load(path)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 1


def test_a_trial_whose_worker_died_inside_ask_is_failed_and_queued_once_past_the_grace_period(tmp_path):
    """kill -9 inside Optuna's ask() leaves a RUNNING trial with no heartbeat and no worker: Optuna
    never calls it stale, and a resumed run once ended with it still RUNNING (a CI flake of the
    kill -9 test). The resume fails it once it is older than the grace period, and queues it again."""
    import optuna

    from hybridprune.search.service import load as load_cfg
    from hybridprune.search.service import prepare
    from hybridprune.search.study import fail_dead_trials

    path = write_study(tmp_path, name="inask9", trials=2, heartbeat=1, grace=2, study_extra="references = false")
    cfg = load_cfg(str(path))
    _, ctx = prepare(cfg)
    ctx.close()
    study = optuna.load_study(study_name="inask9", storage=cfg.storage_url)
    orphan = study.ask()  # what the killed worker left: RUNNING, never beat, never named itself
    assert fail_dead_trials(study) == []  # as young as a live worker's trial inside ask(): left alone
    time.sleep(2.5)  # older than the grace period now
    _, ctx = prepare(load_cfg(str(path)))  # the resume's pre-flight fails it and queues it again
    ctx.close()
    _, study = load(path)
    trials = study.get_trials()
    assert trials[orphan.number].state == TrialState.FAIL and "fail_reason" not in trials[orphan.number].user_attrs
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == orphan.number]
    assert len(retry) == 1 and retry[0].state == TrialState.WAITING
    assert fail_dead_trials(study) == []  # nothing RUNNING is left to fail

    assert main(["run", str(path), "--no-progress"]) == 0
    _, study = load(path)
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))


@pytest.mark.parametrize("stop", ["ParentDied", "KeyboardInterrupt"])
def test_a_worker_stopped_inside_ask_fails_and_queues_its_trial_which_has_no_heartbeat_yet(tmp_path, monkeypatch, stop):
    """The worker's stop signal (or Ctrl+C) landing in Optuna's ask(), after the trial became
    RUNNING and before its objective's first heartbeat, once left a trial that nothing ever failed:
    the resumed run ended with it still RUNNING. The worker now fails it and queues it again."""
    from hybridprune.search import local
    from hybridprune.search import study as study_mod
    from hybridprune.search.service import load as load_cfg
    from hybridprune.search.service import prepare

    path = write_study(tmp_path, name="inask", trials=5, heartbeat=1, grace=60)  # the 5 reference points
    cfg = load_cfg(str(path))
    study, ctx = prepare(cfg)
    exc = local.ParentDied("received SIGTERM") if stop == "ParentDied" else KeyboardInterrupt()
    sampler_of = study_mod.worker_sampler

    def stopping_sampler(*args, **kwargs):  # the worker's own sampler, stopped once in ask()
        sampler = sampler_of(*args, **kwargs)
        before = sampler.before_trial

        def stopped(study_, trial):  # Trial.__init__ inside ask(): the trial is RUNNING by now
            sampler.before_trial = before
            raise exc

        sampler.before_trial = stopped
        return sampler

    monkeypatch.setattr(study_mod, "worker_sampler", stopping_sampler)
    try:
        with pytest.raises(type(exc)):
            local.worker(cfg, ctx=ctx, study=study)
    finally:
        ctx.close()
    monkeypatch.setattr(study_mod, "worker_sampler", sampler_of)
    _, study = load(path)
    trials = study.get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and "fail_reason" not in failed[0].user_attrs
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == failed[0].number]
    assert len(retry) == 1 and retry[0].state == TrialState.WAITING
    assert retry[0].system_attrs.get("fixed_params") == failed[0].system_attrs.get("fixed_params")

    assert main(["run", str(path), "--no-progress"]) == 0  # the resume runs it; nothing is left RUNNING
    _, study = load(path)
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    assert retry[0].number in {t.number for t in study.get_trials(states=(TrialState.COMPLETE,))}


def _db_rows(path, sql):
    import sqlite3

    db = path.parent / "run" / "study.db"
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as con:
            return con.execute(sql).fetchall()
    except sqlite3.OperationalError:  # schema not there yet
        return []


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not reaped by init, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _worker_pids(parent: int) -> list[int]:
    """The spawned worker processes of ``parent`` (not multiprocessing's resource tracker)."""
    out = []
    for stat in os.listdir("/proc"):
        if not stat.isdigit():
            continue
        try:
            with open(f"/proc/{stat}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{stat}/cmdline", "rb") as fh:
                cmd = fh.read()
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        if ppid == parent and b"spawn_main" in cmd:
            out.append(int(stat))
    return out


def _start(path, *args):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "hybridprune.cli", "run", str(path), "--no-progress", *args],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _until(condition, proc=None, limit=300):
    """Poll ``condition`` (the limit only guards against hangs)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None:
            assert proc.poll() is None, f"run exited early: {proc.communicate()}"
        time.sleep(0.2)
    raise AssertionError("condition not reached")


def _cleanup(proc):
    try:  # whatever the test left: its own session only
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()


needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="finds worker processes through /proc")


@needs_proc
def test_workers_stop_when_the_run_is_killed(tmp_path):
    """kill -9 of `hybridprune run` stops its workers: no orphan goes on running trials.

    The study is far too long to finish in the hang guard's time: orphaned workers (the old
    behaviour) would keep starting trials and never leave.
    """
    path = write_study(tmp_path, name="orphans", trials=200, heartbeat=2, grace=10)
    proc = _start(path, "--workers", "2")
    try:
        _until(lambda: _db_rows(path, "SELECT number FROM trials WHERE state = 'RUNNING'"), proc)
        workers = _until(lambda: (lambda w: w if len(w) == 2 else None)(_worker_pids(proc.pid)), proc)
        before = _db_rows(path, "SELECT COUNT(*) FROM trials")[0][0]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        _until(lambda: not any(_alive(pid) for pid in workers), limit=120)
        _, err = proc.communicate(timeout=120)  # the workers (which shared its stderr) are gone
    finally:
        _cleanup(proc)
    assert err.count("stops (received SIGTERM") == 2 and "Traceback" not in err, err  # each stopped cleanly
    # at most the trial each worker was asking for when the run died; none started afterwards
    assert _db_rows(path, "SELECT COUNT(*) FROM trials")[0][0] <= before + 2


def test_a_workers_second_sigterm_is_a_no_op_and_its_handler_is_never_swapped(monkeypatch):
    """The kernel's SIGTERM (parent death) and the watchdog's arrive together: the first stops the
    worker, the second does nothing. Swapping the handler to SIG_IGN on the first (the old way) raced
    with the second already caught, and CPython printed a traceback into the run's stderr."""
    from hybridprune.search import local

    monkeypatch.setattr(local, "_stopping", False)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(local.ParentDied, match="received SIGTERM"):
        local._on_parent_death(signal.SIGTERM, None)
    assert local._on_parent_death(signal.SIGTERM, None) is None  # the second: nothing raised
    assert signal.getsignal(signal.SIGTERM) is before


@needs_proc
def test_a_killed_worker_is_a_warning_when_the_study_reached_its_target(tmp_path):
    path = write_study(tmp_path, name="onedead", trials=3, heartbeat=2, grace=10, study_extra="references = false")
    proc = _start(path, "--workers", "2")
    try:
        query = ("SELECT a.value_json FROM trial_user_attributes a JOIN trials t "
                 "ON a.trial_id = t.trial_id WHERE a.key = 'worker' AND t.state = 'RUNNING'")
        rows = _until(lambda: _db_rows(path, query), proc)
        victim = int(rows[0][0].strip('"').rsplit(":", 1)[1])
        assert victim in _worker_pids(proc.pid)
        os.kill(victim, signal.SIGKILL)
        out, err = proc.communicate(timeout=900)
    finally:
        _cleanup(proc)
    assert proc.returncode == 0, (out, err)
    assert "Traceback" not in out + err
    assert f"(pid {victim}) killed by SIGKILL" in err and "reached its target" in err
    _, study = load(path)
    evaluated = [t for t in study.get_trials(states=(TrialState.COMPLETE,)) if "duplicate_of" not in t.user_attrs]
    assert len(evaluated) >= 3
    dead = [t for t in study.get_trials(states=(TrialState.FAIL,)) if "fail_reason" not in t.user_attrs]
    assert len(dead) == 1 and dead[0].user_attrs["worker"].endswith(f":{victim}")  # failed by the heartbeat


@needs_proc
def test_all_workers_killed_is_one_error_line(tmp_path):
    path = write_study(tmp_path, name="alldead", trials=3)
    proc = _start(path, "--workers", "2")
    try:
        workers = _until(lambda: (lambda w: w if len(w) == 2 else None)(_worker_pids(proc.pid)), proc)
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=300)
    finally:
        _cleanup(proc)
    assert proc.returncode == 1, (out, err)
    assert "Traceback" not in out + err
    assert err.strip().splitlines()[-1].startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert all(f"(pid {pid}) killed by SIGKILL" in err for pid in workers) and "run the same command again" in err


def test_stale_trial_folders_are_removed_at_the_start_of_a_run(tmp_path):
    from hybridprune.search.service import load as load_cfg
    from hybridprune.search.service import prepare
    from hybridprune.search.study import open_study

    path = write_study(tmp_path, name="stale", trials=1, study_extra="references = false")
    cfg = load_cfg(str(path))
    study = open_study(cfg)
    study.ask()  # trial 0: RUNNING (another worker's), keeps its folder
    study.tell(study.ask(), state=TrialState.FAIL)  # trial 1: a killed trial, done with
    run = cfg.run_dir
    for name in ("trial0-live", "trial1-dead", "trial9-unknown", "notes"):
        (run / name).mkdir(parents=True)
        (run / name / "measure.onnx").write_text("x")
    (run / "trial2-file").write_text("not a folder")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # the pid of a killed refine or run
    for name in (f"refine-{dead.pid}-x", f"latency-{dead.pid}-y", f"reference0-{dead.pid}-z",
                 f"refine-{os.getpid()}-live", "refine-nopid"):
        (run / name).mkdir()
    _, ctx = prepare(cfg)
    ctx.close()
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(("trial", "notes"))) == [
        "notes", "trial0-live", "trial2-file"]
    left = sorted(p.name for p in run.iterdir() if p.name.startswith(("refine", "latency-", "reference")))
    assert [n for n in left if str(dead.pid) in n] == [] and f"refine-{os.getpid()}-live" in left
    assert "refine-nopid" in left


@pytest.mark.parametrize("workers, sig", [(1, "SIGINT"), (2, "SIGINT"), (1, "SIGTERM")])
def test_ctrl_c_is_one_line_and_the_interrupted_reference_point_runs_on_resume(tmp_path, workers, sig):
    path = write_study(tmp_path, name="ctrlc", trials=5)  # the baseline and the 4 paper points are queued first
    proc = subprocess.Popen([sys.executable, "-m", "hybridprune.cli", "run", str(path), "--no-progress",
                             "--workers", str(workers)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        _wait_for(path, proc, running=1)  # one trial done, the next one running: Ctrl+C interrupts it
    finally:
        if sig == "SIGINT":
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl+C does: every process of the run
        else:
            os.kill(proc.pid, signal.SIGTERM)  # `kill PID`: stops as Ctrl+C does
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert [line for line in err.splitlines() if line.startswith("interrupted: ")], err
    _, study = load(path)
    assert [t for t in study.get_trials() if t.state in (TrialState.RUNNING, TrialState.FAIL)]

    assert main(["run", str(path), "--no-progress"]) == 0
    _, study = load(path)
    trials = study.get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed and all("fail_reason" not in t.user_attrs for t in failed)  # interrupted, not failed by itself
    for t in failed:  # each interrupted trial ran again, with its parameters and its reference label
        retry = [r for r in trials if r.system_attrs.get("failed_trial") == t.number]
        assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
        # a reference point runs again with all its fixed parameters, even when Ctrl+C landed before
        # it had suggested them all; a sampled trial keeps every parameter it had suggested
        want = t.system_attrs.get("fixed_params") or t.params
        assert {k: retry[0].params.get(k) for k in want} == want
        if "fixed_params" in t.system_attrs:
            assert retry[0].params == want
        assert retry[0].user_attrs.get("reference") == t.user_attrs.get("reference")
    references = [t for t in trials if t.user_attrs.get("reference") and t.state == TrialState.COMPLETE]
    assert len({tuple(sorted(t.params.items())) for t in references}) == 5  # no paper point lost


def test_ctrl_c_while_optuna_starts_its_heartbeat_thread_does_not_leave_it_beating(tmp_path, monkeypatch):
    # Thread.start() waits for the new thread to run, so a Ctrl+C often lands there: Optuna's
    # with-block never reaches __exit__ and its non-daemon heartbeat thread would keep the
    # interpreter from exiting (seen as a run that hung after printing "interrupted")
    import threading

    import optuna.storages._heartbeat as heartbeat

    start = heartbeat.HeartbeatThread.start

    def start_then_ctrl_c(self):
        start(self)
        raise KeyboardInterrupt

    path = write_study(tmp_path, name="ctrlc_heartbeat", trials=2)
    monkeypatch.setattr(heartbeat.HeartbeatThread, "start", start_then_ctrl_c)
    assert main(["run", str(path), "--no-progress"]) == 130
    beating = [t for t in threading.enumerate() if "_record_heartbeat" in t.name]
    for t in beating:
        t.join(timeout=60)  # stopped threads return at their next wait; a forgotten one never does
    assert not [t for t in beating if t.is_alive()]

    monkeypatch.setattr(heartbeat.HeartbeatThread, "start", start)
    assert main(["run", str(path), "--no-progress"]) == 0
    _, study = load(path)
    trials = study.get_trials()
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 2
    assert not [t for t in trials if t.state == TrialState.RUNNING]


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_ray_run_stops_like_a_local_one_and_its_interrupted_trial_runs_on_resume(tmp_path, sig):
    """Tune's own Ctrl+C ends fit() as if finished and ray.init's SIGTERM handler calls sys.exit:
    either left the running trial RUNNING in the study for good."""
    pytest.importorskip("ray.tune", reason="ray[tune] is not installed (pip install 'hybridprune[ray]')")
    path = write_study(tmp_path, name="rayctrlc", trials=5)
    proc = _start(path, "--backend", "ray")
    try:
        _wait_for(path, proc, running=1, limit=600)
        os.kill(proc.pid, getattr(signal, sig))  # the driver only: Ray's own processes are Ray's
        _, err = proc.communicate(timeout=300)
    finally:
        _cleanup(proc)
    assert proc.returncode == 130, err
    assert [line for line in err.splitlines() if line.startswith("interrupted: ")], err
    _, study = load(path)
    trials = study.get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed and all("fail_reason" not in t.user_attrs for t in failed)  # interrupted, not failed
    assert main(["run", str(path), "--no-progress"]) == 0  # resumed locally: the same study
    trials = load(path)[1].get_trials()
    for t in failed:
        retry = [r for r in trials if r.system_attrs.get("failed_trial") == t.number]
        assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE


def test_two_workers_stopped_at_once_queue_a_trial_interrupted_inside_ask_once(tmp_path):
    """A trial stopped inside Optuna's ask() has no worker yet, so each stopping worker that had it
    WAITING claims it; with both reading before either wrote, it was queued twice (a CI failure of
    the 2-worker Ctrl+C test). The workers' lock file makes the read and the queueing one step."""
    import multiprocessing as mp

    import optuna

    from hybridprune.search.service import load as load_cfg
    from hybridprune.search.service import prepare

    from helpers import slow_abandon

    path = write_study(tmp_path, name="twostop", trials=2, heartbeat=1, grace=60, study_extra="references = false")
    cfg = load_cfg(str(path))
    _, ctx = prepare(cfg)
    ctx.close()
    study = optuna.load_study(study_name="twostop", storage=cfg.storage_url)
    orphan = study.ask()  # RUNNING, no heartbeat, no worker: stopped inside ask()
    spawn = mp.get_context("spawn")
    barrier = spawn.Barrier(2)
    lock = str(cfg.run_dir / "abandon.lock")
    out = spawn.Queue()
    procs = [spawn.Process(target=slow_abandon, args=(str(path), [orphan.number], orphan.number, lock, barrier, out))
             for _ in range(2)]
    for p in procs:
        p.start()
    queued = sorted([out.get(timeout=120), out.get(timeout=120)])
    for p in procs:
        p.join()
    assert queued == [[], [orphan.number]]
    _, study = load(path)
    trials = study.get_trials()
    assert trials[orphan.number].state == TrialState.FAIL
    assert len([t for t in trials if t.system_attrs.get("failed_trial") == orphan.number]) == 1
