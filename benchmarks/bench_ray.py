"""The study on Ray: its overhead on this machine, and the paper study's schedule on 1-16 GPUs.

1. **Overhead (measured).** The smoke study with ``--engine local --workers 2`` and with
   ``--engine ray`` (a local cluster on every core), each into a fresh folder and store, one
   after the other; prints both wall times, their ratio (target <= 1.10) and whether their
   tables are byte-identical. ``--skip-measure`` leaves this part out.
2. **Schedule (projected).** The ``paper`` preset's plan (``--seeds`` training seeds), each
   step given a cost from a model of the passes it runs (below), scheduled as the driver does
   (a step is submitted once the steps it reads have finished; the cluster starts them in plan
   order as GPUs free up; every model step holds one GPU). Prints, for 1, 2, 4, 8 and 16 GPUs,
   the makespan, the speed-up over one GPU and the critical path (the longest chain of steps,
   which no number of GPUs shortens).

The cost model counts P, one forward and backward pass of the 3-D UNet on one 128^3 volume
(a forward pass is P/3), from the preset's own numbers: training is epochs x training subjects
x passes per example (adversarial training 2, PGD/TRADES 1 + attack steps, distillation twice
the epochs: its teacher and its student); an evaluation is each attack's iterations at each
budget on every test subject; corruptions and certificates are forward passes; the audit is its
attacks' iterations, restarts and queries. The 2-D UNet is costed as the 3-D one (128 slices
of 128^2 at a batch of 64 do about the work of one volume). Data preparation, cards, tables and
reports cost nothing on a GPU. These are projections of the plan's shape, not measured hours:
``--pass-s`` turns them into hours for a measured P.

    python benchmarks/bench_ray.py
    python benchmarks/bench_ray.py --skip-measure --seeds 5 --pass-s 0.6
"""

from __future__ import annotations

import argparse
import heapq
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras_advseg  # noqa: E402, F401  (before TensorFlow: it turns on oneDNN's CPU kernels)

GPUS = (1, 2, 4, 8, 16)


def measure(folder: Path) -> None:
    """Runs the smoke study with each engine and prints the wall times and their ratio."""
    advseg = [sys.executable, "-m", "keras_advseg.cli", "reproduce", "--preset", "smoke"]
    seconds = {}
    for name, options in (
        ("local --workers 2", ["--workers", "2"]),
        ("ray", ["--engine", "ray"]),
    ):
        out = folder / name.split()[0]
        command = advseg + ["--out", str(out / "study"), "--tracking-uri"]
        command += [f"sqlite:///{out / 'mlflow.db'}", *options]
        out.mkdir()
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        seconds[name] = time.perf_counter() - started
        print(f"smoke study, --engine {name}: {seconds[name]:.1f} s", flush=True)
    ratio = seconds["ray"] / seconds["local --workers 2"]
    print(f"ray / local --workers 2: {ratio:.3f} (target <= 1.10)")
    local, ray = (
        {p.relative_to(folder / e / "study"): p.read_bytes() for p in (folder / e).rglob("*.csv")}
        for e in ("local", "ray")
    )
    same = local.keys() == ray.keys() and all(local[k] == ray[k] for k in local)
    print(f"tables: {len(local)} CSV files, {'identical' if same else 'DIFFERENT'}")


def step_costs(preset: str, seeds: int) -> list[tuple[str, float, tuple[str, ...]]]:
    """The plan of ``preset`` over ``seeds`` training seeds: ``(name, cost in P, after)``."""
    from keras_advseg.config import STUDIES
    from keras_advseg.workflows.reproduce import study_steps

    study = STUDIES[preset]
    n_test = round(study.phantom_subjects * study.test_fraction)
    n_train = study.phantom_subjects - n_test
    with tempfile.TemporaryDirectory() as folder:
        steps = study_steps(
            preset,
            Path(folder),
            data=None,
            tracking_uri="sqlite:///plan.db",
            experiment="plan",
            seeds=tuple(range(seeds)),
            data_seed=0,
            workers=1,
        )
    plan = []
    for step in steps:
        kind = step.name.split(": ")[-1].split(" ")[0]
        cost = 0.0
        if step.run is not None and step.accelerated:
            cost = _cost(kind, step.kwargs, study, n_train, n_test)
        plan.append((step.name, cost, step.after))
    return plan


def _cost(kind: str, kwargs: dict, study, n_train: int, n_test: int) -> float:
    """A step's passes P (module docstring)."""
    from keras_advseg.workflows.study import spec_config

    if kind == "train":
        config = spec_config(study, kwargs["spec"], seed=kwargs["seed"], **kwargs["options"])
        per_example = {"adversarial": 2, "fast": 2, "pgd": 1 + config.adv_steps}
        per_example["trades"] = 2 + config.adv_steps
        passes = per_example.get(config.defense, 1)
        epochs = config.epochs * (2 if config.defense == "distillation" else 1)
        return epochs * n_train * passes
    if kind == "evaluate":
        config = kwargs["config"]
        iterations = 0
        for attack in config.attacks:
            if attack == "fgsm":
                iterations += len(config.eps) + len(config.eps_sweep)
            elif attack == "worst":
                iterations += len(config.ensemble) * (config.worst_steps or config.steps)
            elif attack == "vafa":
                iterations += config.vafa_steps or config.steps
            else:
                iterations += config.steps * len(config.iterative_eps)
        if config.iterations_sweep:
            iterations += sum(range(1, config.steps + 1))
        return n_test * (iterations + 1 / 3)
    if kind == "corruptions":
        cells = len(kwargs["corruptions"]) * len(kwargs["severities"])
        return n_test * (1 + cells) / 3
    if kind == "certify":
        subjects = kwargs["subjects"] or n_test
        return subjects * len(kwargs["sigmas"]) * (kwargs["n"] + kwargs["n0"]) / 3
    if kind == "audit":
        config = kwargs["config"]
        subjects = min(config.subjects or n_test, n_test)
        worst = len(config.attacks) * config.steps
        iterations = worst * (1 + 2 + 4)  # the worst case, then at 2x and 4x the iterations
        iterations += len(config.curve) * len(config.curve_attacks) * config.steps
        iterations += config.restarts * config.steps + 2 * config.steps  # restarts, transfer, T
        return subjects * (iterations + config.queries / 3)
    return 0.0  # cards reuse the other steps' files; tables and reports run on CPUs


def schedule(plan, gpus: int) -> float:
    """The makespan of ``plan`` on ``gpus`` GPUs, the driver's way: ready steps start in plan
    order as GPUs free up; steps of cost 0 take no GPU and no time."""
    order = {name: i for i, (name, _, _) in enumerate(plan)}
    cost = {name: c for name, c, _ in plan}
    after = {name: a for name, _, a in plan}
    waiting = {name: set(a) for name, _, a in plan}
    dependents: dict[str, list[str]] = {name: [] for name, _, _ in plan}
    for name, reads in after.items():
        for read in reads:
            dependents[read].append(name)
    ready = [(order[n], n) for n, reads in waiting.items() if not reads]
    heapq.heapify(ready)
    running: list[tuple[float, str]] = []
    now, free = 0.0, gpus

    def finish(name: str) -> None:
        for dependent in dependents[name]:
            waiting[dependent].discard(name)
            if not waiting[dependent]:
                heapq.heappush(ready, (order[dependent], dependent))

    done = 0
    while done < len(plan):
        while ready and (free > 0 or cost[ready[0][1]] == 0):
            _, name = heapq.heappop(ready)
            if cost[name] == 0:
                done += 1
                finish(name)
                continue
            free -= 1
            heapq.heappush(running, (now + cost[name], name))
        if not running:  # the zero-cost steps just taken were the last
            break
        end, name = heapq.heappop(running)
        now, free, done = end, free + 1, done + 1
        finish(name)
    return now


def critical_path(plan) -> float:
    longest: dict[str, float] = {}
    for name, cost, after in plan:
        longest[name] = cost + max((longest[a] for a in after), default=0.0)
    return max(longest.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-measure", action="store_true")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--pass-s", type=float, default=None, help="seconds of one P")
    args = parser.parse_args()
    if not args.skip_measure:
        folder = Path(tempfile.mkdtemp(prefix="bench-ray-"))
        try:
            measure(folder)
        finally:
            shutil.rmtree(folder)
    plan = step_costs(args.preset, args.seeds)
    total, path = sum(c for _, c, _ in plan), critical_path(plan)
    steps = sum(1 for _, c, _ in plan if c > 0)
    unit = (
        (lambda p: f"{p * args.pass_s / 3600:,.0f} h") if args.pass_s else (lambda p: f"{p:,.0f} P")
    )
    print(
        f"\n{args.preset} preset, {args.seeds} training seed{'s' * (args.seeds > 1)}: "
        f"{steps} GPU steps, {unit(total)} of work; critical path {unit(path)} "
        f"(speed-up bound {total / path:.1f})"
    )
    print("| GPUs | makespan | speed-up | efficiency |\n|---|---|---|---|")
    one = schedule(plan, 1)
    for gpus in GPUS:
        span = schedule(plan, gpus)
        print(f"| {gpus} | {unit(span)} | {one / span:.2f} | {one / span / gpus:.0%} |")


if __name__ == "__main__":
    main()
