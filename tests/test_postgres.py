"""A study on PostgreSQL storage (the multi-machine set-up), when a server is available.

Set ``HYBRIDPRUNE_TEST_POSTGRES_URL`` (e.g. ``postgresql+psycopg2://postgres@127.0.0.1:55432/db``);
``.ci/run`` starts a throwaway server on loopback when it can install PostgreSQL.
"""

from __future__ import annotations

import os
import uuid

import pytest
from optuna.trial import TrialState

from helpers import write_study

pytestmark = pytest.mark.slow
URL = os.environ.get("HYBRIDPRUNE_TEST_POSTGRES_URL")


@pytest.fixture
def postgres_url() -> str:
    if not URL:
        reason = "HYBRIDPRUNE_TEST_POSTGRES_URL is not set (no PostgreSQL server to test against)"
        print(f"SKIP test_postgres: {reason}")
        pytest.skip(reason)
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed (pip install 'hybridprune[postgres]')")
    return URL


def test_two_workers_on_postgres(tmp_path, postgres_url):
    import optuna

    from hybridprune.cli import main
    from hybridprune.search.service import load
    from hybridprune.search.study import open_study

    name = f"pg-{uuid.uuid4().hex[:8]}"
    path = write_study(tmp_path, name=name, trials=3, heartbeat=2, grace=60)
    try:
        assert main(["run", str(path), "--storage", postgres_url, "--workers", "2", "--no-progress"]) == 0
        cfg = load(str(path), storage=postgres_url)
        assert cfg.storage_url == postgres_url
        study = open_study(cfg, create=False)
        complete = study.get_trials(states=(TrialState.COMPLETE,))
        assert 3 <= len(complete) <= 4
        assert all((cfg.artifact_dir / t.user_attrs["artifacts"]["checkpoint"]).is_file() for t in complete)
        assert not (tmp_path / "run" / "study.db").exists()  # nothing went to the default SQLite file
        assert main(["status", str(path), "--storage", postgres_url]) == 0
    finally:
        try:
            optuna.delete_study(study_name=name, storage=postgres_url)
        except KeyError:
            pass


def test_bad_postgres_url_is_a_clear_error(tmp_path, postgres_url, capsys):
    from hybridprune.cli import main

    path = write_study(tmp_path, name="badpg")
    bad = postgres_url.rsplit("/", 1)[0] + "/no_such_database_xyz"
    assert main(["status", str(path), "--storage", bad]) == 2
    err = capsys.readouterr().err
    assert "cannot open storage" in err and "no_such_database_xyz" in err
