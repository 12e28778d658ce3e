"""What a robustness card costs on one 1 mm scan, axis by axis, measured in one run.

Writes a phantom of two subjects at 1 mm (one trains, one is the card's test subject), prepares
it at ``--shape``^3 without N4, trains the paper's 3-D UNet (16 filters, depth 5) for one epoch
(the card's cost does not depend on the weights) and runs ``advseg card --plan PLAN`` on it,
timing each axis from the card's own progress lines. Beside them, in the same run:

* the corrupted scans the corruptions axis prepares (every corruption and severity of the plan
  on the 1 mm scan), prepared once more on their own: the part of that axis that does not
  depend on the network; and once more in one process per core, as the study prepares them,
  with the share of the cores' time they kept busy;
* one forward pass F of the same network at ``--shape``^3 and at 128^3.

It prints each axis's seconds and share, then a projection to the paper's 128^3: every axis's
network-bound time (the corruptions axis less its scans) scaled by F(128) / F(shape), the scans
as measured. The projection assumes that an axis's time is proportional to F (attacks, audits
and certificates are forward and backward passes); it is a projection, not a measurement. For
a GPU, replace F(128) by that device's forward pass.

    python benchmarks/bench_card.py [--plan standard] [--shape 32] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from _timing import median_time  # noqa: E402

import keras_advseg  # noqa: E402, F401  (before TensorFlow: it turns on oneDNN's CPU kernels)


def forward_seconds(size: int) -> float:
    """Median seconds of one forward pass of the paper's UNet at ``size``^3 (batch 1)."""
    import numpy as np

    from keras_advseg.metrics import traced_inference
    from keras_advseg.models import unet3d

    forward = traced_inference(unet3d((size, size, size, 4), base_filters=16, depth=5))
    x = np.zeros((1, size, size, size, 4), np.float32)
    return median_time(lambda: np.asarray(forward(x)), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", default="standard")
    parser.add_argument("--shape", type=int, default=32)
    parser.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    work = Path(args.out or tempfile.mkdtemp(prefix="bench_card_"))
    work.mkdir(parents=True, exist_ok=True)

    from keras_advseg.config import TrainConfig
    from keras_advseg.data.corrupted import CorruptedScans
    from keras_advseg.data.phantom import PhantomConfig, synthesize_dataset
    from keras_advseg.data.prepare import PrepareConfig, load_prepared, prepare_dataset
    from keras_advseg.export import load_preprocessing
    from keras_advseg.workflows.card import CARD_PLANS
    from keras_advseg.workflows.card.run import run_card
    from keras_advseg.workflows.evaluate import raw_subjects
    from keras_advseg.workflows.train import train

    uri = f"sqlite:///{work / 'mlflow.db'}"
    started = time.perf_counter()
    synthesize_dataset(work / "raw", 2, seed=0, config=PhantomConfig(voxel_mm=1.0), progress=False)
    prepare_dataset(
        work / "raw",
        work / "prepared",
        PrepareConfig(shape=(args.shape,) * 3, n4=False, test_fraction=0.5),
        progress=False,
    )
    config = TrainConfig.from_preset("paper", "unet3d", "none", epochs=1, shape=args.shape)
    model = train(config, work / "prepared", work / "model", tracking_uri=uri, experiment="bench")
    setup = time.perf_counter() - started

    plan = CARD_PLANS[args.plan]
    prepared = load_prepared(work / "prepared")
    (subject,) = raw_subjects(prepared, prepared.ids("test"), "corrupted scans")
    scans = CorruptedScans(load_preprocessing(model.model_path), seed=0, cache=work / "scans")
    jobs = [(subject, "none", 0)] + [
        (subject, c, s) for c in plan.corruptions for s in plan.severities
    ]
    started = time.perf_counter()
    scans.prepare(jobs, workers=1, progress=False)
    scan_seconds = time.perf_counter() - started
    # the same scans in parallel processes, as the study prepares them: how busy the cores are
    cores = os.cpu_count() or 1
    parallel = CorruptedScans(load_preprocessing(model.model_path), seed=0, cache=work / "par")
    before = _cpu_seconds()
    started = time.perf_counter()
    parallel.prepare(jobs, workers=cores, progress=False)
    parallel_seconds = time.perf_counter() - started
    busy = (_cpu_seconds() - before) / parallel_seconds / cores

    marks: list[tuple[str, float]] = []

    def say(line: str) -> None:
        if line.endswith(": running"):
            marks.append((line.split(":")[0], time.perf_counter()))

    started = time.perf_counter()
    run_card(
        str(model.model_path),
        work / "raw",
        work / "card",
        plan=args.plan,
        seed=0,
        tracking_uri=uri,
        experiment="bench",
        say=say,
    )
    finished = time.perf_counter()
    axes = {
        name: (marks[i + 1][1] if i + 1 < len(marks) else finished) - at
        for i, (name, at) in enumerate(marks)
    }
    total = finished - started
    f_shape, f_128 = forward_seconds(args.shape), forward_seconds(128)
    scale = f_128 / f_shape

    print(
        f"plan {args.plan}, one 1 mm test scan {subject.load()[0].shape}, the paper's UNet at "
        f"{args.shape}^3; set-up (phantom, preparation, one epoch) {setup:.0f} s"
    )
    print(f"F at {args.shape}^3 {f_shape:.3f} s, at 128^3 {f_128:.3f} s (x{scale:.1f})")
    print(f"{'axis':<24} {'seconds':>9} {'share':>7} {'projected 128^3 s':>18} {'share':>7}")
    projected = {}
    for name, seconds in axes.items():
        bound = seconds - (scan_seconds if name == "corruptions" else 0.0)
        projected[name] = max(bound, 0.0) * scale + (scan_seconds if name == "corruptions" else 0)
    rest = total - sum(axes.values())
    projected_total = sum(projected.values()) + rest
    for name, seconds in axes.items():
        print(
            f"{name:<24} {seconds:9.1f} {seconds / total:7.1%} "
            f"{projected[name]:18.0f} {projected[name] / projected_total:7.1%}"
        )
    print(f"{'(card files, logging)':<24} {rest:9.1f} {rest / total:7.1%} {rest:18.0f}")
    print(f"{'card':<24} {total:9.1f} {1:7.1%} {projected_total:18.0f} {1:7.1%}")
    print(
        f"corrupted scans alone (in the corruptions axis): {scan_seconds:.1f} s for "
        f"{len(jobs)} scans; in {cores} processes {parallel_seconds:.1f} s, the cores "
        f"{busy:.0%} busy"
    )


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished child processes."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


if __name__ == "__main__":
    main()
