"""A Ctrl+C (or a worker's stop signal) that arrives inside a storage call takes effect after it:
the call happens whole, and no lock is left behind (hybridprune/search/interrupts.py)."""

from __future__ import annotations

import os
import pickle
import signal
import sqlite3
import sys
import threading
import time

import optuna
import pytest

from hybridprune.search.interrupts import Terminated, catch_swallowed, held, interrupt, signals_held
from hybridprune.search.local import ParentDied
from hybridprune.search.storage import get_storage

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name != "posix", reason="POSIX signals")


def _ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)  # the handler runs at the next bytecode of this thread


def test_a_ctrl_c_inside_a_held_call_is_raised_when_it_returns():
    done = []

    @held
    def work():
        _ctrl_c()
        for i in range(100_000):  # many bytecodes: the handler has run long before this ends
            pass
        done.append(i)
        return "result"

    with signals_held(), pytest.raises(KeyboardInterrupt):
        work()
    assert done == [99_999]
    with signals_held(), pytest.raises(KeyboardInterrupt):  # outside a held call it is immediate
        _ctrl_c()
        for _ in range(100_000):
            pass
        pytest.fail("the Ctrl+C should have been raised here")  # pragma: no cover
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_a_sigterm_stops_like_a_ctrl_c_after_the_held_call_and_the_default_comes_back():
    done = []

    @held
    def work():
        os.kill(os.getpid(), signal.SIGTERM)  # default action: the process would end here
        for i in range(100_000):
            pass
        done.append(i)

    # an earlier test's library may have installed a SIGTERM handler in this process: start from the default
    saved = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with signals_held(), pytest.raises(Terminated, match="SIGTERM") as caught:
            work()
        assert done == [99_999] and isinstance(caught.value, KeyboardInterrupt)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored

        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a handler of the caller's is left alone
        with signals_held():
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, saved)


def test_only_the_main_thread_is_held_and_nested_calls_raise_at_the_outermost():
    seen = []
    inner = held(lambda: interrupt(KeyboardInterrupt()))

    @held
    def outer():
        inner()
        seen.append("after inner")

    with pytest.raises(KeyboardInterrupt):
        outer()
    assert seen == ["after inner"]
    errors = []

    def other_thread():
        try:
            inner()  # not the main thread: nothing is held, the exception is raised at once
        except KeyboardInterrupt:
            errors.append("raised")

    t = threading.Thread(target=other_thread)
    t.start()
    t.join()
    assert errors == ["raised"]


def test_a_ctrl_c_that_lands_in_a_finaliser_is_raised_again_after_it(monkeypatch, capsys):
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)  # restored after the test
    ran = []

    class Finalised:
        def __del__(self):  # what a garbage-collected SQLAlchemy weakref callback is to a real run
            _ctrl_c()
            for _ in range(100_000):
                pass
            ran.append("the handler should have raised before this")  # pragma: no cover

    with signals_held(), pytest.raises(KeyboardInterrupt):
        Finalised()  # no reference: finalised at once, and Python drops what its __del__ raises
        for _ in range(3000):  # the Ctrl+C comes back from the hook's thread within a few switches
            time.sleep(0.01)
        pytest.fail("the Ctrl+C raised inside __del__ was lost")  # pragma: no cover
    assert ran == []
    assert "Exception ignored" not in capsys.readouterr().err


def test_another_interrupt_lost_in_a_finaliser_is_raised_before_the_next_storage_call(monkeypatch, capsys):
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    catch_swallowed()  # a worker does this in watch_parent

    class Finalised:
        def __del__(self):
            interrupt(ParentDied("received SIGTERM"))

    Finalised()
    calls = []
    with pytest.raises(ParentDied):
        held(lambda: calls.append("started"))()
    assert calls == []  # raised before the storage call began, not in the middle of it
    held(lambda: calls.append("started"))()
    assert calls == ["started"]  # once
    assert "Exception ignored" not in capsys.readouterr().err


# a user attribute goes through public storage methods; a parameter, on SQLite, through Optuna's
# _CachedStorage into the backend's private _set_trial_param (where the CLI's Ctrl+C test landed,
# the signal sent as the next trial started: its first suggest_*)
@pytest.mark.parametrize("kind,write", [("sqlite", "attr"), ("journal", "attr"), ("sqlite", "param"),
                                        ("journal", "param")])
def test_a_ctrl_c_during_a_storage_write_lands_after_it_and_leaves_no_lock(tmp_path, kind, write):
    url = f"sqlite:///{tmp_path / 's.db'}" if kind == "sqlite" else str(tmp_path / "s.journal")
    storage = get_storage(url)
    assert type(pickle.loads(pickle.dumps(storage))) is type(storage)  # spawned workers receive it so
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    if kind == "sqlite":  # the signal arrives inside SQLAlchemy, as the UPDATE goes out
        from sqlalchemy import event

        def before(conn, cursor, statement, *args):
            table = "trial_user_attributes" if write == "attr" else "trial_params"
            if table in statement and statement.lstrip().upper().startswith("INSERT"):
                _ctrl_c()

        event.listen(storage.engine, "before_cursor_execute", before)
    else:  # inside the journal's append, under its file lock
        backend = storage._backend
        append = backend.append_logs

        def interrupted_append(logs):
            _ctrl_c()
            return append(logs)

        backend.append_logs = interrupted_append
    with signals_held(), pytest.raises(KeyboardInterrupt):
        if write == "attr":
            trial.set_user_attr("key", "written")
        else:
            trial.suggest_int("x", 3, 3)
    again = get_storage(url)
    written = again.get_trial(trial._trial_id)  # the call happened whole
    assert (written.user_attrs if write == "attr" else written.params) == ({"key": "written"} if write == "attr"
                                                                          else {"x": 3})
    again.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)  # and nothing holds a lock
    if kind == "sqlite":
        con = sqlite3.connect(tmp_path / "s.db", timeout=0)
        con.execute("BEGIN IMMEDIATE")
        con.rollback()
