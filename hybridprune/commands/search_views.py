"""What the search commands print: the study summary, per-trial log lines, live progress lines
and the refined table (the commands themselves are in :mod:`hybridprune.commands.search`)."""

from __future__ import annotations

from hybridprune.search.storage import redact_url


def _console(stderr: bool = False):
    """A rich console; wide when output is not a terminal (logs, CI) so tables do not wrap."""
    from rich.console import Console

    console = Console(stderr=stderr)
    return console if console.is_terminal else Console(stderr=stderr, width=150)


def _summary(study, cfg, console) -> None:
    from hybridprune.search.pareto import pareto_rows, reference_rows, rich_table
    from hybridprune.search.study import counts, savings

    c = counts(study)
    stale = f" (+{c.stale} stopped with their worker)" if c.stale else ""
    waiting = (f"{c.waiting} reference points still queued for a larger --trials" if c.done >= cfg.study.trials
               else f"{c.waiting} waiting")
    console.print(f"study {cfg.name}: {c.complete} complete ({c.duplicates} reused duplicates), "
                  f"{c.failed} failed{stale}, {c.running} running, {waiting} "
                  f"(target {cfg.study.trials} evaluated); "
                  f"storage {redact_url(cfg.storage_url)}", soft_wrap=True, markup=False)
    console.print(savings(study, cfg.fidelity.max_steps).line(), soft_wrap=True, markup=False)
    from hybridprune.search.budget import describe

    if (time_line := describe(study)) is not None:
        console.print(time_line, soft_wrap=True, markup=False)
    from hybridprune.search.latency import machines_line

    if (machines := machines_line(study)) is not None:
        console.print(machines, soft_wrap=True, markup=False)
    console.print(rich_table(pareto_rows(study) + reference_rows(study),
                             f"Pareto set of {cfg.name} (accuracy max, latency min) and reference models"))


def _log_started(study, seen: set, console) -> None:
    """One line per trial that started running since the last call."""
    from optuna.trial import TrialState

    from hybridprune.search import trials as T

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.number in seen:
            continue
        seen.add(t.number)
        what = [f"reference {t.user_attrs[T.REFERENCE]}"] if t.user_attrs.get(T.REFERENCE) else []
        if t.system_attrs.get("failed_trial") is not None:
            what.append(f"retry of trial {t.system_attrs['failed_trial']}")
        console.print(f"trial {t.number} started{' (' + ', '.join(what) + ')' if what else ''}",
                      soft_wrap=True, markup=False)


def _progress_lines(study, last: dict | None = None, every_s: float = 30.0) -> list[str]:
    """``trial N: fine-tune step k/n, X s elapsed, ETA Y s`` per running trial (with ``last``: only those
    not reported in the past ``every_s`` seconds)."""
    import time

    from optuna.trial import TrialState

    from hybridprune.search import trials as T

    lines, now = [], time.monotonic()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        p = t.user_attrs.get(T.PROGRESS)
        if not p:
            continue
        if last is not None:
            if now - last.get(t.number, -every_s) < every_s or p["step"] >= p["total"]:
                continue
            last[t.number] = now
        eta = f", ETA {p['eta_s']:.0f} s" if p.get("eta_s") is not None else ""
        lines.append(f"trial {t.number}: fine-tune step {p['step']}/{p['total']}, {p['elapsed_s']:.0f} s elapsed{eta}")
    return lines


def _log_finished(study, seen: set, console) -> None:
    from optuna.trial import TrialState

    from hybridprune.search import trials as T

    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        if t.number in seen:
            continue
        seen.add(t.number)
        c = t.user_attrs.get(T.CONFIG) or {}
        what = (f"channels cut {c.get('channel_ratio')}, blocks cut {c.get('pruned_blocks')}, {c.get('criterion')}, "
                f"{c.get('order')}") if c else ""
        if t.state == TrialState.COMPLETE:
            how = [f"{t.user_attrs.get(T.FIDELITY_STEPS)} steps"] if t.user_attrs.get(T.FIDELITY_STEPS) else []
            if not T.counts_towards_target(t):
                how = [f"reused trial {t.user_attrs[T.DUPLICATE_OF]}"]
            elif t.user_attrs.get(T.GATED):
                how = ["over the latency budget, not fine-tuned"]
            elif t.user_attrs.get(T.RUNGS):
                how.append(f"rung decision {t.user_attrs[T.RUNGS][-1]['decision']}")
            if t.user_attrs.get(T.LATENCY_CACHED):
                how.append("latency cached")
            ratio = t.user_attrs.get(T.LATENCY_RATIO)
            x = f" = {ratio:.3f} x baseline" if ratio is not None else ""
            console.print(f"trial {t.number} done: validation top-1 {100 * T.accuracy(t):.2f}%, "
                          f"latency {T.latency_ms(t):.3f} ms{x} "
                          f"({what}{'; ' if how else ''}{', '.join(how)})", soft_wrap=True, markup=False)
        else:
            console.print(f"trial {t.number} failed: {t.user_attrs.get(T.FAIL_REASON, 'worker died')} ({what})",
                          soft_wrap=True, markup=False)


def _refined_table(rows, title: str):
    """A ``rich.table.Table`` of refined (trial, record) pairs, by latency."""
    from rich.table import Table

    from hybridprune.search import trials as T

    table = Table(title=title)
    for col in ("trial", "test top-1", "val top-1", "search val", "latency ms", "latency ratio (CI)", "reference"):
        table.add_column(col, justify="left" if col == "reference" else "right")
    for t, r in sorted(rows, key=lambda tr: tr[1][T.R_LATENCY]):
        lo, hi = r[T.R_RATIO_CI]
        table.add_row(str(t.number), f"{100 * r[T.R_TEST]:.2f}%", f"{100 * r[T.R_VAL]:.2f}%",
                      f"{100 * T.accuracy(t):.2f}%", f"{r[T.R_LATENCY]:.3f}", f"{r[T.R_RATIO]:.3f} ({lo:.3f}-{hi:.3f})",
                      t.user_attrs.get(T.REFERENCE) or "")
    return table
