#!/usr/bin/env bash
# The long runs behind results/resnet56-cifar10-jpeg/, in order. Every step resumes where a
# stopped one ended (studies from their storage and time budget, the benchmarks from their JSONL
# files, refine skips models it refined with the same recipe), so the whole script can be started
# again in every session until it prints "all done":
#
#   nohup bash benchmarks/real_scale_runs.sh >> runs/real_scale_runs.log 2>&1 &
#
# Steps: the proxy benchmark that chose the rung ladder; the hybrid, channel-only and block-only
# searches (seed 0, full data, 3 h each); seeds 1 and 2 of all three spaces on a 10,000-image train
# subset (benchmarks/search.py, 1 h each); refine (3 epochs, distilled from the adapted teacher) of
# the hybrid front, the ResNet-20 reference, the 4 best paper settings and the best models of the
# single-mode searches; publish with the comparison report; the independent re-measurement.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
EPOCHS=3
STUDIES=(studies/resnet56-cifar10-jpeg.toml studies/resnet56-cifar10-jpeg-channel.toml studies/resnet56-cifar10-jpeg-block.toml)
step() { echo "[$(date -u +%FT%TZ)] start: $*"; "$@"; echo "[$(date -u +%FT%TZ)] done: $*"; }

step python benchmarks/proxy.py studies/resnet56-cifar10-jpeg.toml --configs 24 --train-images 10000 \
    --out results/proxy-resnet56/resnet56.jsonl
for s in "${STUDIES[@]}"; do
  step hybridprune run "$s" --no-progress
done
step python benchmarks/search.py --study studies/resnet56-cifar10-jpeg.toml --train-subset 10000 \
    --full-steps 180 --min-steps 60 --bn-batches 8 --budget-s 3600 --seeds 1 2 --samplers nsga2 --modes mf \
    --spaces "${STUDIES[@]}" --out runs/search-bench/spaces.jsonl

# the 4 paper settings with the best validation accuracy, refined beside the front
paper=$(python - <<'EOF'
from hybridprune.search import trials as T
from hybridprune.search.pareto import completed
from hybridprune.search.service import load
_, study = load("studies/resnet56-cifar10-jpeg.toml")
paper = sorted((t for t in completed(study) if T.is_reference(t, T.REF_PAPER)), key=T.accuracy, reverse=True)
print(" ".join(f"--trial {t.number}" for t in paper[:4]))
EOF
)
# shellcheck disable=SC2086 - $paper is a list of options
step hybridprune refine studies/resnet56-cifar10-jpeg.toml --epochs "$EPOCHS" --rounds 7
step hybridprune refine studies/resnet56-cifar10-jpeg.toml --epochs "$EPOCHS" --rounds 7 $paper
for s in "${STUDIES[@]:1}"; do
  step hybridprune refine "$s" --epochs "$EPOCHS" --top 3 --rounds 7
done
# publishes through hybridprune.search.publish (what `hybridprune publish` runs), then adds the comparison
step python benchmarks/real_scale.py studies/resnet56-cifar10-jpeg.toml --single "${STUDIES[@]:1}" \
    --out results/resnet56-cifar10-jpeg
step python benchmarks/verify_results.py results/resnet56-cifar10-jpeg --data ../shared/data/cifar10-jpeg
echo "all done"
