#!/usr/bin/env bash
# The long runs behind results/resnet56-cifar10-jpeg/, in session-sized stages.
#
#   (set -m; nohup bash benchmarks/real_scale_runs.sh STAGE >> runs/real_scale_runs.log 2>&1 &)
#
# (`set -m`: a shell without job control starts background commands with SIGINT ignored, and then
# `kill -INT` cannot stop them cleanly; checked in /proc/PID/status, SigIgn bit 2.)
#
# A session's runs/ does not outlive it here (each session starts from a fresh checkout of main),
# so every stage keeps what the next one needs in committed files, and a stage stopped part-way
# resumes from them in the next session:
#
#   proxy    the proxy benchmark that chose the rung ladder: one JSON line per configuration in
#            results/proxy-resnet56/ (commit it; the teacher is adapted again in each session,
#            the same model on the same CPU: 88.94% test both times).
#   search   the hybrid, channel-only and block-only studies (seed 0, full data, 30 min each), all
#            three in one session on one machine, so that their latencies share one CPU.
#   stages   the hybrid search in the per-stage space (resnet56-cifar10-jpeg-stages.toml, same
#            budget; run in a later session on the same kind of CPU, after the bench stage). Their storages are
#            journal files in results/resnet56-cifar10-jpeg-state/ (text; commit them); the
#            trials' checkpoints stay in runs/ and are not needed later: refine rebuilds a trial
#            whose checkpoint is gone from its record (hybridprune/search/rebuild.py).
#   bench    the screening issue's comparisons at equal wall time (benchmarks/search.py, 10 min a
#            search, seeds 0-2, a 10,000-image train subset, 2,000 validation images): (b) MO-ASHA
#            with the BN rung in the hybrid, per-stage hybrid (resnet56-cifar10-jpeg-stages.toml),
#            channel-only and block-only spaces, (a) the plain
#            hybrid search beside it; one JSON line per finished search in results/search-bench/.
#   bench-warm  the same (b) runs of the two hybrid spaces with [space] warm_start = 8 (--warm-start 8):
#            their first generation seeded along their single-mode lines; keyed SPACE+ws8.
#   figures  the hypervolume-vs-wall-time figures of bench and bench-warm, from their committed rows
#            (no run): results/search-bench/resnet56-{mf-vs-plain,spaces}.png, and the tables.
#   refine   adapt the teacher again (runs/ is gone), then refine (EPOCHS, distilled from it) of the fronts of
#            both hybrid searches, the ResNet-20 reference, the 4 best paper settings and the Pareto
#            front of each single-mode search, then publish every search's refined models with
#            the comparison, then the independent re-measurement. The refined models go to results/resnet56-cifar10-jpeg-state/refined-*/ ([study]
#            refined_artifact_dir; commit them with the journals): a stopped refine resumes in the
#            next session model by model (each trial of the search is rebuilt from its record).
#   plain    the control of the first target: the adapted teacher fine-tuned EPOCHS more, plainly and
#            distilled with refine's recipe (weight 0.25, T 4), one JSON line each in
#            results/distill-vs-plain/resnet56.jsonl (commit it); needs the adapted teacher in runs/
#            (the refine stage's first step makes it). The refine stage's publish judges against it.
#
# Stop a stage with Ctrl+C or SIGINT (not SIGKILL): the running trial is then recorded as
# interrupted and retried on resume.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
EPOCHS=3
STUDIES=(studies/resnet56-cifar10-jpeg.toml studies/resnet56-cifar10-jpeg-channel.toml studies/resnet56-cifar10-jpeg-block.toml)
CONTROL=results/distill-vs-plain/resnet56.jsonl  # the plain fine-tune the refined baseline is judged against
STAGES=studies/resnet56-cifar10-jpeg-stages.toml  # the hybrid search in the per-stage space (issue 18 item 5)
step() { echo "[$(date -u +%FT%TZ)] start: $*"; "$@"; echo "[$(date -u +%FT%TZ)] done: $*"; }

case "${1:-}" in
proxy)
  step python benchmarks/proxy.py studies/resnet56-cifar10-jpeg.toml --configs 24 --train-images 10000 \
      --out results/proxy-resnet56/resnet56.jsonl ;;
search)
  for s in "${STUDIES[@]}"; do
    step hybridprune run "$s" --no-progress
  done ;;
stages)
  step hybridprune run "$STAGES" --no-progress ;;
bench|bench-warm)
  common=(--study studies/resnet56-cifar10-jpeg.toml --train-subset 10000 --val-subset 2000 --full-steps 180
          --min-steps 60 --bn-batches 8 --budget-s 600 --samplers nsga2
          --out results/search-bench/resnet56.jsonl)
  # bench-warm: the hybrid spaces with their first 8 points (one NSGA-II generation) enqueued along
  # their single-mode lines ([space] warm_start), keyed SPACE+ws8 beside the others; the single-mode
  # spaces keep their unseeded runs (seeding one of them is only an even grid along its one axis)
  spaces=("${STUDIES[@]}" "$STAGES"); warm=()
  [ "$1" = bench-warm ] && spaces=("${STUDIES[0]}" "$STAGES") && warm=(--warm-start 8)
  # seed by seed, so that a stage stopped part-way leaves every space with the same seeds
  for seed in 0 1 2; do
    step python benchmarks/search.py "${common[@]}" "${warm[@]}" --seeds $seed --modes mf --spaces "${spaces[@]}"
  done
  [ "$1" = bench-warm ] || step python benchmarks/search.py "${common[@]}" --seeds 0 1 2 --modes plain \
      --spaces "${STUDIES[0]}" ;;
figures)
  fig=(--study "${STUDIES[0]}" --budget-s 600 --samplers nsga2 --seeds 0 1 2 --floor 0.8 --no-run
       --out results/search-bench/resnet56.jsonl)
  step python benchmarks/search.py "${fig[@]}" --modes plain mf --spaces "${STUDIES[0]}" \
      --plot results/search-bench/resnet56-mf-vs-plain.png
  step python benchmarks/search.py "${fig[@]}" --modes mf --spaces "${STUDIES[@]}" "$STAGES" "${STUDIES[0]}+ws8" \
      "$STAGES+ws8" --plot results/search-bench/resnet56-spaces.png ;;
plain)
  step python benchmarks/distill_vs_plain.py --data ../shared/data/cifar10-jpeg \
      --checkpoint ../shared/models/resnet56-4bfd9763.th --teacher runs/resnet56-cifar10-jpeg-models/adapted.pt \
      --budgets "$EPOCHS" --distill 0.25:4 --out "$CONTROL" ;;
refine)
  # the 4 best paper settings, refined beside the front: the study screens them like candidates
  # (MO-ASHA), so those that reached a higher rung rank first, then by validation top-1 there
  paper=$(python - <<'EOF'
from hybridprune.search import trials as T
from hybridprune.search.pareto import completed
from hybridprune.search.service import load
from hybridprune.search.study import open_study
study = open_study(load("studies/resnet56-cifar10-jpeg.toml"), create=False)
paper = sorted((t for t in completed(study) if T.is_reference(t, T.REF_PAPER)), key=lambda t: (t.user_attrs.get(T.FIDELITY_STEPS) or 0, T.accuracy(t)), reverse=True)
print(" ".join(f"--trial {t.number}" for t in paper[:4]))
EOF
  )
  # the adapted teacher (runs/, so gone in a fresh session) is made by `run`, which refine does not do
  # on its own; the searches' budgets are spent, so this adapts (~6 min) and starts no trial
  step hybridprune run "${STUDIES[0]}" --no-progress
  # the hybrid searches first (the per-stage space, then the global one with the paper's settings),
  # then the single-mode fronts (partly refined already); each resumes model by model
  step hybridprune refine "$STAGES" --epochs "$EPOCHS" --rounds 7
  step hybridprune refine studies/resnet56-cifar10-jpeg.toml --epochs "$EPOCHS" --rounds 7
  # shellcheck disable=SC2086 - $paper is a list of options
  step hybridprune refine studies/resnet56-cifar10-jpeg.toml --epochs "$EPOCHS" --rounds 7 $paper
  for s in studies/resnet56-cifar10-jpeg-block.toml studies/resnet56-cifar10-jpeg-channel.toml; do
    step hybridprune refine "$s" --epochs "$EPOCHS" --rounds 7
  done
  # publishes through hybridprune.search.publish (what `hybridprune publish` runs), then adds the
  # comparison; --also: every search's refined models are candidates for the published front
  step python benchmarks/real_scale.py studies/resnet56-cifar10-jpeg.toml --single "${STUDIES[@]:1}" \
      --also "$STAGES" "${STUDIES[@]:1}" --plain-control "$CONTROL" --out results/resnet56-cifar10-jpeg
  step python benchmarks/verify_results.py results/resnet56-cifar10-jpeg --data ../shared/data/cifar10-jpeg ;;
*)
  echo "error: give a stage: proxy, search, stages, bench, bench-warm, figures, plain or refine (see the top of $0)" >&2
  exit 2 ;;
esac
echo "stage $1: all done"
