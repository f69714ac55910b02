"""Search efficiency: sampler streams per worker, reused duplicates, the latency gate and cache."""

from __future__ import annotations

import json

import pytest
import torch
from optuna.trial import TrialState

from hybridprune.cli import main

from helpers import load, load_benchmark, write_study

SMALL_SPACE = """
[space]
channel_ratio = {{ low = 0.0, high = 0.1, step = 0.1 }}
pruned_blocks = 0
criterion = "weight_magnitude"
order = "channel_first"
"""


def _study(tmp_path, name, *, trials=3, extra="", study_extra="", max_latency="1000.0"):
    path = write_study(tmp_path, name=name, trials=trials, study_extra=study_extra)
    text = path.read_text().replace("max_latency_ms = 1000.0", f"max_latency_ms = {max_latency}")
    path.write_text(text + extra)
    return path


def test_worker_seeds_differ_by_worker_and_start_and_repeat():
    from hybridprune.search.study import worker_seed

    seeds = {worker_seed(0, w, s) for w in range(4) for s in range(4)}
    assert len(seeds) == 16
    assert worker_seed(7, 1, 3) == worker_seed(7, 1, 3)
    assert worker_seed(0, 0, 0) != worker_seed(1, 0, 0)


def test_same_params_compares_floats_and_keys():
    from hybridprune.search.reuse import same_params

    assert same_params({"a": 0.30000000000000004, "b": 2}, {"a": 0.3, "b": 2})
    assert not same_params({"a": 0.3}, {"a": 0.35})
    assert not same_params({"a": 0.3}, {"a": 0.3, "b": 1})
    assert not same_params({"c": "x"}, {"c": "y"})


def test_duplicate_configurations_are_reused_not_fine_tuned(tmp_path):
    # two configurations exist; the random sampler proposes them again and again
    path = write_study(tmp_path, name="dups", trials=2, study_extra="references = false")
    text = path.read_text()
    start, end = text.index("[space]"), text.index("[finetune]")
    path.write_text(text[:start] + SMALL_SPACE.format() + "\n" + text[end:])
    assert main(["run", str(path), "--no-progress"]) == 0
    _, study = load(path)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    evaluated = [t for t in complete if "duplicate_of" not in t.user_attrs]
    assert sorted(t.params["channel_ratio"] for t in evaluated) == [0.0, 0.1]
    by_number = {t.number: t for t in complete}
    for t in complete:
        if "duplicate_of" in t.user_attrs:
            twin = by_number[t.user_attrs["duplicate_of"]]
            assert twin.params == t.params and t.values == twin.values and t.constraints == twin.constraints
            assert "time_s" not in t.user_attrs  # nothing was pruned, measured or fine-tuned
            assert t.user_attrs["artifacts"] == twin.user_attrs["artifacts"]


def test_latency_gate_skips_fine_tuning_and_marks_infeasible(tmp_path, capsys):
    path = _study(tmp_path, "gate", trials=3, max_latency="0.000001")
    assert main(["run", str(path), "--no-progress"]) == 0
    _, study = load(path)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 3
    for t in complete:
        assert "not fine-tuned" in t.user_attrs["latency_gate"]
        assert "finetune" not in t.user_attrs["time_s"] and "artifacts" not in t.user_attrs
        assert t.values[0] == t.user_attrs["accuracy_before"] == t.user_attrs["accuracy"]
        assert t.constraints["latency"] > 0  # infeasible for samplers, pareto and dashboard
    assert study.best_trials == []
    capsys.readouterr()
    assert main(["status", str(path)]) == 0
    assert "3 trial(s) over the latency budget not fine-tuned" in capsys.readouterr().out


def test_identical_architectures_share_one_measurement(tiny_study):
    _, study = load(tiny_study)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    by_key: dict[str, list] = {}
    for t in complete:
        by_key.setdefault(t.user_attrs["latency_key"], []).append(t)
    for group in by_key.values():
        assert [t.user_attrs["latency_cached"] for t in group].count(False) == 1
        assert len({t.user_attrs["latency_ms"] for t in group}) == 1
    # 30% of channels and 1 block in either order prune to the same graph: one measurement for both
    paper = [t for t in complete if t.user_attrs.get("reference") == "paper"]
    assert len({t.user_attrs["latency_key"] for t in paper}) == 1


def test_architecture_key_ignores_weights_and_which_block(tmp_path):
    from hybridprune.evaluators import export_onnx
    from hybridprune.models import create_model
    from hybridprune.pruning import HybridConfig, prune_model
    from hybridprune.search.latency_cache import architecture_key

    def key(model, name):
        return architecture_key(export_onnx(model, tmp_path / f"{name}.onnx", (1, 3, 32, 32), check=False))

    torch.manual_seed(0)
    a = create_model("resnet20", num_classes=10)
    torch.manual_seed(1)
    b = create_model("resnet20", num_classes=10)
    assert key(a, "a") == key(b, "b")
    x = torch.zeros(1, 3, 32, 32)
    narrow = prune_model(a, HybridConfig(channel_ratio=0.5, pruned_blocks=0, criterion="weight_magnitude"), x).model
    assert key(narrow, "narrow") != key(a, "a2")
    # different blocks of the same stage removed: the same network, the same key; another stage: not
    import copy

    from hybridprune.pruning.blocks import remove_blocks

    def without(model, block):
        model = copy.deepcopy(model)
        remove_blocks(model, [block], x)
        return model

    assert key(without(a, "layer1.0"), "l10") == key(without(b, "layer1.2"), "l12")
    assert key(without(a, "layer1.0"), "l10b") != key(without(a, "layer3.1"), "l31")


def test_latency_cache_lives_in_the_storage(tmp_path):
    import optuna

    from hybridprune.search.latency_cache import LatencyCache

    url = f"sqlite:///{tmp_path / 'c.db'}"
    cache = LatencyCache(optuna.create_study(study_name="c", storage=url))
    assert cache.get("k") is None
    cache.put("k", {"median_ms": 1.5})
    assert LatencyCache(optuna.load_study(study_name="c", storage=url)).get("k") == {"median_ms": 1.5}


def test_isolated_timer_measures_in_another_process(tmp_path):
    import os

    from hybridprune.errors import LatencyError
    from hybridprune.evaluators import export_onnx
    from hybridprune.models import create_model
    from hybridprune.search.latency_cache import IsolatedTimer

    onnx = export_onnx(create_model("resnet20", num_classes=10), tmp_path / "m.onnx", (1, 3, 32, 32), check=False)
    timer = IsolatedTimer("onnxruntime", {"threads": 1, "warmup_runs": 1, "min_runs": 3, "max_runs": 5})
    try:
        result = timer.measure(onnx, input_shape=(3, 32, 32), batch_size=1, precision="fp32")
        assert result.median_ms > 0 and result.backend == "onnxruntime"
        assert result.extra["measured_in_pid"] != os.getpid()
        with pytest.raises(LatencyError):
            timer.measure(tmp_path / "missing.onnx", input_shape=(3, 32, 32), batch_size=1, precision="fp32")
    finally:
        timer.close()


def test_a_corrupt_latency_cache_entry_is_measured_again(tmp_path):
    """An entry that is not a latency result (written by hand, another version) is a cache miss,
    not a crash: the trial measures again, completes, and the entry is rewritten."""
    from hybridprune.search._optuna import set_study_system_attr, study_system_attrs
    from hybridprune.search.trials import LATENCY_CACHE_PREFIX

    path = write_study(tmp_path, name="corrupt", trials=2)  # the baseline, then 30% / 1 block channel first
    assert main(["run", str(path), "--no-progress"]) == 0
    _, study = load(path)
    keys = [k for k in study_system_attrs(study) if k.startswith(LATENCY_CACHE_PREFIX)]
    assert keys
    for key in keys:
        set_study_system_attr(study, key, "garbage")
    assert main(["run", str(path), "--no-progress", "--trials", "3"]) == 0  # 30% / 1 block layer first: same graph
    _, study = load(path)
    third = study.trials[2]
    assert third.state == TrialState.COMPLETE and third.user_attrs["latency_cached"] is False
    assert third.user_attrs["latency_key"] == study.trials[1].user_attrs["latency_key"]
    assert isinstance(study_system_attrs(study)[LATENCY_CACHE_PREFIX + third.user_attrs["latency_key"]], dict)


def test_a_study_resumed_on_another_cpu_times_its_architectures_again_on_the_first_basis(tmp_path, monkeypatch,
                                                                                          capsys):
    """A cached ratio is one CPU's: on another machine the same graph is timed again next to the
    baseline, each trial records its machine, the reference baseline latency stays the first one,
    and ``status`` lists both machines."""
    from hybridprune.evaluators import timing
    from hybridprune.search._optuna import study_system_attrs
    from hybridprune.search.latency import REFERENCE_ATTR

    path = write_study(tmp_path, name="machines", trials=2)  # the baseline, then 30% / 1 block channel first
    assert main(["run", str(path), "--no-progress"]) == 0
    here = timing.machine_description()
    monkeypatch.setattr(timing, "machine_description", lambda: "Other CPU (2 CPUs); flags: avx avx2 fma")
    assert main(["run", str(path), "--no-progress", "--trials", "3"]) == 0  # 30% / 1 block layer first: same graph
    _, study = load(path)
    first, third = study.trials[1], study.trials[2]
    assert first.user_attrs["latency_machine"] == here and first.user_attrs["latency_cached"] is False
    assert third.user_attrs["latency_machine"] == "Other CPU (2 CPUs); flags: avx avx2 fma"
    assert third.user_attrs["latency_cached"] is False  # not the first CPU's ratio
    assert third.user_attrs["latency_key"] != first.user_attrs["latency_key"]
    assert len(study_system_attrs(study)[REFERENCE_ATTR]) == 1  # one basis for the whole study
    capsys.readouterr()
    assert main(["status", str(path)]) == 0
    out = capsys.readouterr().out
    assert "latency timed on 2 machines" in out and "Other CPU (2 CPUs); flags: avx avx2 fma (1 trial)" in out


def test_an_unexpected_error_fails_its_trial_with_the_reason_and_the_study_goes_on(tmp_path, monkeypatch):
    """A full disk while a trial stores its model (any exception nobody planned for) fails that
    trial with a one-line reason; the next trials still run and the command succeeds."""
    import errno

    from hybridprune.search import objective

    real, calls = objective.store_model, []

    def full_disk_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(objective, "store_model", full_disk_once)
    path = write_study(tmp_path, name="fulldisk", trials=3)
    assert main(["run", str(path), "--no-progress"]) == 0
    _, study = load(path)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.FAIL) == 1 and states.count(TrialState.COMPLETE) == 2  # failed trials count
    failed = study.get_trials(states=(TrialState.FAIL,))[0]
    assert failed.user_attrs["fail_reason"] == "OSError: [Errno 28] No space left on device"


def test_search_benchmark_reports_and_draws_from_its_rows_without_running(tmp_path, capsys):
    """``--no-run`` reads the committed rows only: the hypervolume-vs-wall-time report and figure come
    from them, the floor measure counts only trials above the floor, and a missing run is refused."""
    import json

    bench = load_benchmark("search")
    study = write_study(tmp_path, name="bench")
    rows = tmp_path / "rows.jsonl"

    def rec(mode, seed, trials):
        return {"key": f"bench/{mode}/nsga2/{seed}", "budget_s": 100.0, "full_steps": 4, "rungs": [4],
                "bn_batches": 0, "bn_val_images": None, "train": 10, "val": 5, "machine": "test CPU",
                "savings": "", "trials": [{"t": t, "acc": a, "lat_ms": r, "ratio": r, "total_s": 10.0,
                                           "finetune_s": 5.0} for t, a, r in trials]}

    plain = [(60.0, 0.9, 0.5)]  # one trial above the floor: HV (0.9 - 0.8) * (1 - 0.5) = 0.05
    mf = [(20.0, 0.3, 0.1), (30.0, 0.9, 0.5), (90.0, 0.95, 0.6)]  # reaches it at 30 s; the first is below
    deferred = [(25.0, 0.95, 0.4)]  # the deferred screen's mode is paired with plain too
    rows.write_text("".join(json.dumps(rec(m, s, t)) + "\n" for m, t in (("plain", plain), ("mf", mf),
                                                                         ("mf-defer", deferred)) for s in (0, 1)))
    seeded = rec("mf", 0, [(40.0, 0.9, 0.5)])  # a warm-started space that ran no plain search of its own
    with rows.open("a") as f:
        f.write(json.dumps({**seeded, "key": "bench+ws4/mf/nsga2/0"}) + "\n")
    png = tmp_path / "figs" / "hv.png"
    common = ["--study", str(study), "--budget-s", "100", "--samplers", "nsga2", "--modes", "plain", "mf", "mf-defer",
              "--bn-batches", "2", "--out", str(rows), "--no-run", "--floor", "0.8"]
    bench.main(common + ["--seeds", "0", "1", "--plot", str(png)])
    out = capsys.readouterr().out
    assert "plain's final 0.0500 reached by mf after 30 s (0.30 of the budget)" in out
    assert "plain's final 0.0500 reached by mf-defer after 25 s (0.25 of the budget)" in out
    for bad, message in ((["--modes", "plain", "mfd"],
                          "error: --modes takes plain, mf, mf-defer, mf-defer-floor, mf-defer-hv, mf-defer-hv-floor, "
                          "mf-defer-hv-cal, "
                          "mf-defer-hvc, got plain mfd"),
                         (["--modes", "mf-defer"], "error: --modes mf-defer defers the decisions of the 0-step"),
                         (["--modes", "mf-defer-floor", "--bn-batches", "2"],  # the tiny study sets no floor
                          "error: --modes mf-defer-floor ranks by the study's accuracy floor;"),
                         (["--modes", "plain", "mf-defer-hv-floor", "--bn-batches", "2"],
                          "error: --modes mf-defer-hv-floor ranks by the study's accuracy floor;"),
                         (["--modes", "mf", "--screen-latency-s", "0.3"],  # no 0-step rung to time
                          "error: --screen-latency-s must be in [0.01, 600] seconds and needs --bn-batches"),
                         (["--modes", "mf", "--bn-batches", "2", "--screen-latency-s", "0"],
                          "error: --screen-latency-s must be in [0.01, 600] seconds")):
        with pytest.raises(SystemExit) as exit_:
            bench.main(["--study", str(study), "--out", str(rows), "--no-run", *bad])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.startswith(message) and err.count("\n") == 1
    assert "| bench | plain | nsga2 | 0.0500, 0.0500 | 0.0500 | 1, 1 |" in out
    bench.main(["--study", str(study), "--budget-s", "100", "--samplers", "nsga2", "--modes", "mf", "--seeds", "0",
                "--bn-batches", "2", "--spaces", f"{study}+ws4", "--out", str(rows), "--no-run", "--floor", "0.8"])
    out = capsys.readouterr().out  # measured against the unseeded space's plain run
    assert "bench+ws4 nsga2 seed 0: plain's final (bench) 0.0500 reached by mf after 40 s (0.40 of the budget)" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = rows.read_text()
    with pytest.raises(SystemExit) as exit_:
        bench.main(common + ["--seeds", "0", "2"])
    assert exit_.value.code == 2 and rows.read_text() == before
    err = capsys.readouterr().err
    assert err.startswith("error: --no-run") and "bench/plain/nsga2/2" in err and err.count("\n") == 1
    assert bench._space_entry("s.toml+ws8", None) == ("s.toml", 8)  # one space seeded, beside unseeded ones
    assert bench._space_entry("s.toml", 3) == ("s.toml", 3) and bench._space_entry("s.toml", None) == ("s.toml", None)
    with pytest.raises(SystemExit):
        bench._space_entry("s.toml+ws2000", None)
    assert "0-1000 points, got 2000" in capsys.readouterr().err


def test_search_bound_finds_the_cheapest_subset_that_reaches_plain_s_final_front(tmp_path, capsys):
    bound = load_benchmark("search_bound")

    def trial(t, acc, ratio, ft, rungs=None):
        return {"t": t, "acc": acc, "ratio": ratio, "finetune_s": ft, "total_s": ft + 5, "rungs": rungs or []}

    # drawn in this order; C is under the floor (adds nothing), D adds a sliver at 0.9x
    pool = [trial(105, 0.85, 0.5, 100), trial(160, 0.84, 0.4, 50), trial(175, 0.70, 0.3, 10),
            trial(380, 0.86, 0.9, 200)]
    got = bound.oracle(pool, 0.8, 5.0, target=bound.hypervolume([(0.85, 0.5), (0.84, 0.4), (0.86, 0.9)], 0.8),
                       within=200)
    # plain's front needs A, B and D: 350 s of fine-tuning, and the four screens up to D
    assert got["ft_only"]["time_to_target"] == 350 and got["screened"]["time_to_target"] == 370
    # by 200 s the best is A and B (150 s, or 160 with their two screens): 0.04 * 0.6 + 0.01 * 0.5
    assert got["ft_only"]["hv_within"] == pytest.approx(0.029) and got["screened"]["hv_within"] == pytest.approx(0.029)
    screens = [{"t": 1, "acc": 0.3, "ratio": 0.5, "finetune_s": 0, "total_s": s, "rungs": [[0, 0.3, "stop"]]}
               for s in (4.0, 6.0, 8.0)]
    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(json.dumps(r) for r in (
        {"key": "sp/plain/nsga2/0", "budget_s": 600.0, "trials": pool},
        {"key": "sp/mf-defer/nsga2/0", "budget_s": 600.0, "trials": screens})) + "\n")
    assert bound.screen_cost([json.loads(line) for line in rows.read_text().splitlines()], "sp", "0") == 6.0
    bound.main([str(rows), "--floor", "0.8"])
    bad = tmp_path / "bad.jsonl"  # a trial without its fine-tune seconds
    bad.write_text(rows.read_text() + json.dumps({"key": "sp/plain/nsga2/1", "budget_s": 600.0,
                                                  "trials": [{"t": 1, "acc": 0.9, "ratio": 0.5, "total_s": 3}]}))
    (tmp_path / "key.jsonl").write_text(json.dumps({"key": "plain-0", "budget_s": 600.0, "trials": []}) + "\n")
    assert "| sp/plain/nsga2/0 | 600 s | 0.0300 | 6.0 | 350 s (0.58) | 374 s (0.62) | 0.0290 | 0.0290 |" \
        in capsys.readouterr().out
    for argv, message in (([str(tmp_path / "none.jsonl")], "is not a file"),
                          ([str(rows), "--floor", "1.5"], "--floor is an accuracy fraction"),
                          ([str(rows), "--screen-s", "-1"], "--screen-s is seconds per screen"),
                          ([str(bad)], "line 3 is not a benchmarks/search.py run (KeyError: 'finetune_s')"),
                          ([str(tmp_path / "key.jsonl")], "line 1 is not a benchmarks/search.py run (ValueError")):
        with pytest.raises(SystemExit) as exit_:
            bound.main(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.startswith("error:") and message in err and err.count("\n") == 1
