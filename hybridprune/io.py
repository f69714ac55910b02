"""File helpers shared by every writer: nothing is ever left half-written.

- :func:`atomic_path`: write one file beside its destination, ``fsync`` it, rename it into place.
- :func:`atomic_dir`: build a whole folder beside its destination and swap it into place at once.
- :func:`device_lock`: an exclusive ``flock`` on a lock file, so processes of one machine take turns.
- :func:`check_writable`: refuse an output path that cannot be written, before any work.

Writing errors of the file system (full disk, read-only, a name too long) become one-line
:class:`~hybridprune.errors.OutputError` messages.

Outputs get ordinary permissions (``0666``/``0777`` minus the umask), not the ``0600``/``0700``
of :mod:`tempfile`.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from hybridprune.errors import ConfigError, OutputError


def _umask() -> int:
    """The process umask, read without changing it where the OS allows."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # not thread-safe, hence only the fallback
    os.umask(mask)
    return mask


def _fsync_path(path: Path, directory: bool = False) -> None:
    """``fsync`` a file (or, best effort, a directory entry list)."""
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        if directory:
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:  # some filesystems refuse fsync on directories
            raise
    finally:
        os.close(fd)


NAME_MAX = 255  # bytes per path component on Linux file systems (ext4, xfs, tmpfs)


def _check_names(p: Path, what: str) -> None:
    for part in p.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise ConfigError(f"{what}: the name {part[:40]}... is {len(os.fsencode(part))} bytes long; file systems "
                              f"allow at most {NAME_MAX} bytes per name")


def check_writable(path: str | os.PathLike, what: str, *, directory: bool = True) -> None:
    """Raise ConfigError unless ``path`` (a folder, or a file with ``directory=False``) can be
    created or written. Creates nothing: it probes the nearest existing folder with an
    anonymous temporary file.

    Args:
        path: The folder or file.
        what: Its name in messages (e.g. ``"study.run_dir"``).
        directory: Whether ``path`` is a folder.

    Raises:
        ConfigError: naming ``what`` when it is a file where a folder is needed (or the
            reverse), sits below a file, has a name the file system cannot hold, or is not
            writable.
    """
    p = Path(path)
    _check_names(p, what)
    if p.exists():
        if directory and not p.is_dir():
            raise ConfigError(f"{what} {p} is a file, not a folder; give a folder (it is created if missing)")
        if not directory and p.is_dir():
            raise ConfigError(f"{what} {p} is a folder, not a file")
        if not directory and not os.access(p, os.R_OK | os.W_OK):
            raise ConfigError(f"{what} {p} is not writable")
        folder = p if directory else p.parent
    else:
        folder = p.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise ConfigError(f"{what} {p} cannot be created: {folder} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ConfigError(f"{what} {p} is not writable ({folder}: {exc.strerror or exc}); "
                          f"give a folder you can write") from None



@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    The file is flushed to disk (``fsync``) before the rename and the directory after it, so a
    crash leaves either the old file or the complete new one. The result gets mode
    ``0666 & ~umask`` like any file the process creates.

    Args:
        path: Final destination.
        suffix: Suffix of the temporary file (some writers dispatch on it, e.g. ``.onnx``).

    Returns:
        A context manager yielding the temporary :class:`Path` to write.

    Raises:
        OutputError: when the file system refuses (``path`` is a folder, the disk is full, the
            name is too long), also for an ``OSError`` of the block; whatever else the block
            raises as it is. The temporary file is removed and ``path`` is untouched.
    """
    dest = Path(path)
    try:
        if dest.is_dir():
            raise IsADirectoryError(21, "it is a folder; give a file path")
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name[:200]}.", suffix=suffix or dest.suffix, dir=dest.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {dest}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        _fsync_path(tmp_path)
        os.replace(tmp_path, dest)
        _fsync_path(dest.parent, directory=True)
    except OSError as exc:  # full disk, quota, a name too long: one line, and the old file stays
        raise OutputError(f"cannot write {dest}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with Linux ``renameat2(RENAME_EXCHANGE)``; False if unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: the filesystem/kernel cannot exchange
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, marker: str | None = None) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; swap it into place as a whole if the block succeeds.

    Readers see either the complete old folder or the complete new one, never a mix of old and
    new files. On Linux the swap is one ``renameat2(RENAME_EXCHANGE)``; elsewhere the old folder
    is renamed aside and the new one renamed in (two renames; the old one is restored if the
    second fails). Every file is ``fsync``-ed first; the folder gets mode ``0777 & ~umask``.

    Args:
        path: Final destination folder (replaced entirely if it exists).
        marker: A file name that every folder this writer makes contains (``record.json`` of an
            export, ``front.json`` of a published front). An existing folder is then replaced only
            when it is empty or holds that file: a folder of anything else is never deleted.

    Returns:
        A context manager yielding the temporary folder :class:`Path` to fill.

    Raises:
        ConfigError: if ``path`` exists and is not a folder, or is a folder this writer did not make.
        Whatever the block raises; the temporary folder is removed and ``path`` is untouched.
    """
    dest = Path(path)
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"{dest} exists and is not a folder; refusing to replace it")
    if marker is not None and dest.is_dir() and any(dest.iterdir()) and not (dest / marker).is_file():
        raise ConfigError(f"{dest} is a folder with other files in it (no {marker}, so not written by this "
                          f"command); refusing to replace it: give a new or empty folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        for root, _dirs, files in os.walk(tmp):
            for f in files:
                if not os.path.islink(os.path.join(root, f)):
                    _fsync_path(Path(root) / f)
            _fsync_path(Path(root), directory=True)
        if not dest.exists():
            os.rename(tmp, dest)
        elif not _exchange(tmp, dest):
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old.", dir=dest.parent))
            os.rmdir(old)
            os.rename(dest, old)
            try:
                os.rename(tmp, dest)
            except BaseException:
                os.rename(old, dest)
                raise
            tmp = old  # removed below
        _fsync_path(dest.parent, directory=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def device_lock(path: str | os.PathLike | None) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``path`` so that local workers measure one at a time.

    Args:
        path: The lock file (created if missing); ``None`` means no locking (remote agents queue
            requests themselves).

    Returns:
        A context manager.
    """
    if path is None:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
