"""``--backend ray``: Ray Tune runs the trials through OptunaSearch on the study's own storage."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState

from helpers import load, write_study

pytestmark = pytest.mark.slow


@pytest.fixture
def local_ray():
    ray = pytest.importorskip("ray", reason="ray[tune] is not installed (pip install 'hybridprune[ray]')")
    pytest.importorskip("ray.tune")
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_backend_writes_the_same_study(tmp_path, local_ray):
    from hybridprune.cli import main

    path = write_study(tmp_path, name="onray", trials=3, study_extra="workers = 2")
    assert main(["run", str(path), "--backend", "ray", "--no-progress"]) == 0
    cfg, study = load(path)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 3
    # references enqueued by hybridprune were asked by OptunaSearch first
    assert sorted(t.user_attrs.get("reference") for t in complete) == ["baseline", "paper", "paper"]
    for t in complete:  # what OptunaSearch does not write, the Tune trial wrote itself
        assert t.values == [t.user_attrs["accuracy"], t.user_attrs["latency_ms"]]
        assert t.constraints == {"latency": pytest.approx(t.values[1] - 1000.0)}
        assert (cfg.artifact_dir / t.user_attrs["artifacts"]["checkpoint"]).is_file()
        assert t.user_attrs["config"]["channel_ratio"] == t.params["channel_ratio"]
    # re-running with the local backend sees a finished study and adds nothing
    assert main(["run", str(path), "--no-progress"]) == 0
    assert len(load(path)[1].get_trials(states=(TrialState.COMPLETE,))) == 3
