"""`trainer.num_threads`: epoch times with 1 thread, 2 threads and `auto`, quiet and busy.

    python scripts/bench.py --threads                  # 1, 2 and auto threads, quiet and busy
    python scripts/bench.py --threads --thread-models mlp-512-256 --rounds 6

For each model, one process per machine condition builds the run three times (with
`trainer.num_threads=1`, `=2` and `auto`, which measures as it is built) and trains the
three an epoch each in turn, `--warmup` + `--rounds` epochs of at most `--limit-batches`
batches, as a user runs it (callbacks, TensorBoard, metrics; no figures, no early stop).
Reported: the median epoch time (training and validation) of the timed epochs for each
setting, the count `auto` chose, and auto's time against the better fixed count. Busy:
another process spins on one core (pinned there) for the whole condition, as a second
job on the machine would.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "mlp-512-256": ["model.hidden_sizes=[512,256]"],  # on digits, as in issue 14
    "mlp": [],  # the default run
    "cnn": ["model=cnn"],
    "text-transformer": ["experiment=text_transformer"],
}
SETTINGS = ("1", "2", "auto")
SPIN = "while True:\n    pass\n"


def worker(model: str, order: list[str], epochs: int, limit: int, out: Path) -> None:
    """In a process of its own: build the model's run with each setting in `order` (auto
    measures then), then train them an epoch each in turn, so that a machine getting
    busier or quieter meanwhile favours none of them."""
    sys.path.insert(0, str(ROOT / "src"))
    import logging

    import torch

    from trainlab.app import experiment
    from trainlab.app.api import compose
    from trainlab.engine.callback import Callback

    experiment.OWNS_PROCESS = True  # as under the trainlab command (the allocator's settings)
    logging.getLogger("trainlab").setLevel(logging.WARNING)  # no progress lines

    class EpochTimes(Callback):
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def on_epoch_start(self, trainer, state) -> None:
            self.started = time.perf_counter()

        def on_epoch_end(self, trainer, state) -> None:
            self.seconds.append(time.perf_counter() - self.started)

    runs: dict[str, Any] = {}
    for setting in order:
        folder = tempfile.mkdtemp(prefix=f"bench_threads_{model}_")
        cfg = compose(
            [
                *MODELS[model],
                f"trainer.num_threads={setting}",
                "trainer.device=cpu",
                f"trainer.max_epochs={epochs}",
                f"trainer.limit_train_batches={limit}",
                "callbacks.figures=null",
                "callbacks.early_stopping=null",
                f"paths.output_dir={folder}",
            ]
        )
        started = time.perf_counter()
        exp = experiment.build(cfg)
        built = time.perf_counter() - started
        timer = EpochTimes()
        exp.trainer.callbacks.append(timer)
        runs[setting] = (exp, timer, torch.get_num_threads(), built)
    for epoch in range(epochs):
        for setting in order if epoch % 2 == 0 else order[::-1]:
            exp, _, threads, _ = runs[setting]
            torch.set_num_threads(threads)
            exp.trainer.start_epoch, exp.trainer.max_epochs = epoch, epoch + 1
            exp.trainer.fit(exp.train, exp.val)
    results = {}
    for setting, (exp, timer, threads, built) in runs.items():
        if exp.trainer.logger is not None:
            exp.trainer.logger.close()
        results[setting] = {
            "epoch_s": timer.seconds,
            "threads": threads,
            "why": exp.threads,
            "build_s": built,
        }
    out.write_text(json.dumps(results))


def spinner() -> subprocess.Popen:
    """Another process busy on one core (the first this process may use) until killed."""
    process = subprocess.Popen([sys.executable, "-c", SPIN])
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(process.pid, {min(os.sched_getaffinity(0))})
    return process


def condition(model: str, busy: bool, args: argparse.Namespace) -> dict[str, Any]:
    # The settings are built in opposite orders in the two conditions.
    order = list(SETTINGS) if not busy else list(reversed(SETTINGS))
    out = Path(tempfile.mkdtemp(prefix="bench_threads_")) / "result.json"
    command = [
        sys.executable,
        str(Path(__file__)),
        "--worker",
        model,
        "--order",
        ",".join(order),
        "--epochs",
        str(args.warmup + args.rounds),
        "--limit-batches",
        str(args.limit_batches),
        "--out",
        str(out),
    ]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    spinning = spinner() if busy else None
    try:
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    finally:
        if spinning is not None:
            spinning.kill()
            spinning.wait()
    results = json.loads(out.read_text())
    for result in results.values():
        timed = result["epoch_s"][args.warmup :]
        result["median_s"] = statistics.median(timed)
    best = min(results["1"]["median_s"], results["2"]["median_s"])
    return {
        "model": model,
        "condition": "busy" if busy else "quiet",
        "settings": results,
        "auto_over_best": results["auto"]["median_s"] / best,
    }


def report(rows: list[dict[str, Any]]) -> None:
    print()
    print("| model | machine | 1 thread | 2 threads | auto | auto chose | auto / best fixed |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        settings = row["settings"]
        auto = settings["auto"]
        best = min(("1", "2"), key=lambda name: settings[name]["median_s"])
        chose = f"{auto['threads']} ({'the best' if str(auto['threads']) == best else 'not'})"
        print(
            f"| {row['model']} | {row['condition']} | {ms(settings['1']['median_s'])} | "
            f"{ms(settings['2']['median_s'])} | {ms(auto['median_s'])} | {chose} | "
            f"**{row['auto_over_best']:.2f}x** |"
        )
    print("\nWhat auto measured, and what building the run took (auto's includes measuring):")
    for row in rows:
        settings = row["settings"]
        built = ", ".join(f"{name} {settings[name]['build_s']:.2f} s" for name in SETTINGS)
        print(f"  {row['model']}, {row['condition']}: {settings['auto']['why']}; built: {built}")


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.0f} ms"


def run(args: argparse.Namespace) -> dict[str, Any]:
    """`bench.py --threads`: every model, quiet then busy; prints the table."""
    rows = []
    for model in args.thread_models.split(","):
        for busy in (False, True):
            print(f"  {model}, {'busy' if busy else 'quiet'} ...", flush=True)
            rows.append(condition(model, busy, args))
    report(rows)
    return {"threads": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", choices=tuple(MODELS), required=True)
    parser.add_argument("--order", required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--limit-batches", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    worker(args.worker, args.order.split(","), args.epochs, args.limit_batches, args.out)


if __name__ == "__main__":
    main()
