"""CLI of the search service: run, status, pareto, refine, select, dashboard (STUDY = the study TOML)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from hybridprune.commands.search_views import (
    _console,
    _log_finished,
    _log_started,
    _progress_lines,  # noqa: F401 - tests read the progress lines from here
    _refined_table,
    _summary,
)
from hybridprune.recipe import REFINE_DISTILL_WEIGHT
from hybridprune.search.storage import redact_url


def _study():
    """The STUDY argument of every command of this group."""
    return typer.Argument(..., metavar="STUDY", help="Study file (TOML).")


def _storage():
    """The ``--storage`` option of every command of this group."""
    return typer.Option(None, help="Storage URL (overrides the study file).")


def _open(study_file: str, storage: str | None, *, read_only: bool = False):
    """The study's config and its existing study; ``read_only`` commands import no model code."""
    from hybridprune.search.service import load
    from hybridprune.search.study import open_study

    cfg = load(study_file, storage=storage, import_models=not read_only)
    return cfg, open_study(cfg, create=False)


def run_cmd(
    study_file: str = _study(),
    trials: Optional[int] = typer.Option(None, help="Run until the study has this many finished trials."),
    workers: Optional[int] = typer.Option(None, help="Local worker processes on the same study."),
    backend: Optional[str] = typer.Option(None, help="local or ray."),
    storage: Optional[str] = _storage(),
    progress: bool = typer.Option(True, help="Show a live progress view."),
    time_budget: Optional[str] = typer.Option(
        None, help="Wall time for this study, e.g. 90m, 2h, 1h30m or seconds: no trial starts after it "
                   "(default: the study's [study] time_budget; on a resume, what is left of it)."),
) -> None:
    """Run (or resume) a multi-objective study and show its Pareto set."""
    from rich.live import Live

    from hybridprune.search import service
    from hybridprune.search.pareto import pareto_rows, plot_html, plot_png, rich_table
    from hybridprune.search.study import counts, open_study

    console = _console()
    cfg = service.load(study_file, trials=trials, workers=workers, backend=backend, storage=storage,
                       time_budget=time_budget)
    console.print(f"study {cfg.name}: {cfg.study.trials} trials, sampler {cfg.sampler.name}, "
                  f"{cfg.study.workers} worker(s), backend {cfg.study.backend}, "
                  f"storage {redact_url(cfg.storage_url)}",
                  soft_wrap=True, markup=False)
    cfg.check_writable()  # (prepare checks again) before any data is read
    from hybridprune.search.split import split_warning

    if (warning := split_warning(cfg)) is not None:
        console.print(warning, soft_wrap=True, markup=False)
    live = None
    if progress and console.is_terminal:
        live = Live(console=console, refresh_per_second=2, transient=False)
    watcher: dict = {"seen": set(), "started": set()}

    def poll() -> None:
        if not progress:
            return
        study = watcher.get("study") or watcher.setdefault("study", open_study(cfg, create=False))
        if live is None:  # logs / CI: one line per started and per finished trial, progress every 30 s
            _log_finished(study, watcher["seen"], console)
            _log_started(study, watcher["started"], console)
            for line in _progress_lines(study, watcher.setdefault("progress", {})):
                console.print(line, soft_wrap=True, markup=False)
            return
        from rich.console import Group
        from rich.text import Text

        c = counts(study)
        table = rich_table(pareto_rows(study)[:8], f"{cfg.name}: {c.complete} done, {c.failed} failed, "
                           f"{c.running} running / {cfg.study.trials} - current front")
        live.update(Group(table, *(Text(line) for line in _progress_lines(study))))

    from hybridprune.search.local import WorkersFailed

    try:
        if live is not None:
            with live:
                study = service.run(cfg, on_poll=poll)
        else:
            study = service.run(cfg, on_poll=poll)
    except WorkersFailed as exc:  # not bad input (exit 2): the run can be resumed as it is
        from hybridprune.cli import fail

        fail(exc, code=1)
    except KeyboardInterrupt:
        typer.echo(f"interrupted: finished trials are saved in {redact_url(str(cfg.storage_url))}; run the same "
                   f"command again to resume (the interrupted trials run first)", err=True)
        raise typer.Exit(130) from None
    _summary(study, cfg, console)
    png = plot_png(study, cfg.run_dir / "pareto.png")
    html = plot_html(study, cfg.run_dir / "pareto.html")
    console.print(f"plots: {png} {html}")

def status_cmd(
    study_file: str = _study(),
    storage: Optional[str] = _storage(),
) -> None:
    """Show trial counts and the current Pareto set of a study."""

    cfg, study = _open(study_file, storage, read_only=True)
    _summary(study, cfg, _console())

def pareto_cmd(
    study_file: str = _study(),
    storage: Optional[str] = _storage(),
    out: Optional[Path] = typer.Option(None, help="Directory for pareto.png / pareto.html (default: run dir)."),
    as_json: bool = typer.Option(False, "--json", help="Print the Pareto set as JSON."),
) -> None:
    """Table of the Pareto set plus PNG and HTML plots of accuracy vs latency."""
    from dataclasses import asdict

    from hybridprune.io import check_writable
    from hybridprune.search.pareto import pareto_rows, plot_html, plot_png, reference_rows, rich_table

    cfg, study = _open(study_file, storage, read_only=True)
    if out and not as_json:
        check_writable(out, "--out")
    rows = pareto_rows(study) + reference_rows(study)
    if as_json:
        typer.echo(json.dumps([asdict(r) for r in rows], indent=2))
        return
    console = _console()
    console.print(rich_table(rows, f"Pareto set of {cfg.name}"))
    directory = Path(out) if out else cfg.run_dir
    png, html = plot_png(study, directory / "pareto.png"), plot_html(study, directory / "pareto.html")
    console.print(f"plots: {png} {html}")

def select_cmd(
    study_file: str = _study(),
    max_latency_ms: Optional[float] = typer.Option(
        None, help="Latency budget in ms (the study's latency statistic)."),
    max_latency_ratio: Optional[float] = typer.Option(
        None, help="Latency budget as a fraction of the unpruned baseline trial's latency (e.g. 0.8)."),
    min_accuracy: Optional[float] = typer.Option(
        None, help="Minimum validation accuracy, a fraction (default: the study's constraints.min_accuracy)."),
    export: Path = typer.Option(..., help="Directory for model.pt, model.onnx, record.json, REPORT.md."),
    allow_reference: bool = typer.Option(False, "--allow-reference",
                                         help="A reference model ([references] models) may be exported too."),
    storage: Optional[str] = _storage(),
) -> None:
    """Export the most accurate trial that meets the latency budget."""

    from hybridprune.errors import ConfigError
    from hybridprune.search.pareto import rich_table
    from hybridprune.search.select import NoFeasibleTrial, basis, choose, drop_warning, export_trial, reference_note

    if (max_latency_ms is None) == (max_latency_ratio is None):
        raise ConfigError("give exactly one of --max-latency-ms and --max-latency-ratio")
    if max_latency_ms is not None and not max_latency_ms > 0:
        raise ConfigError(f"--max-latency-ms must be > 0, got {max_latency_ms}")
    if max_latency_ratio is not None and not max_latency_ratio > 0:
        raise ConfigError(f"--max-latency-ratio must be > 0, got {max_latency_ratio}")
    if min_accuracy is not None and not 0 <= min_accuracy <= 1:
        raise ConfigError(f"--min-accuracy must be a fraction in [0, 1], got {min_accuracy}")
    cfg, study = _open(study_file, storage)
    console = _console()
    if min_accuracy is None:
        min_accuracy = cfg.constraints.min_accuracy  # the study's own constraint, if any
    on = basis(study)
    if max_latency_ratio is not None:
        if on.baseline is None:
            from hybridprune.search.select import baseline_latency

            baseline_latency(study)  # raises: no baseline trial to scale the ratio by
        max_latency_ms = max_latency_ratio * on.baseline_ms
        console.print(f"budget: {max_latency_ratio:g} x the reference baseline latency {on.baseline_ms:.3f} ms = "
                      f"{max_latency_ms:.3f} ms", soft_wrap=True, markup=False)
    console.print(on.describe(), soft_wrap=True, markup=False)
    try:
        chosen = choose(study, max_latency_ms, min_accuracy, on=on, allow_reference=allow_reference)
    except NoFeasibleTrial as exc:
        if exc.closest:
            _console(stderr=True).print(rich_table(exc.closest, f"closest trials ({on.name} basis; none meets the "
                                                                f"budget)"))
        raise  # cli.main prints "error: ..." and exits 2

    trial = chosen.trial

    def test_top1(path: Path) -> float:
        from hybridprune.accuracy import evaluate
        from hybridprune.checkpoints import load_checkpoint
        from hybridprune.search.context import load_data

        loaded = load_checkpoint(path, cfg.model.name)
        return evaluate(loaded.model, load_data(cfg).test, loaded.normalization, device="cpu",
                        precision=cfg.finetune.precision).top1

    sel = export_trial(study, trial, cfg.artifact_dir, export, test_top1=test_top1,
                       refined_dir=cfg.refined_artifact_dir)
    test = f", test top-1 {100 * sel.test_top1:.2f}%" if sel.test_top1 is not None else ""
    console.print(f"selected trial {trial.number}: validation top-1 {100 * chosen.accuracy:.2f}%{test}, latency "
                  f"{chosen.latency_ms:.3f} ms ({chosen.ratio:.3f} x the baseline); wrote "
                  f"{', '.join(sel.files.values())}", soft_wrap=True, markup=False)
    note = reference_note(on, chosen, max_latency_ms)
    if note:
        console.print(note, soft_wrap=True, markup=False)
    warning = drop_warning(on, chosen)
    if warning:
        _console(stderr=True).print(warning, soft_wrap=True, markup=False)

def refine_cmd(
    study_file: str = _study(),
    top: Optional[int] = typer.Option(None, help="Refine the K most accurate feasible trials (default: the "
                                                 "Pareto set)."),
    max_latency_ms: Optional[float] = typer.Option(None, help="Refine the feasible trials under this latency."),
    max_latency_ratio: Optional[float] = typer.Option(
        None, help="Refine the feasible trials under this fraction of the baseline trial's latency."),
    trial: Optional[list[int]] = typer.Option(None, help="Refine this trial (repeatable), e.g. reference points "
                                                         "to compare with."),
    epochs: float = typer.Option(1.0, help="Further fine-tuning epochs per trial."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate (default: the study's finetune.lr)."),
    distill: bool = typer.Option(True, help="Distil from the study's unpruned model."),
    distill_weight: float = typer.Option(REFINE_DISTILL_WEIGHT, help="Weight of the distillation loss (the "
                                         "hard labels get the rest); the default is chosen on evidence: "
                                         "benchmarks/RESULTS.md, distillation vs plain fine-tune."),
    rounds: int = typer.Option(5, help="Interleaved latency rounds (each model next to the baseline)."),
    storage: Optional[str] = _storage(),
) -> None:
    """Fine-tune the best trials longer, score them on the test split and re-time them against the baseline."""
    from hybridprune.errors import ConfigError
    from hybridprune.search import trials as T
    from hybridprune.search.context import build_context
    from hybridprune.search.pareto import plot_refined
    from hybridprune.search.refine import RefineOptions, candidates, refine
    from hybridprune.search.select import baseline_latency
    from hybridprune.search.service import remove_stale_temp_dirs

    options = RefineOptions(epochs=epochs, lr=lr, distill=distill, rounds=rounds, distill_weight=distill_weight)
    if max_latency_ms is not None and max_latency_ratio is not None:
        raise ConfigError("give at most one of --max-latency-ms and --max-latency-ratio")
    if max_latency_ratio is not None and not max_latency_ratio > 0:
        raise ConfigError(f"--max-latency-ratio must be > 0, got {max_latency_ratio}")
    cfg, study = _open(study_file, storage)
    if max_latency_ratio is not None:
        max_latency_ms = max_latency_ratio * baseline_latency(study)
    trials = candidates(study, top=top, max_latency_ms=max_latency_ms, numbers=trial or None)
    console = _console()
    console.print(f"refining {len(trials)} trials of {cfg.name} ({', '.join(str(t.number) for t in trials)}; "
                  f"baseline {trials[0].number}) for {epochs:g} epochs", soft_wrap=True, markup=False)
    ctx = build_context(cfg, train_if_missing=False)
    remove_stale_temp_dirs(cfg.run_dir)  # what a killed refine or run left behind
    from hybridprune.search.split import describe_split

    console.print(f"accuracies below: {describe_split(cfg, 'test', len(ctx.data.test))}; "
                  f"{describe_split(cfg, 'val', len(ctx.data.val))}", soft_wrap=True, markup=False)

    def said(t, rec, reused) -> None:
        how = "reused (already refined)" if reused else "fine-tuned"
        search = T.accuracy(t)
        worse = (f"; WORSE than its search result ({100 * search:.2f}% validation top-1 after the search's "
                 f"fine-tune)" if rec[T.R_VAL] < search else "")
        console.print(f"trial {t.number} {how}: test top-1 {100 * rec[T.R_TEST]:.2f}%, "
                      f"val top-1 {100 * rec[T.R_VAL]:.2f}%{worse}", soft_wrap=True, markup=False)

    def timing(done: int, total: int) -> None:
        console.print(f"re-timing {len(trials)} models against the baseline: round {done}/{total}", soft_wrap=True,
                      markup=False)

    try:
        rows = refine(ctx, study, trials, options, on_trial=said, on_round=timing)
    finally:
        ctx.close()
    console.print(_refined_table(rows, f"Refined trials of {cfg.name} ({epochs:g} more epochs, "
                                       f"{rounds} interleaved rounds)"))
    png = plot_refined(rows, cfg.run_dir / "refined_pareto.png", f"{cfg.name}: refined trials")
    console.print(f"plot: {png}", soft_wrap=True, markup=False)

def publish_cmd(
    study_file: str = _study(),
    out: Path = typer.Option(..., help="Results folder to write (new, empty, or an earlier publish)."),
    rounds: int = typer.Option(7, help="Interleaved latency rounds (each model next to the baseline)."),
    also: list[str] = typer.Option(
        [], "--also", help="Study file of another search of the same model and split, refined with the same "
        "budget, whose refined models join the front (repeatable)."),
    storage: Optional[str] = _storage(),
) -> None:
    """Publish the refined front: ONNX files re-scored on the test split and re-timed, front.json, plot, README."""
    from hybridprune.errors import ConfigError
    from hybridprune.search.config import MAX_ROUNDS
    from hybridprune.search.publish import publish

    if not 1 <= rounds <= MAX_ROUNDS:
        raise ConfigError(f"--rounds must be in [1, {MAX_ROUNDS}], got {rounds}")
    cfg, study = _open(study_file, storage)
    others = [_open(f, None) for f in also]
    console = _console()
    front = publish(cfg, study, out, rounds=rounds, also=others,
                    say=lambda s: console.print(s, soft_wrap=True, markup=False))
    console.print(f"published {len(front)} models of {cfg.name} to {out} (front.json, front.png, README.md)",
                  soft_wrap=True, markup=False)


def dashboard_cmd(
    study_file: str = _study(),
    host: str = typer.Option("127.0.0.1", help="Bind address (loopback by default)."),
    port: int = typer.Option(8080, help="TCP port."),
    storage: Optional[str] = _storage(),
    token: Optional[str] = typer.Option(
        None, help="Require this token (default $HYBRIDPRUNE_DASHBOARD_TOKEN); open the URL with ?token=..."),
) -> None:
    """Serve optuna-dashboard on the study's storage and artifacts."""
    from hybridprune.search.dashboard import serve_dashboard
    from hybridprune.search.service import load

    cfg = load(study_file, storage=storage, import_models=False)  # it serves records, it runs no model
    serve_dashboard(cfg, host=host, port=port, token=token)


def register(app: typer.Typer) -> None:
    """Add ``run``, ``status``, ``pareto``, ``select``, ``refine``, ``publish`` and ``dashboard`` to ``app``."""
    app.command("run")(run_cmd)
    app.command("status")(status_cmd)
    app.command("pareto")(pareto_cmd)
    app.command("select")(select_cmd)
    app.command("refine")(refine_cmd)
    app.command("publish")(publish_cmd)
    app.command("dashboard")(dashboard_cmd)
