"""Re-measure a published front from its ONNX files alone, and print it against front.json.

Uses only NumPy, Pillow and ONNX Runtime (no hybridprune code), the way an outside reader would:
test top-1 of every ONNX file on the image folder's ``test/<class>/*`` images its entry's ``split``
names (with ``val_from = "test"``: the rest of each class after the validation part, by sorted file
name; classes sorted by name; RGB in [0, 1], normalised with the entry's ``mean``/``std``), and
latency with ONNX Runtime on one thread at batch 1, in rounds that time the baseline and then each
model back to back, so a model's ratio is the median of its per-round ratios to the baseline.

    python benchmarks/verify_results.py results/resnet56-cifar10-jpeg --data ../shared/data/cifar10-jpeg

Exit status 1 when a test top-1 differs from front.json by more than ``--max-top1-diff`` points,
or (only when given) a latency ratio by more than ``--max-ratio-diff``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def read_test_split(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """All ``root/test/<class>/*`` images as uint8 NCHW RGB, labels by sorted class name."""
    from PIL import Image

    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((root / "test" / name).iterdir()):
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                with Image.open(path) as im:
                    images.append(np.asarray(im.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1))
                labels.append(label)
    return np.stack(images), np.array(labels)


def session(path: Path, threads: int):
    """An ONNX Runtime CPU session with ``threads`` intra-op threads."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def top1(path: Path, images: np.ndarray, labels: np.ndarray, mean, std, threads: int = 2) -> float:
    """Test top-1 (percent) of one ONNX file, one image per run (the files have a static batch of 1)."""
    sess = session(path, threads)
    name = sess.get_inputs()[0].name
    mean = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
    correct = 0
    for i in range(len(images)):
        x = (images[i:i + 1].astype(np.float32) / 255.0 - mean) / std
        correct += int(sess.run(None, {name: x})[0].argmax() == labels[i])
    return 100.0 * correct / len(images)


def median_ms(sess, x: np.ndarray, seconds: float, warmup: int = 10) -> float:
    """Median wall time of single runs over ``seconds`` (after ``warmup`` runs)."""
    name = sess.get_inputs()[0].name
    for _ in range(warmup):
        sess.run(None, {name: x})
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 20:
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def ratios(paths: dict[str, Path], baseline: str, rounds: int, seconds: float) -> dict[str, tuple[float, float]]:
    """(median ms, median per-round ratio to the baseline) per file, one thread, batch 1."""
    sessions = {k: session(p, 1) for k, p in paths.items()}
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    ms: dict[str, list[float]] = {k: [] for k in paths}
    rs: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(rounds):
        for k in paths:
            if k == baseline:
                continue
            b = median_ms(sessions[baseline], x, seconds)
            m = median_ms(sessions[k], x, seconds)
            ms[baseline].append(b)
            ms[k].append(m)
            rs[k].append(m / b)
    return {k: (statistics.median(ms[k]), statistics.median(rs[k]) if rs[k] else 1.0) for k in paths}


def split_part(labels: np.ndarray, split: dict | None) -> np.ndarray:
    """Indices of the images an entry's ``split`` scored: with ``val_from = "test"`` the rest of each
    test class after its first ``round(val_size * n)`` files by sorted name (the first part is
    validation); otherwise every test image."""
    if not split or split.get("val_from") != "test":
        return np.arange(len(labels))
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        keep.append(idx[int(round(split["val_size"] * len(idx))):])
    return np.sort(np.concatenate(keep))


ENTRY_KEYS = ("onnx", "test_top1", "latency_ratio", "mean", "std")


def front_problem(front, folder: Path) -> str | None:
    """What is wrong with a parsed ``front.json`` (``None``: nothing): a list of entries, each with
    the keys :data:`ENTRY_KEYS`, its ONNX file present, a ``split`` that :func:`split_part` can
    apply, and exactly one ``"reference": "baseline"`` entry to time the others against."""
    if not isinstance(front, list) or not front:
        return "front.json must be a non-empty list of model entries"
    for i, e in enumerate(front):
        if not isinstance(e, dict):
            return f"front.json entry {i} is not an object"
        missing = [k for k in ENTRY_KEYS if k not in e]
        if missing:
            return f"front.json entry {i} lacks {', '.join(missing)} (each entry needs {', '.join(ENTRY_KEYS)})"
        if not isinstance(e["onnx"], str) or Path(e["onnx"]).name != e["onnx"]:
            return f"front.json entry {i}: onnx must be a file name inside the folder, got {e['onnx']!r}"
        if not (folder / e["onnx"]).is_file():
            return f"front.json entry {i}: {e['onnx']} is not in {folder}"
        split = e.get("split")
        if split is not None and not isinstance(split, dict):
            return f"front.json entry {i}: split must be an object, got {split!r}"
        if split and split.get("val_from") == "test":
            size = split.get("val_size")
            if isinstance(size, bool) or not isinstance(size, (int, float)) or not 0 < size < 1:
                return (f"front.json entry {i}: a split with val_from = \"test\" needs val_size in (0, 1) "
                        f"(the validation share of each test class), got {size!r}")
    bases = [e["onnx"] for e in front if e.get("reference") == "baseline"]
    if len(bases) != 1:
        return f"front.json needs exactly one entry with \"reference\": \"baseline\", has {len(bases)}"
    return None


def main(argv: list[str] | None = None) -> int:
    """Re-measure every entry of ``<folder>/front.json`` and print both."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--data", type=Path, required=True, help="image folder with test/<class>/ images")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.0, help="timed seconds per measurement")
    ap.add_argument("--max-top1-diff", type=float, default=0.3)
    ap.add_argument("--max-ratio-diff", type=float, default=None,
                    help="also fail when a latency ratio differs from front.json by more (default: report only; "
                         "ratios differ between CPUs and VM states)")
    args = ap.parse_args(argv)
    if args.rounds < 1 or not args.seconds > 0 or not args.max_top1_diff >= 0:
        print(f"error: --rounds must be >= 1, --seconds > 0 and --max-top1-diff >= 0, got {args.rounds}, "
              f"{args.seconds} and {args.max_top1_diff}", file=sys.stderr)
        return 2
    if args.max_ratio_diff is not None and not args.max_ratio_diff >= 0:
        print(f"error: --max-ratio-diff must be >= 0, got {args.max_ratio_diff}", file=sys.stderr)
        return 2
    if not (args.folder / "front.json").is_file():
        print(f"error: {args.folder} has no front.json (a folder written by benchmarks/real_scale.py)", file=sys.stderr)
        return 2
    try:
        front = json.loads((args.folder / "front.json").read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        print(f"error: {args.folder / 'front.json'} is not JSON ({exc})", file=sys.stderr)
        return 2
    problem = front_problem(front, args.folder)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if not (args.data / "train").is_dir() or not (args.data / "test").is_dir():
        print(f"error: --data {args.data} needs train/<class>/ and test/<class>/ image folders", file=sys.stderr)
        return 2
    images, labels = read_test_split(args.data)
    print(f"{len(images)} test images; {len(front)} models", flush=True)
    paths = {e["onnx"]: args.folder / e["onnx"] for e in front}
    base = next(e["onnx"] for e in front if e.get("reference") == "baseline")  # one: front_problem
    lat = ratios(paths, base, args.rounds, args.seconds)
    bad, worst = 0, (0.0, base)
    print(f"{'onnx':<24} {'top1 json':>9} {'top1 now':>9} {'ratio json':>10} {'ratio now':>9} {'ms now':>7}")
    for e in front:
        part = split_part(labels, e.get("split"))
        acc = top1(paths[e["onnx"]], images[part], labels[part], e["mean"], e["std"])
        ms, ratio = lat[e["onnx"]]
        bad += abs(acc - e["test_top1"]) > args.max_top1_diff
        worst = max(worst, (abs(ratio - e["latency_ratio"]), e["onnx"]))
        print(f"{e['onnx']:<24} {e['test_top1']:9.2f} {acc:9.2f} {e['latency_ratio']:10.3f} {ratio:9.3f} {ms:7.3f}",
              flush=True)
    print(f"largest latency ratio difference: {worst[0]:.3f} ({worst[1]}); top-1 beyond {args.max_top1_diff:g} "
          f"points: {bad}")
    if args.max_ratio_diff is not None and worst[0] > args.max_ratio_diff:
        bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
