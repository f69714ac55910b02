"""Multi-fidelity (MO-ASHA): rungs, the ranking rule, study-file checks, and a study run to the end."""

from __future__ import annotations

import numpy as np
import pytest
from optuna.trial import TrialState

from hybridprune.cli import main

from helpers import load, load_benchmark, write_study

FIDELITY = "\n[fidelity]\nmin_steps = 1\nmax_steps = 4\neta = 2\n"


def _with_fidelity(path, table=FIDELITY):
    text = path.read_text().replace("[finetune]\nsteps = 2\n", "[finetune]\n")
    path.write_text(text + table)
    return path


def test_rungs_grow_by_eta_and_end_at_max():
    from hybridprune.search.config import FidelitySection

    assert FidelitySection(min_steps=50, max_steps=450, eta=3).rungs() == [50, 150, 450]
    assert FidelitySection(min_steps=100, max_steps=800, eta=3).rungs() == [100, 300, 800]
    assert FidelitySection(min_steps=10, max_steps=10, eta=2).rungs() == [10]
    assert FidelitySection().rungs() == [] and not FidelitySection().enabled
    assert FidelitySection(min_steps=20, max_steps=180, eta=3, bn_batches=8).rungs() == [0, 20, 60, 180]


def test_nondominated_fronts_and_priorities():
    from hybridprune.search.fidelity import nondominated_fronts, priorities

    # minimise both: (1, 1) dominates everything; (0, 5) and (5, 0) are not dominated by it
    pts = np.array([[1.0, 1.0], [2.0, 2.0], [0.0, 5.0], [5.0, 0.0], [3.0, 3.0]])
    fronts = nondominated_fronts(pts)
    assert sorted(fronts[0]) == [0, 2, 3] and fronts[1] == [1] and fronts[2] == [4]
    prio = priorities(pts)
    assert sorted(prio.tolist()) == list(range(5))
    assert prio[1] == 3 and prio[4] == 4  # second and third fronts come after the first
    assert prio[2] == 0  # the first front starts from the best in the first objective


def test_continues_follows_moasha():
    from hybridprune.search.fidelity import continues

    assert continues([9.0, 9.0], [], eta=3)  # the first result at a rung always goes on
    better = [[0.0, 0.0], [0.5, 0.5], [0.2, 0.1]]
    assert not continues([1.0, 1.0], better, eta=2)  # dominated by all: bottom of 4
    assert continues([-1.0, -1.0], better, eta=2)  # dominates all: top
    # a trade-off point on the first front ranks in the top half of four
    assert continues([-1.0, 5.0], [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]], eta=2)


@pytest.mark.parametrize("table, message", [
    ("min_steps = 10\nmax_steps = 5", "must not exceed"),
    ("min_steps = 1\nmax_steps = 4\neta = 1.5", "eta must be a number in [2, 1000]"),
    ("min_steps = 0\nmax_steps = 4", "fidelity.min_steps must be > 0"),
    ("min_steps = 2", "needs both min_steps and max_steps"),
    ("min_steps = 1\nmax_steps = 4\nrungs = 3", "unknown key"),
    ("bn_batches = 4", "give min_steps and max_steps too"),
    ("min_steps = 1\nmax_steps = 4\nbn_batches = -1", "fidelity.bn_batches must be a whole number >= 0"),
    ("min_steps = 1\nmax_steps = 4\nbn_batches = 1e9", "fidelity.bn_batches"),
    ("min_steps = 1\nmax_steps = 4\nbn_batches = 2\nbn_val_images = 0",
     "fidelity.bn_val_images must be a whole number >= 1"),
    ("min_steps = 1\nmax_steps = 4\nbn_batches = 2\nbn_val_images = \"all\"",
     "fidelity.bn_val_images must be a whole number"),
    ("min_steps = 1\nmax_steps = 4\nbn_val_images = 10", "give fidelity.bn_batches"),
    ("min_steps = 1\nmax_steps = 4\nreferences = \"all\"", "fidelity.references must be one of ['full', 'screen']"),
    ("min_steps = 1\nmax_steps = 4\nbn_batches = 2\ndefer_screen = \"yes\"",
     "fidelity.defer_screen must be true or false"),
    ("min_steps = 1\nmax_steps = 4\ndefer_screen = true", "give fidelity.bn_batches (that rung) too"),
    ("min_steps = 1\nmax_steps = 4\nfloor_aware = 1", "fidelity.floor_aware must be true or false"),
    ("min_steps = 1\nmax_steps = 4\nfloor_aware = true", "set [constraints] min_accuracy"),
    ("floor_aware = true", "give min_steps and max_steps (the rungs) too"),
    ("min_steps = 1\nmax_steps = 4\nrank = \"hv\"", "fidelity.rank must be one of ['epsilon-net', 'hypervolume', "
     "'hypervolume-per-cost']"),
    ("rank = \"hypervolume\"", "fidelity.rank orders the results at each rung; give min_steps and max_steps"),
    ("min_steps = 1\nmax_steps = 4\ncalibrate = \"yes\"", "fidelity.calibrate must be true or false"),
    ("calibrate = true", "fidelity.calibrate maps stopped trials' accuracy onto the last rung; give min_steps"),
    ("min_steps = 1\nmax_steps = 4\nbn_batches = 2\nscreen_latency_s = 0", "fidelity.screen_latency_s must be a "
     "number of seconds in [0.01, 600]"),
    ("min_steps = 1\nmax_steps = 4\nbn_batches = 2\nscreen_latency_s = \"short\"", "fidelity.screen_latency_s must"),
    ("min_steps = 1\nmax_steps = 4\nbn_batches = 2\nscreen_latency_s = nan", "fidelity.screen_latency_s must"),
    ("min_steps = 1\nmax_steps = 4\nscreen_latency_s = 0.3", "fidelity.screen_latency_s times candidates at the "
     "0-step screen; give fidelity.bn_batches"),
])
def test_bad_fidelity_tables_are_refused_before_training(tmp_path, capsys, table, message):
    path = _with_fidelity(write_study(tmp_path, name="bad"), f"\n[fidelity]\n{table}\n")
    assert main(["run", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


def test_fidelity_and_finetune_budget_together_is_refused(tmp_path, capsys):
    path = write_study(tmp_path, name="both")
    path.write_text(path.read_text() + FIDELITY)  # [finetune] steps = 2 is still there
    assert main(["run", str(path), "--no-progress"]) == 2
    assert "give the fine-tune budget once" in capsys.readouterr().err


def _check_rungs(study):
    complete = [t for t in study.get_trials(states=(TrialState.COMPLETE,)) if "duplicate_of" not in t.user_attrs]
    assert complete
    for t in complete:
        if "latency_gate" in t.user_attrs:  # timed over max_latency_ms on a loaded machine
            assert "rungs" not in t.user_attrs
            continue
        rungs = t.user_attrs["rungs"]
        assert [r["rung"] for r in rungs] == list(range(len(rungs)))
        assert [r["steps"] for r in rungs] == [1, 2, 4][: len(rungs)]
        assert all(r["decision"] == "continue" for r in rungs[:-1])
        assert rungs[-1]["decision"] in ("stop", "final")
        assert (rungs[-1]["decision"] == "final") == (len(rungs) == 3)
        # a stopped trial is a finished trial with the values of its last rung
        assert t.values[0] == rungs[-1]["accuracy"] and t.user_attrs["finetune_steps"] == rungs[-1]["steps"]
        if t.user_attrs.get("reference"):
            assert rungs[-1]["decision"] == "final"
    return complete


def test_multi_fidelity_study_one_worker(tmp_path):
    from hybridprune.search.fidelity import continues

    path = _with_fidelity(write_study(tmp_path, name="mf", trials=7))
    assert main(["run", str(path), "--no-progress"]) == 0
    complete = sorted(_check_rungs(load(path)[1]), key=lambda t: t.number)
    # one worker runs trials in number order: each decision is MO-ASHA's rule applied to the
    # results the earlier trials recorded at that rung
    for i, t in enumerate(complete):
        for r in t.user_attrs["rungs"]:
            if r["decision"] == "final" or t.user_attrs.get("reference"):
                continue
            others = [[-e["accuracy"], e["latency_ms"]] for u in complete[:i] for e in u.user_attrs["rungs"]
                      if e["rung"] == r["rung"]]
            expected = continues([-r["accuracy"], r["latency_ms"]], others, eta=2)
            assert r["decision"] == ("continue" if expected else "stop"), (t.number, r)


@pytest.mark.slow
def test_screened_reference_points_climb_the_rungs_like_any_candidate_but_the_baseline(tmp_path):
    from hybridprune.search.fidelity import continues

    path = _with_fidelity(write_study(tmp_path, name="screen", trials=8), FIDELITY + 'references = "screen"\n')
    assert main(["run", str(path), "--no-progress"]) == 0
    complete = sorted((t for t in load(path)[1].get_trials(states=(TrialState.COMPLETE,))
                       if "duplicate_of" not in t.user_attrs), key=lambda t: t.number)
    paper = [t for t in complete if t.user_attrs.get("reference") == "paper"]
    baseline = [t for t in complete if t.user_attrs.get("reference") == "baseline"]
    assert paper and len(baseline) == 1
    assert baseline[0].user_attrs["rungs"][-1]["decision"] == "final"  # the baseline still runs every rung
    for i, t in enumerate(complete):  # every paper point was decided by MO-ASHA's rule, as a candidate is
        if t in baseline:
            continue
        for r in (r for r in t.user_attrs["rungs"] if r["decision"] != "final"):
            others = [[-e["accuracy"], e["latency_ms"]] for u in complete[:i] for e in u.user_attrs["rungs"]
                      if e["rung"] == r["rung"]]
            expected = continues([-r["accuracy"], r["latency_ms"]], others, eta=2)
            assert r["decision"] == ("continue" if expected else "stop"), (t.number, r)


@pytest.mark.slow
def test_multi_fidelity_study_two_workers(tmp_path):
    path = _with_fidelity(write_study(tmp_path, name="mf2", trials=5, heartbeat=2, grace=60))
    assert main(["run", str(path), "--workers", "2", "--no-progress"]) == 0
    _check_rungs(load(path)[1])


@pytest.mark.slow
def test_multi_fidelity_study_on_ray(tmp_path):
    ray = pytest.importorskip("ray", reason="ray[tune] is not installed (pip install 'hybridprune[ray]')")
    pytest.importorskip("ray.tune")
    path = _with_fidelity(write_study(tmp_path, name="mfray", trials=4, study_extra="workers = 2"))
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        assert main(["run", str(path), "--backend", "ray", "--no-progress"]) == 0
    finally:
        ray.shutdown()
    complete = _check_rungs(load(path)[1])
    assert len(complete) == 4


def test_adaptive_batchnorm_changes_only_the_statistics():
    """The 0-step rung: BN running statistics re-estimated, every weight as it was, no gradient."""
    import torch

    from hybridprune.accuracy import adapt_batchnorm
    from hybridprune.data import load_dataset
    from hybridprune.models import create_model, get_model_spec

    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10).eval()
    data = load_dataset("digits", val_size=0.1)
    params = {k: v.clone() for k, v in model.named_parameters()}
    stats = {k: v.clone() for k, v in model.named_buffers() if "running" in k}
    momenta = [m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    seen = adapt_batchnorm(model, data.train, get_model_spec("resnet20").normalization, batches=3, batch_size=16)
    assert seen == 48 and not model.training
    assert all(torch.equal(v, params[k]) and v.grad is None for k, v in model.named_parameters())
    changed = [k for k, v in model.named_buffers() if "running" in k and not torch.equal(v, stats[k])]
    assert len(changed) == len(stats)  # every running mean and variance was re-estimated
    assert [m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)] == momenta


@pytest.mark.slow
def test_a_study_with_the_adaptive_bn_rung_ranks_candidates_before_any_fine_tune(tmp_path):
    table = "\n[fidelity]\nmin_steps = 1\nmax_steps = 4\neta = 2\nbn_batches = 2\nbn_val_images = 13\n"
    path = _with_fidelity(write_study(tmp_path, name="bn", trials=7), table)
    assert main(["run", str(path), "--no-progress"]) == 0
    _, study = load(path)
    complete = [t for t in study.get_trials(states=(TrialState.COMPLETE,)) if "duplicate_of" not in t.user_attrs]
    assert complete
    for t in complete:
        if "latency_gate" in t.user_attrs:  # timed over max_latency_ms on a loaded machine
            assert "rungs" not in t.user_attrs
            continue
        rungs = t.user_attrs["rungs"]
        assert [r["steps"] for r in rungs] == [0, 1, 2, 4][: len(rungs)]
        assert abs(rungs[0]["accuracy"] * 13 - round(rungs[0]["accuracy"] * 13)) < 1e-6  # scored on 13 images
        if rungs[-1]["steps"] == 0:  # stopped at the BN rung: never fine-tuned
            assert t.user_attrs["finetune_steps"] == 0 and "finetune" not in t.user_attrs["time_s"]
            assert "adapt_bn" in t.user_attrs["time_s"]
    assert any(t.user_attrs["rungs"][-1]["decision"] == "final" for t in complete)


def test_the_bn_rung_scores_its_validation_sample_and_later_rungs_the_whole_split(tmp_path):
    import torch

    from hybridprune.search.config import load_study_config
    from hybridprune.search.context import build_context

    table = "\n[fidelity]\nmin_steps = 1\nmax_steps = 4\neta = 2\nbn_batches = 2\nbn_val_images = 13\n"
    path = _with_fidelity(write_study(tmp_path, name="bnval"), table)
    ctx = build_context(load_study_config(path))
    try:
        sample = ctx.rung_val(0)
        assert len(sample) == 13 and len(ctx.data.val) == 64
        assert ctx.rung_val(0) is sample  # drawn once: every trial's rung 0 sees the same images
        assert ctx.rung_val(1) is ctx.data.val and ctx.rung_val(4) is ctx.data.val
        rows = {tuple(x.flatten().tolist()) for x in ctx.data.val.images}
        assert all(tuple(x.flatten().tolist()) in rows for x in sample.images)  # validation images, not others
        again = build_context(load_study_config(path))  # another worker draws the same sample
        assert torch.equal(again.rung_val(0).images, sample.images)
        again.close()
    finally:
        ctx.close()
    whole = build_context(load_study_config(_with_fidelity(write_study(tmp_path / "w", name="w"), table.replace(
        "bn_val_images = 13\n", ""))))
    assert whole.rung_val(0) is whole.data.val  # without bn_val_images the BN rung scores the whole split
    whole.close()


def test_proxy_benchmark_spreads_configurations_and_scores_rank_agreement():
    proxy = load_benchmark("proxy")
    criteria, orders = ["a", "b", "c", "d", "e"], ["channel_first", "layer_first"]
    points = proxy.configurations(24, criteria, orders, 0.7, 20)
    assert len(points) == 24 and points == proxy.configurations(24, criteria, orders, 0.7, 20)  # seeded
    assert {(p["criterion"], p["order"]) for p in points} == {(c, o) for c in criteria for o in orders}
    ratios, blocks = sorted(p["channel_ratio"] for p in points), sorted(p["pruned_blocks"] for p in points)
    assert 0 <= ratios[0] <= 0.05 and 0.65 <= ratios[-1] <= 0.7 and blocks[0] == 0 and blocks[-1] == 20
    assert all(abs(r / 0.05 - round(r / 0.05)) < 1e-9 for r in ratios)  # the study's step

    rows = [{"refined": 50 + i, "score": {"same": float(i), "reversed": float(-i), "flat": 1.0 + (i % 2)},
             "seconds": {"same": 1.0, "reversed": 2.0, "flat": 3.0}} for i in range(9)]
    stats = {s["proxy"]: s for s in proxy.summary(rows, ["same", "reversed", "flat"])}
    assert stats["same"]["spearman"] == pytest.approx(1) and stats["same"]["kendall"] == pytest.approx(1)
    assert stats["same"]["top_third"] == 1 and stats["reversed"]["top_third"] == 0
    assert stats["reversed"]["spearman"] == pytest.approx(-1) and stats["flat"]["seconds"] == 3.0


def test_proxy_rescores_the_bn_proxy_on_validation_samples(tmp_path):
    import argparse

    from hybridprune.search.config import load_study_config
    from hybridprune.search.context import build_context

    proxy = load_benchmark("proxy")
    ctx = build_context(load_study_config(write_study(tmp_path, name="rescore")))
    try:
        params = {"channel_ratio": 0.2, "pruned_blocks": 1, "criterion": "bn_scale", "order": "channel_first"}
        args = argparse.Namespace(bn_batches=2)
        row = proxy.rescore_bn(ctx, params, args, [13])
        again = proxy.rescore_bn(ctx, params, args, [13])
    finally:
        ctx.close()
    assert set(row["score"]) == {"bn", "bn13"} and row["score"] == again["score"]  # seeded: read again, the same
    assert abs(row["score"]["bn13"] * 13 / 100 - round(row["score"]["bn13"] * 13 / 100)) < 1e-6
    assert abs(row["score"]["bn"] * 64 / 100 - round(row["score"]["bn"] * 64 / 100)) < 1e-6  # the whole split
    assert all(v >= 0 for v in row["seconds"].values())


def test_proxy_refuses_an_empty_validation_sample(monkeypatch, capsys, tmp_path):
    proxy = load_benchmark("proxy")
    monkeypatch.setattr("sys.argv", ["proxy.py", "study.toml", "--out", str(tmp_path / "rows.jsonl"),
                                     "--bn-val-images", "0", "100"])
    with pytest.raises(SystemExit) as exc:
        proxy.main()
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --bn-val-images takes validation sample sizes >= 1")
    assert not (tmp_path / "rows.jsonl").exists() and not (tmp_path / "rows-bn-val.jsonl").exists()


def test_a_deferred_rung_lets_nothing_on_before_eta_results_and_then_only_the_top_floor_n_over_eta():
    from hybridprune.search.fidelity import continues, top_count

    assert [top_count(n, 3) for n in range(1, 10)] == [0, 0, 1, 1, 1, 2, 2, 2, 3]
    assert continues([-0.9, 1.0], [], eta=3) and not continues([-0.9, 1.0], [], eta=3, defer=True)
    assert not continues([-0.9, 1.0], [[-0.1, 2.0]], eta=3, defer=True)  # best of 2: still waits
    assert continues([-0.9, 1.0], [[-0.1, 2.0], [-0.2, 3.0]], eta=3, defer=True)  # best of 3 goes on
    # the stopping rule lets the second of three through (rank 1/3 <= 1/eta); deferred, only the first
    assert continues([-0.5, 2.5], [[-0.1, 2.0], [-0.9, 1.0]], eta=3)
    assert not continues([-0.5, 2.5], [[-0.1, 2.0], [-0.9, 1.0]], eta=3, defer=True)


def _screened(study, params, accuracy, latency, decision, **attrs):
    import optuna

    study.add_trial(optuna.trial.create_trial(
        params=params, distributions={"x": optuna.distributions.FloatDistribution(0, 1)},
        values=[accuracy, latency], user_attrs={"rungs": [{"rung": 0, "steps": 0, "accuracy": accuracy,
                                                           "latency_ms": latency, "decision": decision}], **attrs}))


def test_screened_trials_that_rank_in_later_are_promoted_once_with_their_labels():
    import optuna

    from hybridprune.search.fidelity import PROMOTED, promote, recorded_at, to_promote

    study = optuna.create_study(directions=["maximize", "minimize"])
    _screened(study, {"x": 0.1}, 0.9, 1.0, "stop", reference="paper")  # best, but stopped: it came first
    _screened(study, {"x": 0.2}, 0.2, 3.0, "stop")
    assert to_promote(study, eta=3) == []  # 2 screened: floor(2/3) = 0 go on
    _screened(study, {"x": 0.3}, 0.3, 2.0, "stop")
    assert [t.number for t in to_promote(study, eta=3)] == [0]  # 3 screened: the best of them
    assert promote(study, eta=3) == [0] and promote(study, eta=3) == []  # once, however often asked
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].system_attrs["fixed_params"] == {"x": 0.1}  # Optuna runs it next
    assert waiting[0].user_attrs == {"reference": "paper", "promoted_from": 0}
    # a promoted twin's screen is its original's: it is never ranked twice
    _screened(study, {"x": 0.1}, 0.9, 1.0, PROMOTED, promoted_from=0)
    assert len(recorded_at(study, 0, exclude_number=-1)) == 3
    # a trial that went on is not promoted again; a screened one that no longer ranks is not either
    _screened(study, {"x": 0.4}, 0.95, 0.5, "continue")
    _screened(study, {"x": 0.5}, 0.1, 9.0, "stop")
    assert to_promote(study, eta=3) == []  # top floor(5/3) = 1: the trial that went on


@pytest.mark.slow
@pytest.mark.parametrize("rank", ["epsilon-net", "hypervolume", "hypervolume-per-cost"])
def test_a_study_with_a_deferred_screen_fine_tunes_only_what_ranked_and_promotes_the_rest_later(tmp_path, rank):
    from hybridprune.search._optuna import study_system_attrs
    from hybridprune.search.fidelity import continues, priorities, top_count
    from hybridprune.search.fidelity_cost import fit, samples
    from hybridprune.search.latency import REFERENCE_ATTR

    table = (f"\n[fidelity]\nmin_steps = 1\nmax_steps = 2\neta = 2\nbn_batches = 2\ndefer_screen = true\n"
             f"rank = \"{rank}\"\n")
    path = _with_fidelity(write_study(tmp_path, name="defer", trials=9, study_extra="references = false"), table)
    # whether a stopped screen later ranks in depends on measured latencies; resuming the study (up to 27
    # trials) until one has been promoted keeps the promotion path under test on any machine
    for total in (9, 18, 27):
        assert main(["run", str(path), "--no-progress", "--trials", str(total)]) == 0
        _, study = load(path)
        if any(t.user_attrs.get("promoted_from") is not None for t in study.get_trials(states=(TrialState.COMPLETE,))):
            break
    assert study.user_attrs["fidelity"]["defer_screen"] is True  # the study records how it screened
    assert study.user_attrs["fidelity"].get("rank", "epsilon-net") == rank
    (reference_ms,) = study_system_attrs(study)[REFERENCE_ATTR].values()  # the baseline, measured once
    everything = study.get_trials(states=(TrialState.COMPLETE,))

    def costs(group, upto):
        """Per cost, each decision of trial ``upto`` read the line fit to the fine-tunes finished before
        it (one worker: every lower number), the MACs of those and of itself setting the fallback."""
        if rank != "hypervolume-per-cost":
            return {}
        line = fit(samples([s for s in everything if s.number < upto]),
                   [s.user_attrs.get("macs") for s in everything if s.number <= upto])
        return {"costs": np.array([line(s) for s in group])}

    def screen_prio(group, upto):
        pts = np.array([[-s.user_attrs["rungs"][0]["accuracy"], s.user_attrs["rungs"][0]["latency_ms"]] for s in group])
        return priorities(pts, rank=rank, ref_latency=reference_ms, **costs(group, upto))

    trials = sorted((t for t in study.get_trials(states=(TrialState.COMPLETE,)) if "duplicate_of" not in t.user_attrs
                     and "latency_gate" not in t.user_attrs), key=lambda t: t.number)
    by_number = {t.number: t for t in trials}
    promoted = [t for t in trials if t.user_attrs.get("promoted_from") is not None]
    screened = []  # (trial, -accuracy, latency) in the order one worker screened them
    for t in trials:
        rungs = t.user_attrs["rungs"]
        assert rungs[0]["steps"] == 0
        if t in promoted:
            original = by_number[t.user_attrs["promoted_from"]]
            assert original.number < t.number and original.params == t.params
            assert [r["decision"] for r in original.user_attrs["rungs"]] == ["stop"]  # stopped at the screen
            assert original.user_attrs["finetune_steps"] == 0 and "finetune" not in original.user_attrs["time_s"]
            assert rungs[0]["decision"] == "promoted" and rungs[0]["accuracy"] == original.user_attrs["rungs"][0][
                "accuracy"]
            assert t.user_attrs["latency_cached"] is True  # re-pruned to the same network: not timed again
            assert len(rungs) > 1  # it went on from the screen
            # when it was queued, its original ranked in the top floor(n / eta) of those screened by then
            # (queued by the last screened trial before it, whose line ranked them)
            seen = [s for s in trials if s.number < t.number and s not in promoted]
            prio = screen_prio(seen, seen[-1].number)
            assert prio[seen.index(original)] < top_count(len(seen), 2)
            continue
        screened.append(t)
        if rungs[0]["decision"] == "continue":  # it went on at once: it ranked among those screened before it
            assert screen_prio(screened, t.number)[-1] < top_count(len(screened), 2)
    assert screened[0].user_attrs["rungs"][0]["decision"] == "stop"  # the first no longer goes on unranked
    # the 1-step rung keeps the stopping rule, ranked the same way, among the trials before it
    for i, t in enumerate(trials):
        if len(t.user_attrs["rungs"]) < 2:  # stopped at the screen
            continue
        r = t.user_attrs["rungs"][1]
        before = [u for u in trials[:i] if len(u.user_attrs["rungs"]) > 1]
        others = [[-u.user_attrs["rungs"][1]["accuracy"], u.user_attrs["rungs"][1]["latency_ms"]] for u in before]
        expected = continues([-r["accuracy"], r["latency_ms"]], others, eta=2, rank=rank, ref_latency=reference_ms,
                             **costs([*before, t], t.number))
        assert r["decision"] == ("continue" if expected else "stop"), (t.number, r)
    assert promoted, f"nothing was promoted in {total} trials at eta 2"
    assert len({t.user_attrs["promoted_from"] for t in promoted}) == len(promoted)  # each at most once


def test_floor_aware_ranking_puts_results_no_better_than_a_known_failure_behind_the_rest():
    import optuna

    from hybridprune.search.fidelity import continues, decide, floor_bar, priorities

    pts = np.array([[-0.2, 1.0], [-0.7, 3.0], [-0.5, 2.0]])  # all on one front; the fastest scores 20%
    assert priorities(pts).tolist()[0] < 2  # unaware, the fast 20% result is near the top
    assert priorities(pts, np.array([True, False, False])).tolist() == [2, 0, 1]
    assert priorities(pts, np.array([True, True, True])).tolist() == priorities(pts).tolist()
    assert continues([-0.2, 1.0], [[-0.7, 3.0], [-0.5, 2.0]], eta=3)  # first on latency: goes on
    assert not continues([-0.2, 1.0], [[-0.7, 3.0], [-0.5, 2.0]], eta=3, bar=0.3)

    study = optuna.create_study(directions=["maximize", "minimize"])
    assert floor_bar(study, 0, 0.8) is None  # no evidence yet: nothing changes

    def done(screen, at_60, final, last="final"):
        rungs = [{"rung": 0, "steps": 0, "accuracy": screen, "latency_ms": 1.0, "decision": "continue"},
                 {"rung": 1, "steps": 60, "accuracy": at_60, "latency_ms": 1.0, "decision": "continue"},
                 {"rung": 2, "steps": 180, "accuracy": final, "latency_ms": 1.0, "decision": last}]
        study.add_trial(optuna.trial.create_trial(values=[final, 1.0], user_attrs={"rungs": rungs}))

    done(0.24, 0.66, 0.77)  # ran the whole ladder, ended below the floor
    done(0.29, 0.61, 0.71)
    done(0.73, 0.84, 0.85)  # above the floor: no evidence against anything
    done(0.60, 0.70, 0.75, last="stop")  # stopped early: not a whole ladder
    assert floor_bar(study, 0, 0.8) == 0.29 and floor_bar(study, 1, 0.8) == 0.66
    assert floor_bar(study, 0, None) is None and floor_bar(study, 0, 0.7) is None
    # a new screen at 25%: the fastest, so it would go on; floor-aware it ranks behind and stops
    assert decide(study, 99, 0, 3, 0.25, 0.1, 3, False) == "continue"
    assert decide(study, 99, 0, 3, 0.25, 0.1, 3, False, bar=floor_bar(study, 0, 0.8)) == "stop"
    assert decide(study, 99, 0, 3, 0.90, 0.1, 3, False, bar=floor_bar(study, 0, 0.8)) == "continue"


def test_exclusive_hypervolume_contributions_match_the_hypervolume_lost_without_each_point():
    from hybridprune.search._optuna import hypervolume
    from hybridprune.search.fidelity import hv_contributions

    rng = np.random.default_rng(0)
    for _ in range(20):
        acc = np.sort(rng.uniform(0.1, 0.9, 6))
        front = np.column_stack([-acc, np.sort(rng.uniform(0.2, 1.2, 6))])  # more accurate, slower: one front
        ref = np.array([-0.05, 1.0])  # some points lie beyond the reference latency
        front = front[rng.permutation(6)]  # rows in any order
        inside = np.minimum(front, ref)  # a point beyond the reference dominates nothing there
        whole = hypervolume(inside, ref)
        by_removal = [whole - hypervolume(np.delete(inside, i, axis=0), ref) for i in range(6)]
        assert np.allclose(hv_contributions(front, ref), by_removal)
    assert hv_contributions(np.array([[-0.5, 1.0], [-0.5, 1.0]]), np.array([0.0, 2.0])).tolist() == [0.0, 0.0]


def test_ranked_by_hypervolume_a_knee_point_goes_on_before_the_extremes():
    from hybridprune.search.fidelity import HYPERVOLUME, continues, priorities

    # a 60-step rung of a real run (seed 2, 2026-12-07): (accuracy, latency ratio to the baseline)
    rung = [(0.860, 0.831), (0.655, 0.236), (0.732, 0.452), (0.807, 0.618), (0.808, 0.446)]
    pts = np.array([[-a, r] for a, r in rung])
    net = priorities(pts)
    assert net[0] == 0 and net[1] == 1  # epsilon-net: the most accurate, then the fastest at 65.5%
    hv = priorities(pts, rank=HYPERVOLUME, ref_latency=1.0)
    assert hv[4] == 0  # 80.8% at 0.45x: the area it alone adds is the largest
    assert hv[1] == 2  # the fastest is the least accurate: it adds nothing, last of its front
    assert sorted(hv[[2, 3]].tolist()) == [3, 4]  # dominated results still come after the front
    own, others = [-0.808, 0.446], [[-a, r] for a, r in rung[:4]]
    assert not continues(own, others, eta=3)  # epsilon-net: 3rd of 5, outside the top 1/3
    assert continues(own, others, eta=3, rank=HYPERVOLUME, ref_latency=1.0)
    # a result slower than the baseline adds nothing either
    slow = np.array([[-0.9, 1.2], [-0.5, 0.5], [-0.3, 0.3]])
    assert priorities(slow, rank=HYPERVOLUME, ref_latency=1.0).tolist() == [1, 0, 2]
    with pytest.raises(ValueError, match="rank must be one of"):
        priorities(pts, rank="hv")
