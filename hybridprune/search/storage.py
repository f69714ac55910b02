"""Storage URLs, the storage factory and the artifact store.

``get_storage`` is the one factory that normalises what users give:

* ``None`` -> an in-memory storage (tests, benchmarks);
* ``"sqlite:///..."``, ``"postgresql+psycopg2://..."`` or any SQLAlchemy URL -> ``RDBStorage``
  with Optuna's heartbeat, so a trial whose worker died is failed after ``grace_period`` seconds
  and re-queued by ``RetryHeartbeatStaleTrialCallback``;
* a path ending in ``.log`` / ``.journal`` (or ``journal:///path``) -> ``JournalStorage`` on a
  ``JournalFileBackend`` (no heartbeat: Optuna implements it for RDB storages only);
* an Optuna storage object -> itself.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hybridprune.errors import ConfigError, MissingDependencyError
from hybridprune.io import check_writable  # noqa: F401 - re-exported: the study's writers check with it

JOURNAL_SUFFIXES = (".log", ".journal", ".jsonl")


def check_storage_url(url: str) -> None:
    """Refuse a storage whose study would not persist: an in-memory SQLite database.

    Raises:
        ConfigError: for ``sqlite://``, ``sqlite:///:memory:`` and SQLite URIs with ``mode=memory``.
    """
    u = url.strip().lower()
    if u == "sqlite://" or u.startswith("sqlite:///:memory:") or (u.startswith("sqlite:") and "mode=memory" in u):
        raise ConfigError(f"storage {url!r} is an in-memory SQLite database: nothing would persist and worker "
                          f"processes would not share it; give a file (sqlite:///study.db, a journal file "
                          f"study.log) or leave the storage out (default: run_dir/study.db)")


def resolve_storage_url(url: str | None, base: str | os.PathLike | None = None) -> str | None:
    """The one normaliser of storage specs given as text (study files, ``--storage``, ``get_storage``).

    ``sqlite:///relative.db``, ``journal://relative.log`` and a journal file path (ending in
    :data:`JOURNAL_SUFFIXES`) are made absolute against ``base`` (default: the working folder);
    other URLs (``sqlite:////abs.db``, ``postgresql+psycopg2://...``) are returned as they are.

    Args:
        url: The storage spec; ``None`` or ``""`` gives ``None`` (the default storage).
        base: Folder that relative paths resolve against (a study file's folder).

    Returns:
        The normalised spec, or ``None``.

    Raises:
        ConfigError: for an in-memory SQLite database, or a path that is neither a URL nor a
            journal file.
    """
    if not url:
        return None
    check_storage_url(url)
    root = Path(base) if base is not None else Path.cwd()
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        return f"sqlite:///{(root / url[len('sqlite:///'):]).resolve()}"
    if url.startswith("journal://"):
        return f"journal://{(root / Path(url[len('journal://'):]).expanduser()).resolve()}"
    if "://" not in url:
        if not url.endswith(JOURNAL_SUFFIXES):
            raise ConfigError(
                f"storage {url!r} is neither a SQLAlchemy URL (sqlite:///file.db, postgresql+psycopg2://...) "
                f"nor a journal file ending in {JOURNAL_SUFFIXES}")
        return str((root / Path(url).expanduser()).resolve())
    return url


def storage_file(url: str) -> Path | None:
    """The local file a storage URL writes (SQLite database or journal file), or ``None``."""
    if url.startswith("journal://") or ("://" not in url and url.endswith(JOURNAL_SUFFIXES)):
        return Path(url.removeprefix("journal://"))
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///"):].split("?", 1)[0])
    return None


def get_storage(
    storage: Any = None,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int | None = 2,
):
    """Normalise a storage spec into an Optuna storage.

    Args:
        storage: ``None``, a URL / journal path string, or an ``optuna.storages.BaseStorage``.
        heartbeat_interval: Seconds between heartbeats of a running trial (RDB only).
        grace_period: Seconds without heartbeat after which a running trial is failed.
        max_retry: How often a trial failed that way is re-queued (``None``: forever).

    Returns:
        An ``optuna.storages.BaseStorage``.

    Raises:
        ConfigError: for a URL SQLAlchemy cannot use.
        MissingDependencyError: when the database driver (e.g. psycopg2) is missing.
    """
    import optuna

    if storage is None:
        return optuna.storages.InMemoryStorage()
    if isinstance(storage, optuna.storages.BaseStorage):
        return storage
    if not isinstance(storage, str) or not storage:
        raise ConfigError(f"storage must be a database URL or a journal file path, got {storage!r}")
    storage = resolve_storage_url(storage)
    if storage.startswith("journal://") or ("://" not in storage and storage.endswith(JOURNAL_SUFFIXES)):
        from optuna.storages.journal import JournalFileBackend

        from hybridprune.search.interrupts import HeldJournalStorage  # whole calls only (Ctrl+C)

        path = Path(storage.removeprefix("journal://"))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return HeldJournalStorage(JournalFileBackend(str(path)))
        except OSError as exc:
            raise ConfigError(f"cannot open journal storage {path}: {exc.strerror or exc}") from None
    engine_kwargs: dict[str, Any] = {}
    if storage.startswith("sqlite:///"):
        db = storage_file(storage)
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the folder of SQLite storage {db}: {exc.strerror or exc}") from None
        engine_kwargs = {"connect_args": {"timeout": LOCK_WAIT_S}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    callback = None
    if heartbeat_interval:
        callback = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
    import threading

    waiting = threading.Timer(QUIET_WAIT_MS / 1000, _say_waiting, args=(storage_file(storage),)) \
        if storage.startswith("sqlite:///") else None
    try:
        if waiting is not None:  # opening reads the schema: a writer's lock holds it up, silently
            waiting.daemon = True
            waiting.start()
        from hybridprune.search.interrupts import HeldRDBStorage  # whole calls only (Ctrl+C)

        rdb = HeldRDBStorage(
            storage,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=callback,
        )
        if storage.startswith("sqlite:"):
            _serialize_sqlite(rdb.engine)
        return rdb
    except ImportError as exc:
        raise MissingDependencyError(
            f"storage {storage.split('://')[0]}:// needs a database driver ({exc.__cause__ or exc}); "
            f"for PostgreSQL install it with: pip install 'hybridprune[postgres]'"
        ) from None
    except Exception as exc:  # sqlalchemy ArgumentError / OperationalError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot open storage {redact_url(storage)}: {first[:200]}") from None
    finally:
        if waiting is not None:
            waiting.cancel()


_SAID_WAITING: list[bool] = []


def _say_waiting(db: Any) -> None:
    """One line, once per process, when another process's lock on a SQLite study file holds us up."""
    if not _SAID_WAITING:
        _SAID_WAITING.append(True)
        sys.stderr.write(f"waiting for the study database {db}: another process holds its write lock "
                         f"(up to {LOCK_WAIT_S} s)\n")
        sys.stderr.flush()


LOCK_WAIT_S = 120  # how long a SQLite transaction waits for another process's write lock
QUIET_WAIT_MS = 5000  # waits up to this long pass silently (busy workers); a longer one says so once


def _serialize_sqlite(engine: Any) -> None:
    """Make every SQLite transaction ``BEGIN IMMEDIATE``.

    Optuna pops a queued trial by reading it as WAITING and then writing RUNNING in one
    transaction, relying on ``SELECT ... FOR UPDATE``, which SQLite ignores: with pysqlite's deferred
    transactions two worker processes can both read WAITING and both run the same trial (seen with
    two workers on the enqueued reference points). Taking the write lock at BEGIN serialises those
    read-then-write transactions, as the row lock does on PostgreSQL.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    from sqlalchemy.exc import OperationalError

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql(f"PRAGMA busy_timeout = {QUIET_WAIT_MS}")
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except OperationalError as exc:
            if "locked" not in str(exc):
                raise
            _say_waiting(engine.url.database)  # once per process: one line, not one per query
            connection.exec_driver_sql(f"PRAGMA busy_timeout = {LOCK_WAIT_S * 1000 - QUIET_WAIT_MS}")
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners existed


def redact_url(url: str) -> str:
    """Hide a password in a database URL (for banners and messages)."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':')[0]}:***@{host}"
    return url


def get_artifact_store(directory: str | os.PathLike):
    """The Optuna artifact store (a ``FileSystemArtifactStore``) the dashboard also reads.

    Args:
        directory: Where the artifacts live (created if missing).

    Returns:
        ``optuna.artifacts.FileSystemArtifactStore``.
    """
    from optuna.artifacts import FileSystemArtifactStore

    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the artifact folder {path}: {exc.strerror or exc}") from None
    return FileSystemArtifactStore(str(path))


def artifact_exists(store: Any, artifact_id: str) -> bool:
    """Whether ``store`` still holds the artifact ``artifact_id`` (a storage can outlive its store)."""
    from optuna.artifacts.exceptions import ArtifactNotFound

    try:
        store.open_reader(artifact_id).close()
    except ArtifactNotFound:
        return False
    return True


def upload(owner: Any, store: Any, path: str | os.PathLike) -> str:
    """Upload the file ``path`` to ``store`` as an artifact of ``owner`` (a trial or a study);
    returns the artifact id."""
    from optuna.artifacts import upload_artifact

    return upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=owner)


def store_model(owner: Any, store: Any, model: Any, normalization: Any, folder: Path, stem: str, *,
                record: Any, input_size: tuple[int, ...], batch_size: int, metrics: dict) -> dict[str, str]:
    """Save ``model`` as a checkpoint and a static-batch ONNX file in ``folder``, upload both.

    The one way a trial and ``refine`` store a model.

    Returns:
        ``{"checkpoint": artifact id, "onnx": artifact id}``.
    """
    from hybridprune.checkpoints import save_checkpoint
    from hybridprune.evaluators import export_onnx

    model = model.cpu().eval()
    ckpt = save_checkpoint(Path(folder) / f"{stem}.pt", model, normalization, record=record, input_size=input_size,
                           metrics=metrics)
    onnx = export_onnx(model, Path(folder) / f"{stem}.onnx", (batch_size, *input_size))
    from hybridprune.search import trials as T

    return {T.ARTIFACT_CHECKPOINT: upload(owner, store, ckpt), T.ARTIFACT_ONNX: upload(owner, store, onnx)}
