"""Plain helpers shared by several test modules (no fixtures: those are in ``conftest.py``).

Import with ``from helpers import ...`` (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from hybridprune.evaluators import agent as agent_mod

# --- shared files beside the checkout (see conftest.py's fixtures) ---

SHARED = Path(__file__).resolve().parents[2] / "shared"
RESNET56_TH = SHARED / "models" / "resnet56-4bfd9763.th"
RESNET20_TH = SHARED / "models" / "resnet20-12fca82f.th"
CIFAR10_JPEG = SHARED / "data" / "cifar10-jpeg"
TRTEXEC_FIXTURES = SHARED / "fixtures" / "trtexec"

# --- device agent ---

AGENT = Path(agent_mod.__file__)
TOKEN = "s3cret-token"


def pruned_resnet56() -> torch.nn.Module:
    """ResNet-56 hybrid-pruned by hybridprune.pruning (half the channels, 10 of 25 blocks removed)."""
    from hybridprune.models import create_model
    from hybridprune.pruning import HybridConfig, prune_model

    model = create_model("resnet56").eval()
    config = HybridConfig(channel_ratio=0.5, pruned_blocks=10, criterion="weight_magnitude")
    result = prune_model(model, config, torch.randn(1, 3, 32, 32))
    assert len(result.removed_blocks) == 10
    return result.model.eval()


def start_agent(*extra: str) -> tuple[subprocess.Popen, str]:
    """Start ``agent.py`` (onnxruntime backend) on a free loopback port; return (process, URL)."""
    proc = subprocess.Popen([sys.executable, str(AGENT), "--port", "0", "--backend", "onnxruntime", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"agent did not start: {line!r} {proc.stderr.read()}")
    return proc, line.strip().rsplit(" ", 1)[-1]


@functools.lru_cache(maxsize=1)
def small_model_bytes() -> bytes:
    """ONNX bytes of a narrow ResNet-20 (exported once per test process)."""
    from hybridprune.evaluators.export import export_onnx
    from hybridprune.models import create_model

    with tempfile.TemporaryDirectory() as tmp:
        return export_onnx(create_model("resnet20", width=4), Path(tmp) / "r20.onnx").read_bytes()


def raw(url: str, method: str, path: str, body: bytes | None = None, token: str | None = TOKEN,
        headers: dict | None = None) -> tuple[int, dict]:
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    hdrs = dict(headers or {})
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    conn.request(method, path, body=body, headers=hdrs)
    resp = conn.getresponse()
    data = json.loads(resp.read().decode())
    conn.close()
    return resp.status, data


# {mode}: "ok" (stable times), "noisy" (times that never stabilise), "crash" (SIGSEGV after
# writing half an engine), "fail" (exit 1 with a model error), "oom" (exit 1, CUDA out of memory)
FAKE_TRTEXEC = r'''#!{python}
import json, os, random, signal, sys
args = dict(a[2:].split("=", 1) if "=" in a else (a[2:], "") for a in sys.argv[1:])
with open({log!r}, "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\n")
assert ("onnx" in args) != ("loadEngine" in args), args
assert int(args["iterations"]) >= 1 and "exportTimes" in args and "duration" in args, args
mode = {mode!r}
if mode == "fail":
    print("[E] [TRT] ModelImporter.cpp:773: ERROR: unsupported operator " + args.get("onnx", "?"))
    sys.exit(1)
if mode == "oom":
    print("[E] [TRT] 2: [virtualMemoryBuffer.cpp::resizePhysical::145] Error Code 2: OutOfMemory")
    print("[E] Cuda failure: out of memory")
    sys.exit(1)
if "saveEngine" in args:
    assert args["saveEngine"] != args.get("loadEngine"), args
    with open(args["saveEngine"], "wb") as handle:
        handle.write(b"eng")
        if mode == "crash":
            handle.flush()
            os.kill(os.getpid(), signal.SIGSEGV)
        handle.write(b"ine")
else:
    with open(args["loadEngine"], "rb") as handle:
        if handle.read() != b"engine":
            print("[E] Error[1]: [runtime.cpp::deserializeCudaEngine] engine deserialization failed")
            sys.exit(1)
n = int(args["iterations"])
rng = random.Random(len(open({log!r}).read()))
times = [dict(latencyMs=(rng.uniform(1, 100) if mode == "noisy" else 1.0 + (i % 3) * 0.001))
         for i in range(n)]
json.dump(times, open(args["exportTimes"], "w"))
sys.stdout.write(open({fixture!r}).read())
'''


def fake_trtexec(tmp_path: Path, fixtures: Path, mode: str = "ok") -> tuple[Path, Path]:
    """Write the stand-in; return (its path, its call log)."""
    log = tmp_path / f"calls-{mode}.log"
    exe = tmp_path / f"trtexec-{mode}"
    exe.write_text(FAKE_TRTEXEC.format(python=sys.executable, log=str(log), mode=mode,
                                       fixture=str(fixtures / "trt8201_jetson_best.txt")))
    exe.chmod(0o755)
    log.touch()
    return exe, log


# --- search service (tiny studies on a digits subset) ---

REPO = Path(__file__).resolve().parents[1]

TINY = """
[study]
name = "{name}"
trials = {trials}
seed = 0
run_dir = "{run_dir}"
heartbeat_interval = {heartbeat}
grace_period = {grace}
{study_extra}

[model]
name = "resnet20"
checkpoint = "{checkpoint}"

[data]
dataset = "digits"
train_subset = 128
val_subset = 64

[space]
channel_ratio = {{ low = 0.0, high = 0.5, step = 0.1 }}
pruned_blocks = {{ low = 0, high = 3 }}
criterion = ["weight_magnitude", "bn_scale"]

[finetune]
steps = 2
batch_size = 32

[latency]
backend = "{backend}"
options = {latency_options}

[constraints]
max_latency_ms = 1000.0

[sampler]
name = "random"
"""

FAST_LATENCY = "{ warmup_runs = 1, min_runs = 3, max_runs = 5, max_time_s = 0.2 }"


def write_checkpoint(path: Path) -> Path:
    """A ResNet-20 (10 classes) with seeded random weights, in hybridprune's format."""
    from hybridprune.checkpoints import save_checkpoint
    from hybridprune.models import Normalization, create_model

    torch.manual_seed(0)
    save_checkpoint(path, create_model("resnet20", num_classes=10), Normalization())
    return path


def write_study(directory: Path, name: str = "tiny", *, trials: int = 3, checkpoint: Path | None = None,
                backend: str = "onnxruntime", latency_options: str = FAST_LATENCY, study_extra: str = "",
                run_dir: str = "run", heartbeat: int = 1, grace: int = 3) -> Path:
    """Write a tiny study file into ``directory`` and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    checkpoint = checkpoint or write_checkpoint(directory / "base.pt")
    path = directory / f"{name}.toml"
    path.write_text(TINY.format(name=name, trials=trials, run_dir=run_dir, checkpoint=checkpoint.as_posix(),
                                backend=backend, latency_options=latency_options, study_extra=study_extra,
                                heartbeat=heartbeat, grace=grace))
    return path


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``hybridprune ARGS`` in a subprocess (a real process, as users run it)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "hybridprune.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


def load(path: Path):
    """(config, study) of a study file."""
    from hybridprune.search.service import load as load_cfg
    from hybridprune.search.study import open_study

    cfg = load_cfg(str(path))
    return cfg, open_study(cfg, create=False)


def load_benchmark(name: str):
    """A ``benchmarks/<name>.py`` script as a module (the scripts are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def slow_abandon(path: str, waiting: list[int], since: int, lock: str | None, barrier, out) -> None:
    """A stopping worker's :func:`~hybridprune.search.study.abandon`, in a process of its own, with
    a pause between its read of the queued retries and its own writes (two workers stopped by one
    Ctrl+C run it at once); puts what it queued again on the ``out`` queue."""
    import time

    from hybridprune.search import _optuna

    real = _optuna.fail_trials

    def slow(*args, **kwargs):
        time.sleep(0.5)
        return real(*args, **kwargs)

    _optuna.fail_trials = slow
    from hybridprune.search.study import abandon

    _, study = load(Path(path))
    barrier.wait()
    out.put(abandon(study, set(waiting), since, None, lock=Path(lock) if lock else None))
