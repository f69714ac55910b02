"""Ctrl+C, SIGTERM and a worker's stop signal are held back while the main thread is inside a storage call.

Python raises a signal's exception between any two bytecodes of the main thread. Landing inside
an Optuna storage call, a KeyboardInterrupt (a ``BaseException``, which Optuna's session clean-up
does not catch) or a worker's :class:`~hybridprune.search.local.ParentDied` can leave a SQLite
connection checked out in the middle of its transaction, still holding the database lock: the
trial's own FAIL record then waits for that lock and fails with "database is locked". A journal
file's lock can be left behind the same way. So the storages hybridprune opens
(:func:`~hybridprune.search.storage.get_storage`) run every public method through :func:`held`,
and the signal handlers call :func:`interrupt`: inside a storage call the exception is kept and
raised as soon as the outermost call returns, so each storage call either happens whole or not
at all. Other threads (heartbeats, progress) never receive signals and are not counted. A SIGTERM
to the command (``kill PID``, a service manager stopping it) stops it as a Ctrl+C does: it raises
:class:`Terminated`, a KeyboardInterrupt, so the running trial is recorded as interrupted and runs
again on resume, where the default action would end the process between two storage calls.

A handler that runs while the main thread is inside a finaliser (a ``__del__``, a weakref
callback of SQLAlchemy's, run by the garbage collector at any allocation) raises into code whose
exceptions Python prints as "Exception ignored in ..." and drops: the Ctrl+C would be lost and
the run would go on to the end. :func:`catch_swallowed` installs an unraisable hook that takes
such an exception back and raises it again in the main thread outside the finaliser: a
KeyboardInterrupt through a new SIGINT (``_thread.interrupt_main``, so :func:`held` still
applies), any other (a worker's ParentDied) at the main thread's next storage call, before it
starts.
"""

from __future__ import annotations

import _thread
import functools
import inspect
import signal
import sys
import threading
import time
from typing import Any, Callable

_depth = 0  # storage calls the main thread is inside
_pending: BaseException | None = None
MARK = "_hybridprune_interrupt"  # set on what interrupt() raises: the hook knows its own (no reference kept)
_redeliver: BaseException | None = None  # a swallowed KeyboardInterrupt, for the next _on_sigint
_swallowed: BaseException | None = None  # any other swallowed exception, for the next storage call
_previous_hook: Callable | None = None


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def interrupt(exc: BaseException) -> None:
    """Raise ``exc`` now, or, inside a storage call of the main thread, when that call returns."""
    global _pending
    if _depth and _in_main_thread():
        if _pending is None:  # the first signal decides; a second Ctrl+C changes nothing
            _pending = exc
        return
    _raise(exc)


def _raise(exc: BaseException) -> None:
    setattr(exc, MARK, True)
    raise exc


def held(fn: Callable) -> Callable:
    """``fn`` with :func:`interrupt`'s exceptions held back until it returns (main thread only)."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        global _depth, _pending, _swallowed
        if not _in_main_thread():
            return fn(*args, **kwargs)
        if _depth == 0 and _swallowed is not None:  # lost in a finaliser: raised before this call starts
            exc, _swallowed = _swallowed, None
            _raise(exc)
        _depth += 1
        try:
            return fn(*args, **kwargs)
        finally:
            _depth -= 1
            if _depth == 0 and _pending is not None:
                exc, _pending = _pending, None
                _raise(exc)

    return call


def held_class(base: type) -> type:
    """A subclass of ``base`` whose methods are :func:`held` (picklable when module-level).

    Private methods too, dunders aside: Optuna wraps an ``RDBStorage`` in a ``_CachedStorage``,
    which calls the backend's private ``_set_trial_param``, ``_create_new_trial``, ``_get_trials``
    (a Ctrl+C at a trial's first ``suggest_*`` landed inside the first of them). Nested calls only
    deepen the count, so holding both levels costs nothing.
    """
    names = {name for klass in base.__mro__ if klass is not object for name, v in vars(klass).items()
             if not (name.startswith("__") and name.endswith("__")) and inspect.isfunction(v)}
    ns = {name: held(getattr(base, name)) for name in sorted(names)}
    return type(f"Held{base.__name__}", (base,), {**ns, "__module__": __name__, "__doc__": base.__doc__})


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where a Ctrl+C would be: everything that stops cleanly on Ctrl+C does on it."""


def _on_sigterm(signum: int, frame: Any) -> None:
    interrupt(Terminated(f"received {signal.Signals(signum).name}"))


def _on_sigint(signum: int, frame: Any) -> None:
    global _redeliver
    exc, _redeliver = _redeliver, None
    interrupt(exc if exc is not None else KeyboardInterrupt())


def _unraisable(info: Any) -> None:
    global _swallowed
    exc = info.exc_value
    try:
        if not getattr(exc, MARK, False):
            (_previous_hook or sys.__unraisablehook__)(info)
        elif isinstance(exc, KeyboardInterrupt) and signal.getsignal(signal.SIGINT) is _on_sigint:
            _send_again(exc)
        else:
            _swallowed = exc
    except KeyboardInterrupt as again:  # the new SIGINT ran in here, or a second Ctrl+C did: once more
        if getattr(again, MARK, False):
            _send_again(again)


def _send_again(exc: KeyboardInterrupt) -> None:
    global _redeliver
    _redeliver = exc

    def later() -> None:
        # after a pause, so the handler runs in the main thread's own code: a SIGINT sent at once
        # would run it in this hook, still inside the finaliser (then caught above and sent again)
        time.sleep(0.01)
        _thread.interrupt_main(signal.SIGINT)

    threading.Thread(target=later, name="ctrl-c-again", daemon=True).start()


def catch_swallowed() -> None:
    """Install the unraisable hook that re-raises an :func:`interrupt` lost in a finaliser (idempotent)."""
    global _previous_hook
    if sys.unraisablehook is not _unraisable:
        _previous_hook = sys.unraisablehook
        sys.unraisablehook = _unraisable


class signals_held:  # noqa: N801 - used like a function: ``with signals_held():``
    """Context manager: while it is active, Ctrl+C and SIGTERM go through :func:`interrupt`.

    Each signal is taken over only in the main thread and only where it still has its default
    handler (SIGINT: Python's KeyboardInterrupt; SIGTERM: end the process); a worker process that
    ignores one, or a caller with a handler of its own, keeps it.
    """

    def __enter__(self) -> signals_held:
        self._previous: dict[int, Any] = {}
        if not _in_main_thread():
            return self
        for sig, default, handler in ((signal.SIGINT, signal.default_int_handler, _on_sigint),
                                      (signal.SIGTERM, signal.SIG_DFL, _on_sigterm)):
            if signal.getsignal(sig) is default:
                self._previous[sig] = signal.signal(sig, handler)
        if self._previous:
            catch_swallowed()
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


def _storages() -> dict[str, type]:
    from optuna.storages import RDBStorage
    from optuna.storages.journal import JournalStorage

    return {"rdb": held_class(RDBStorage), "journal": held_class(JournalStorage)}


_classes: dict[str, type] = {}


def __getattr__(name: str) -> type:
    # HeldRDBStorage / HeldJournalStorage, made on first use (optuna is imported lazily) and found
    # here again by pickle, which spawned workers receive their storage through
    kinds = {"HeldRDBStorage": "rdb", "HeldJournalStorage": "journal"}
    if name not in kinds:
        raise AttributeError(name)
    if not _classes:
        _classes.update(_storages())
    return _classes[kinds[name]]
