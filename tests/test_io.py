"""``hybridprune.io``: atomic files and folders, fsync, ordinary permissions."""

from __future__ import annotations

import os
import stat

import pytest

from hybridprune.errors import ConfigError
from hybridprune.io import atomic_dir, atomic_path


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_path_writes_with_ordinary_permissions(tmp_path, umask_022, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    dest = tmp_path / "sub" / "out.txt"
    with atomic_path(dest) as tmp:
        tmp.write_text("new")
        assert not dest.exists()
    assert dest.read_text() == "new"
    assert _mode(dest) == 0o644  # not mkstemp's 0600
    # the temporary file was flushed before the rename, the folder after it
    assert any(".out.txt." in p for p in synced) and synced[-1] == str(dest.parent)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["out.txt"]


def test_atomic_path_failure_keeps_old_file(tmp_path):
    dest = tmp_path / "out.txt"
    dest.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert dest.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_dir_creates_and_replaces_as_a_whole(tmp_path, umask_022):
    dest = tmp_path / "export"
    with atomic_dir(dest) as tmp:
        (tmp / "a.txt").write_text("1")
        (tmp / "b.txt").write_text("1")
        assert not dest.exists()
    assert _mode(dest) == 0o755
    with atomic_dir(dest) as tmp:
        (tmp / "a.txt").write_text("2")
        assert (dest / "b.txt").read_text() == "1"  # old folder intact until the swap
    assert sorted(p.name for p in dest.iterdir()) == ["a.txt"]  # stale b.txt gone
    assert (dest / "a.txt").read_text() == "2"
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no temporary or old folder left


def test_atomic_dir_failure_leaves_old_folder(tmp_path):
    dest = tmp_path / "export"
    dest.mkdir()
    (dest / "keep.txt").write_text("old")
    with pytest.raises(ValueError):
        with atomic_dir(dest) as tmp:
            (tmp / "keep.txt").write_text("half")
            raise ValueError("boom")
    assert (dest / "keep.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["export"]


def test_atomic_dir_refuses_to_replace_a_file(tmp_path):
    dest = tmp_path / "export"
    dest.write_text("a file")
    with pytest.raises(ConfigError, match="not a folder"):
        with atomic_dir(dest):
            pass
    assert dest.read_text() == "a file"


def test_atomic_dir_without_rename_exchange(tmp_path, monkeypatch):
    import hybridprune.io as hio

    monkeypatch.setattr(hio, "_exchange", lambda a, b: False)  # filesystems without RENAME_EXCHANGE
    dest = tmp_path / "export"
    for n in ("1", "2"):
        with atomic_dir(dest) as tmp:
            (tmp / f"{n}.txt").write_text(n)
    assert [p.name for p in dest.iterdir()] == ["2.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["export"]


def test_file_system_refusals_are_one_line_output_errors(tmp_path, monkeypatch):
    import errno

    from hybridprune.errors import OutputError

    (tmp_path / "keep.txt").write_text("old")
    with pytest.raises(OutputError, match=r"^cannot write .*keep.txt: No space left on device$"):
        with atomic_path(tmp_path / "keep.txt"):
            raise OSError(errno.ENOSPC, "No space left on device")  # what torch.save meets on a full disk
    assert (tmp_path / "keep.txt").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
    with pytest.raises(OutputError, match="it is a folder"):
        with atomic_path(tmp_path):
            pass


@pytest.mark.parametrize("argv, message", [
    (["train", "--model", "resnet8", "--dataset", "digits", "--steps", "1", "--out", "/proc/x/y.pt"],
     "error: --out /proc/x/y.pt is not writable"),
    (["train", "--model", "resnet8", "--dataset", "digits", "--steps", "1", "--out", "a" * 300 + ".pt"],
     "error: --out: the name aaaa"),
    (["train", "--model", "resnet8", "--dataset", "digits", "--steps", "1", "--out", "file.txt/m.pt"],
     "error: --out file.txt/m.pt cannot be created: file.txt is a file, not a folder"),
    (["train", "--model", "resnet8", "--dataset", "digits", "--steps", "1", "--out", "."],
     "error: --out . is a folder, not a file"),
    (["prune", "--model", "resnet8", "--ratio", "0.1", "--out", "."], "error: --out . is a folder, not a file"),
    (["latency", "model.onnx", "--json", "."], "error: --json . is a folder, not a file"),
])
def test_unusable_output_paths_are_refused_before_any_work(tmp_path, monkeypatch, capsys, argv, message):
    from hybridprune.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "model.onnx").write_text("not read: the output is checked first")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith(message) and len(err.splitlines()) == 1, err
    assert "training" not in captured.out and "test:" not in captured.out  # refused before, not after, the work
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
