"""One schema for what a trial records: user-attribute keys, objective values by name, phase times.

Every key a trial (or the study) stores is named here once, the way Optuna keeps its own
``_CONSTRAINTS_KEY``; the rest of ``search/`` and ``commands/`` read them through these names, and
objective values by metric name (:func:`objective`), never by position.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from hybridprune.spaces.base import REF_BASELINE, REF_FAMILY, REF_PAPER, REFERENCE_LABELS  # noqa: F401 (re-exported)

# Names shared by an objective and the trial user attribute that holds the same value.
ACCURACY = "accuracy"                # validation accuracy the trial reports (a fraction)
LATENCY_MS = "latency_ms"            # the study's latency statistic, ms
PARAMS = "params"                    # parameter count
MACS = "macs"                        # multiply-accumulates at the study's input size
#: Objectives every study has, in this order (``[objectives] extra`` may append more).
BASE_OBJECTIVES = (ACCURACY, LATENCY_MS)

# Trial user attributes.
CONFIG = "config"                    # the HybridConfig as a dict
WORKER = "worker"                    # host:pid that ran the trial
ARCHITECTURE = "architecture"        # blocks kept and widths per stage
REMOVED_BLOCKS = "removed_blocks"
RECORD = "record"                    # the pruning record that rebuilds the model
LATENCY_RESULT = "latency"           # the full LatencyResult dict
LATENCY_RATIO = "latency_ratio"      # latency over the study's reference baseline latency (interleaved)
LATENCY_BACKEND = "latency_backend"
LATENCY_CACHED = "latency_cached"    # True when the latency came from the study's cache
LATENCY_KEY = "latency_key"          # architecture fingerprint the cache is keyed by
LATENCY_MACHINE = "latency_machine"  # CPU model and vector flags that timed it (host-sharing backends)
LATENCY_SCREEN = "latency_screen"    # True while the latency is the 0-step screen's short reading
ACCURACY_BEFORE = "accuracy_before"  # before fine-tuning (evaluated only where needed)
FINETUNE = "finetune"                # TrainResult of the (last) fine-tune
RUNGS = "rungs"                      # multi-fidelity: one entry per rung reached, with the decision
FIDELITY_STEPS = "finetune_steps"    # fine-tune steps the reported accuracy was reached with
GATED = "latency_gate"               # why the trial was not fine-tuned (over the latency budget)
DUPLICATE_OF = "duplicate_of"        # number of the completed trial whose values were reused
CONSTRAINTS = "constraints"          # constraint values by name (<= 0 feasible)
ARTIFACTS = "artifacts"              # artifact ids of the checkpoint and the ONNX file, by these two keys:
ARTIFACT_CHECKPOINT = "checkpoint"
ARTIFACT_ONNX = "onnx"
TIME_S = "time_s"                    # wall seconds per phase
PROGRESS = "progress"                # fine-tune step, total, elapsed_s and eta_s while the trial runs
REFERENCE = "reference"              # one of REFERENCE_LABELS for enqueued reference points
REFERENCE_NAME = "reference_name"    # a reference model's label ([references] models)
WARM_START = "warm_start"            # True on the searched points [space] warm_start enqueued first
PROMOTED_FROM = "promoted_from"      # a deferred screen promoted this trial's twin: its number
FAIL_REASON = "fail_reason"

# Study user / system attributes.
STUDY_SPACE = "space"
STUDY_FILE = "study_file"
STUDY_ARTIFACT_DIR = "artifact_dir"
STUDY_LATENCY = "latency"
STUDY_BASELINE_METRICS = "baseline_metrics"
STUDY_FIDELITY = "fidelity"
STUDY_TIME = "time_budget"           # budget_s, used_s and the deadline of the run in progress
STUDY_SPLIT = "split"                # the data split: split_record plus sizes and a description per split
LATENCY_CACHE_PREFIX = "latency_cache:"  # study system attribute per (backend settings, architecture)
# ``refine``: Optuna refuses to update a finished trial, so a refined trial's results are a study user
# attribute ``refined:<trial number>`` (see :func:`refined`); ``refined`` is the summary of the last run.
REFINED_PREFIX = "refined:"
STUDY_REFINED = "refined"
# Keys of one refined record (and of the latency fields ``StudyLatency.interleaved`` returns).
R_EPOCHS = "epochs"                  # refine's fine-tune epochs
R_LR = "lr"
R_SEED = "seed"  # shuffling and augmentation of the refine: one seed for every model a study refines
R_DISTILL = "distill"                # whether refine distilled from the baseline
R_DISTILL_WEIGHT = "distill_weight"  # the distillation loss's weight (the hard labels get the rest)
R_SECONDS = "seconds"                # refine's fine-tune + scoring wall time
R_REBUILT = "rebuilt"                # the source checkpoint was gone: rebuilt, with its val top-1 vs recorded
R_TEST = "test_top1"
R_VAL = "val_top1"
R_ARTIFACTS = "artifacts"            # artifact ids of the refined checkpoint and ONNX file
R_LATENCY = "latency_ms"             # ratio x the study's reference baseline latency (the study basis)
R_MEASURED = "measured_ms"           # median of the readings of this re-timing itself
R_REFERENCE = "reference_ms"         # the study's reference baseline latency
R_RATIO = "latency_ratio"            # median per-round ratio to the baseline timed next to it
R_RATIO_CI = "ratio_ci"
R_ROUNDS = "rounds"
R_CONFIDENCE = "confidence"
# Keys of the study's ``refined`` summary (besides R_EPOCHS and R_ROUNDS).
RS_TRIALS = "trials"
RS_BASELINE = "baseline"
RS_LATENCY_SECONDS = "latency_seconds"


def objective(trial: Any, name: str, names: Sequence[str] | None = None) -> float:
    """The objective value called ``name`` of a completed ``FrozenTrial``.

    Args:
        trial: A trial with ``values``.
        name: Metric name (``accuracy``, ``latency_ms``, ``params``, ``macs``).
        names: The study's metric names (default: the two every study starts with).

    Raises:
        KeyError: when the study has no such objective.
    """
    names = list(names) if names is not None else list(BASE_OBJECTIVES)
    if name not in names:
        raise KeyError(f"no objective {name!r}; the study has {names}")
    return float(trial.values[names.index(name)])


def accuracy(trial: Any) -> float:
    """Validation accuracy (the first objective of every study)."""
    return objective(trial, ACCURACY)


def latency_ms(trial: Any) -> float:
    """Latency in ms (the second objective of every study)."""
    return objective(trial, LATENCY_MS)


def is_reference(trial: Any, label: str) -> bool:
    """Whether ``trial`` is the enqueued reference point labelled ``label`` (e.g. :data:`REF_BASELINE`)."""
    return trial.user_attrs.get(REFERENCE) == label


def baseline_trial(study: Any, *, with_artifacts: bool = False) -> Any | None:
    """The study's completed unpruned baseline trial (the first, if a resume enqueued another), or ``None``.

    Args:
        study: The Optuna study.
        with_artifacts: Only a baseline trial whose checkpoint and ONNX file were stored counts.
    """
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if is_reference(t, REF_BASELINE) and (not with_artifacts or t.user_attrs.get(ARTIFACTS)):
            return t
    return None


def refined(study: Any, trial: Any = None) -> dict:
    """The ``refine`` record of ``trial`` (``{}`` when never refined), or with ``trial=None`` all of
    them by trial number."""
    attrs = study.user_attrs
    if trial is not None:
        return dict(attrs.get(f"{REFINED_PREFIX}{trial.number}") or {})
    return {int(k[len(REFINED_PREFIX):]): v for k, v in attrs.items() if k.startswith(REFINED_PREFIX)}


def feasible(trial: Any) -> bool:
    """Whether every constraint of the trial is satisfied (values <= 0)."""
    return all(v <= 0 for v in trial.constraints.values())


def counts_towards_target(trial: Any) -> bool:
    """Whether a finished trial counts towards ``study.trials`` (a reused duplicate does not)."""
    return trial.user_attrs.get(DUPLICATE_OF) is None


class PhaseTimer:
    """Wall time per named phase of a trial (``with timer.phase("prune"): ...``); phases may repeat."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.times: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Add the block's wall time to phase ``name``."""
        tick = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - tick

    def as_dict(self) -> dict[str, float]:
        """Seconds per phase plus ``total`` since the timer started, rounded to 0.1 ms."""
        out = {k: round(v, 4) for k, v in self.times.items()}
        out["total"] = round(time.perf_counter() - self.start, 4)
        return out
