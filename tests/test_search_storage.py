"""Factories: get_storage, get_sampler; the cross-process latency lock."""

from __future__ import annotations

import subprocess
import sys

import optuna
import pytest

from hybridprune.errors import ConfigError
from hybridprune.io import device_lock
from hybridprune.pruning import list_criteria
from hybridprune.search.samplers import get_sampler, list_samplers
from hybridprune.search.storage import get_storage
from hybridprune.spaces import get_space


def test_get_storage_normalises_user_input(tmp_path):
    assert isinstance(get_storage(None), optuna.storages.InMemoryStorage)
    rdb = get_storage(f"sqlite:///{tmp_path / 'a' / 's.db'}", heartbeat_interval=2, grace_period=5)
    assert isinstance(rdb, optuna.storages.RDBStorage) and rdb.heartbeat_interval == 2 and rdb.grace_period == 5
    assert (tmp_path / "a" / "s.db").is_file()
    journal = get_storage(str(tmp_path / "j" / "study.log"))
    assert isinstance(journal, optuna.storages.JournalStorage)
    assert get_storage(journal) is journal
    study = optuna.create_study(storage=journal, study_name="x")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert len(optuna.load_study(study_name="x", storage=get_storage(str(tmp_path / "j" / "study.log"))).trials) == 2


@pytest.mark.parametrize("bad", ["", "study.db", "nosuchdialect://x/y", 42])
def test_get_storage_rejects_bad_specs(bad):
    with pytest.raises(ConfigError):
        get_storage(bad)


EXPECTED = {"nsga2": optuna.samplers.NSGAIISampler, "tpe": optuna.samplers.TPESampler,
            "gp": optuna.samplers.GPSampler, "random": optuna.samplers.RandomSampler}


def test_sampler_registry_lists_every_sampler_once():
    from hybridprune.search.samplers import SAMPLER_ORDER, list_samplers

    assert sorted(SAMPLER_ORDER) == list_samplers() == sorted(EXPECTED)


@pytest.mark.parametrize("name", list_samplers())
def test_every_sampler_searches_the_space_with_constraints(name):
    """Contract over the registry: past their start-up phase, the samplers keep producing valid
    configs and honour constraints."""
    sampler = get_sampler(name, seed=0, n_trials=12, n_startup_trials=4, population_size=4)
    assert isinstance(sampler, EXPECTED[name])
    space = get_space("hybrid", {}, removable_blocks=7, criteria=list_criteria())
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)

    def objective(trial):
        c = space.suggest(trial)
        acc = 1.0 - c.channel_ratio * 0.5 - c.pruned_blocks * 0.03
        lat = 1.0 - c.channel_ratio * 0.6 - c.pruned_blocks * 0.05
        trial.set_constraint("latency", lat - 0.8)
        return acc, lat

    study.optimize(objective, n_trials=12)
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 12
    assert all(t.constraints["latency"] <= 0 for t in study.best_trials)


def test_unknown_sampler():
    with pytest.raises(ConfigError, match="nsga2, tpe, gp, random"):
        get_sampler("cmaes")


def test_device_lock_excludes_other_processes(tmp_path):
    lock = tmp_path / "latency.lock"
    probe = ("import fcntl, sys\nf = open(sys.argv[1], 'a+')\n"
             "try:\n    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n    print('got')\n"
             "except BlockingIOError:\n    print('busy')\n")
    with device_lock(lock):
        held = subprocess.run([sys.executable, "-c", probe, str(lock)], capture_output=True, text=True).stdout.strip()
    free = subprocess.run([sys.executable, "-c", probe, str(lock)], capture_output=True, text=True).stdout.strip()
    assert (held, free) == ("busy", "got")
    with device_lock(None):  # remote agents queue themselves: no lock
        pass


def test_banners_never_print_database_passwords(tmp_path, capsys):
    from hybridprune.cli import main
    from hybridprune.search.storage import redact_url

    from helpers import write_study

    assert redact_url("postgresql+psycopg2://me:s3cret@db.example/hp") == "postgresql+psycopg2://me:***@db.example/hp"
    assert redact_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    path = write_study(tmp_path, name="pw", study_extra='storage = "postgresql+psycopg2://me:s3cret@127.0.0.1:9/hp"')
    assert main(["run", str(path), "--no-progress"]) == 2  # nothing listens on port 9
    assert main(["status", str(path)]) == 2
    out = capsys.readouterr()
    assert "s3cret" not in out.out + out.err and "me:***@127.0.0.1:9/hp" in out.out + out.err


def test_one_resolver_for_storage_specs(tmp_path, monkeypatch):
    """Study files, --storage and get_storage read storage specs the same way."""
    from hybridprune.search.storage import resolve_storage_url

    base = tmp_path / "studies"
    assert resolve_storage_url("sqlite:///db/s.db", base) == f"sqlite:///{base / 'db' / 's.db'}"
    assert resolve_storage_url("journal://j/s.log", base) == f"journal://{base / 'j' / 's.log'}"
    assert resolve_storage_url("j/s.log", base) == str(base / "j" / "s.log")
    assert resolve_storage_url("sqlite:////abs/s.db", base) == "sqlite:////abs/s.db"
    assert resolve_storage_url("postgresql+psycopg2://u:p@h/db", base) == "postgresql+psycopg2://u:p@h/db"
    assert resolve_storage_url(None, base) is None
    for bad in ("study.db", "sqlite:///:memory:"):
        with pytest.raises(ConfigError):
            resolve_storage_url(bad, base)
    monkeypatch.chdir(tmp_path)  # get_storage resolves against the working folder
    journal = get_storage("journal://rel/s.log")
    optuna.create_study(storage=journal, study_name="x")
    assert (tmp_path / "rel" / "s.log").is_file()


def test_journal_url_in_a_study_file_resolves_against_its_folder(tmp_path, monkeypatch):
    from hybridprune.search.service import load
    from hybridprune.search.study import open_study

    from helpers import write_study

    path = write_study(tmp_path / "studies", name="j", study_extra='storage = "journal://db/j.log"')
    monkeypatch.chdir(tmp_path)  # elsewhere than the study file
    cfg = load(str(path))
    assert cfg.storage_url == f"journal://{tmp_path / 'studies' / 'db' / 'j.log'}"
    open_study(cfg)
    assert (tmp_path / "studies" / "db" / "j.log").is_file() and not (tmp_path / "db").exists()
    over = load(str(path), storage="journal://other.log")  # --storage resolves the same way
    assert over.storage_url == f"journal://{tmp_path / 'studies' / 'other.log'}"


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_trial_whose_local_worker_exited_is_failed_and_queued_again_at_once(tmp_path):
    import os
    import socket
    import time

    from optuna.trial import TrialState

    from hybridprune.search import trials as T
    from hybridprune.search.study import _gone, fail_dead_trials

    storage = get_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_interval=60, grace_period=3600, max_retry=1)
    study = optuna.create_study(storage=storage, study_name="s")
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host = socket.gethostname()
        workers = {"exited": f"{host}:{exited.pid}", "alive": f"{host}:{alive.pid}", "elsewhere": "other-host:1",
                   "unmarked": None}
        trials = {}
        for name, worker in workers.items():
            trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
            if worker:
                trial.set_user_attr(T.WORKER, worker)
            trials[name] = trial.number
        assert fail_dead_trials(study) == [trials["exited"]]  # no heartbeat is late: grace_period is an hour
        state = {t.number: t.state for t in study.get_trials()}
        assert state[trials["exited"]] == TrialState.FAIL
        assert [state[trials[n]] for n in ("alive", "elsewhere", "unmarked")] == [TrialState.RUNNING] * 3
        retry = [t for t in study.get_trials() if t.system_attrs.get("failed_trial") == trials["exited"]]
        assert len(retry) == 1 and retry[0].state == TrialState.WAITING
        assert fail_dead_trials(study) == []
        # a pid that now belongs to a process started after the trial did was reused: the worker is gone
        assert _gone(alive.pid, time.time() - 3600) and not _gone(alive.pid, time.time() + 3600)
        assert _gone(os.getpid(), time.time() + 3600)
    finally:
        alive.kill()
        alive.wait()


def test_a_locked_sqlite_study_says_it_waits(tmp_path, capsys, monkeypatch):
    """Another process's write lock holds a command up for up to 120 s: it says so in one line
    (once per process) instead of hanging silently, and goes on when the lock is released."""
    import sqlite3
    import threading

    from hybridprune.search import storage as S

    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(storage=get_storage(url), study_name="s")

    def locked_for(seconds):
        holder = sqlite3.connect(tmp_path / "study.db", isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN EXCLUSIVE")
        threading.Timer(seconds, lambda: (holder.execute("COMMIT"), holder.close())).start()

    monkeypatch.setattr(S, "_SAID_WAITING", [])
    locked_for(8)  # longer than the 5 s that pass silently
    storage = get_storage(url)  # opening reads the schema
    assert capsys.readouterr().err.count("waiting for the study database") == 1
    monkeypatch.setattr(S, "_SAID_WAITING", [])
    locked_for(8)
    optuna.create_study(storage=storage, study_name="t")  # a write: BEGIN IMMEDIATE waits
    err = capsys.readouterr().err
    assert err == f"waiting for the study database {tmp_path / 'study.db'}: another process holds its write lock " \
                  f"(up to 120 s)\n"
    assert {s.study_name for s in optuna.get_all_study_summaries(storage)} == {"s", "t"}



def test_sqlalchemy_cleanup_tracebacks_stay_off_the_console():
    """A Ctrl+C or a worker's SIGTERM inside a query makes SQLAlchemy log "Error closing cursor" with
    a traceback; the run reports the interrupt in one line, so the console gets nothing more (a
    process of its own: pytest's log capture would stand in for the missing handler)."""
    code = """
import logging
from hybridprune.search.study import quiet_optuna
quiet_optuna()
try:
    raise KeyboardInterrupt
except KeyboardInterrupt:
    logging.getLogger("sqlalchemy.engine.Engine").error("Error closing cursor", exc_info=True)
    logging.getLogger("sqlalchemy.pool.impl.QueuePool").error("Exception during reset or similar", exc_info=True)
logging.getLogger("hybridprune").error("still shown")
"""
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stderr
    assert "Traceback" not in err and "Error closing cursor" not in err and "during reset" not in err, err
    assert "still shown" in err  # only SQLAlchemy's cleanup loggers are quiet
