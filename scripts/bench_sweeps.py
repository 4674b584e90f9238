"""Sweep overhead: `trainlab -m` against a hand-written Optuna loop; 1 and 2 workers.

    python scripts/bench.py --sweeps                      # 40 trials each (several minutes)
    python scripts/bench.py --sweeps --sweep-trials 6     # a quick check
    python scripts/bench.py --sweeps --sweep-epochs 20    # longer trials

Contenders, each a random search over the same space (lr, weight decay, dropout, width)
of the digits MLP, 2 epochs a trial (`--sweep-epochs`), batch 64, on the same splits and
scaling:

    handwritten   its own process (`python scripts/bench_sweeps.py N EPOCHS`): `study.optimize`
                  with an objective that trains the MLP by hand (tensors sliced per batch,
                  Adam, validation accuracy), one thread; timed from its launch to its
                  exit, as the trainlab sweeps are, so its imports count as theirs do
    trainlab      `python train.py -m hparams_search=random_mlp ...` (one sweep process,
                  every trial a Hydra job with the default callbacks and TensorBoard)
    trainlab, 2 workers   the same command twice at once on one study (SQLite in its
                  folder), `--sweep-trials` trials in all
    trainlab, workers=2   one command with `hydra.sweeper.workers=2`: a second worker forked
                  once the imports are done, each on one core

Reported: trials per minute over the whole command (process start-up included), the
ratio to the hand-written loop, and the per-trial overhead in seconds against it, cut into
process start-up (launch to the first trial's start, spread over the trials), Hydra's job
setup and the sweeper (between one job's end and the next one's start), and the job
itself beyond the hand-written training (building the run, checks, logging, writing the
run folder). A second trainlab sweep with `logger=none callbacks=none` shows what
TensorBoard and the callbacks cost. Last, the ratio one worker would reach with no
per-trial overhead at all (trainlab's start-up, then trials as fast as the hand-written
ones): what the start-up alone allows.
"""

from __future__ import annotations

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
EPOCHS = 2  # a trial's epochs unless --sweep-epochs says otherwise
QUIET = ["logger=none", "callbacks=none"]
FORKED = ["hydra.sweeper.workers=2"]


def handwritten(n_trials: int, epochs: int = EPOCHS) -> dict[str, Any]:
    """The same search written by hand, in a process of its own: seconds from its launch
    to its exit, the median trial's seconds, the best value."""
    launched = time.time()
    command = [sys.executable, __file__, str(n_trials), str(epochs)]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"the hand-written search failed: {proc.stderr[-2000:]}")
    return {**json.loads(proc.stdout.splitlines()[-1]), "seconds": time.time() - launched}


def handwritten_search(n_trials: int, epochs: int = EPOCHS) -> dict[str, Any]:
    """The hand-written search, in this process: what `handwritten` reports."""
    import numpy as np
    import optuna
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    # One thread, as trainer.num_threads=auto measures best for this small model here (two
    # threads on a shared 2-core machine wait on each other).
    torch.set_num_threads(1)
    x, y = load_digits(return_X_y=True)
    x_rest, _, y_rest, _ = train_test_split(x, y, test_size=0.15, random_state=42, stratify=y)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=0.15 / 0.85, random_state=42, stratify=y_rest
    )
    scaler = StandardScaler().fit(x_train)
    x_train = torch.tensor(scaler.transform(x_train), dtype=torch.float32)
    x_val = torch.tensor(scaler.transform(x_val), dtype=torch.float32)
    y_train, y_val = torch.tensor(y_train), torch.tensor(y_val)
    widths = {"[128]": [128], "[256,128]": [256, 128], "[512,256]": [512, 256]}
    trial_times = []

    def objective(trial: optuna.Trial) -> float:
        tic = time.perf_counter()
        lr = trial.suggest_float("optim.lr", 1e-4, 1e-1, log=True)
        weight_decay = trial.suggest_float("optim.weight_decay", 1e-6, 1e-2, log=True)
        dropout = trial.suggest_float("model.dropout", 0.0, 0.5)
        hidden = widths[trial.suggest_categorical("model.hidden_sizes", list(widths))]
        torch.manual_seed(42)
        layers: list[torch.nn.Module] = []
        width = 64
        for size in hidden:
            layers += [torch.nn.Linear(width, size), torch.nn.ReLU(), torch.nn.Dropout(dropout)]
            width = size
        model = torch.nn.Sequential(*layers, torch.nn.Linear(width, 10))
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        generator = torch.Generator().manual_seed(42)
        accuracy = 0.0
        for _ in range(epochs):
            model.train()
            order = torch.randperm(len(x_train), generator=generator)
            for start in range(0, len(order), 64):
                rows = order[start : start + 64]
                loss = torch.nn.functional.cross_entropy(model(x_train[rows]), y_train[rows])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            model.eval()
            with torch.no_grad():
                accuracy = (model(x_val).argmax(1) == y_val).float().mean().item()
            trial.report(accuracy, _)
        trial_times.append(time.perf_counter() - tic)
        return accuracy

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    study.optimize(objective, n_trials=n_trials)
    return {"trial_s": statistics.median(trial_times), "best": study.best_value,
            "trials": n_trials, "np": np.__version__}  # fmt: skip


def sweep_command(out: Path, study: str, n_trials: int, extra: list[str],
                  epochs: int = EPOCHS) -> list[str]:  # fmt: skip
    return [
        sys.executable, str(ROOT / "train.py"), "-m", "hparams_search=random_mlp",
        f"hydra.sweeper.study_name={study}", f"hydra.sweeper.n_trials={n_trials}",
        f"trainer.max_epochs={epochs}", f"paths.root_dir={out}", *extra,
    ]  # fmt: skip


def trainlab_sweep(out: Path, study: str, n_trials: int, extra: list[str],
                   workers: int = 1, epochs: int = EPOCHS) -> dict[str, Any]:  # fmt: skip
    """Run the sweep command (`workers` processes at once); seconds and the breakdown."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    launched = time.time()
    procs = [
        subprocess.Popen(sweep_command(out, study, n_trials, extra, epochs), cwd=out, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(workers)
    ]  # fmt: skip
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"the sweep failed: {err[-2000:]}")
    seconds = time.time() - launched
    sweep = out / "sweeps" / study
    records = [json.loads(path.read_text()) for path in sweep.glob(".job-*.json")]
    records.sort(key=lambda r: r["started_at"])
    done = [r for r in records if r["status"] in ("complete", "pruned")]
    jobs = [r["wall_time_s"] for r in done]
    ends = [r["started_at"] + r["wall_time_s"] for r in records]
    starts = [r["started_at"] for r in records]
    # Between one job's end and the next one's start, in a single worker: the sweeper's
    # ask and tell, Hydra's config composition and job setup, the leaderboard.
    one_worker = workers == 1 and "hydra.sweeper.workers=2" not in extra
    gaps = [b - a for a, b in zip(ends, starts[1:], strict=False)] if one_worker else []
    return {
        "seconds": seconds,
        "trials": len(done),
        "startup_s": starts[0] - launched,
        "job_s": statistics.median(jobs),
        "between_jobs_s": statistics.median(gaps) if gaps else None,
    }


def run(args: Any) -> dict[str, Any]:
    """Every contender once (`args.sweep_trials` trials each); print the table; return
    the figures."""
    n_trials, epochs = args.sweep_trials, args.sweep_epochs
    with tempfile.TemporaryDirectory(prefix="bench-sweeps-") as tmp:
        out = Path(tmp)
        print(f"sweeps: {n_trials} trials of the digits MLP, {epochs} epochs each", flush=True)
        hand = handwritten(n_trials, epochs)
        print(f"  handwritten: {hand['seconds']:.1f} s", flush=True)
        full = trainlab_sweep(out, "full", n_trials, [], epochs=epochs)
        print(f"  trainlab: {full['seconds']:.1f} s", flush=True)
        quiet = trainlab_sweep(out, "quiet", n_trials, QUIET, epochs=epochs)
        print(f"  trainlab, logger=none callbacks=none: {quiet['seconds']:.1f} s", flush=True)
        two = trainlab_sweep(out, "two", n_trials, [], workers=2, epochs=epochs)
        print(f"  trainlab, 2 workers on one study: {two['seconds']:.1f} s", flush=True)
        forked = trainlab_sweep(out, "forked", n_trials, FORKED, epochs=epochs)
        print(f"  trainlab, hydra.sweeper.workers=2: {forked['seconds']:.1f} s", flush=True)

    def per_min(result: dict[str, Any]) -> float:
        return 60 * result["trials"] / result["seconds"]

    base = per_min(hand)
    rows = [("handwritten Optuna loop", hand), ("trainlab -m", full),
            ("trainlab -m, logger=none callbacks=none", quiet),
            ("trainlab -m, 2 workers, one study", two),
            ("trainlab -m hydra.sweeper.workers=2", forked)]  # fmt: skip
    print("\n| contender | trials | seconds | trials/min | vs handwritten |")
    print("|---|---|---|---|---|")
    for name, result in rows:
        print(f"| {name} | {result['trials']} | {result['seconds']:.1f} | "
              f"{per_min(result):.1f} | {per_min(result) / base:.2f}x |")  # fmt: skip
    overhead = full["seconds"] / full["trials"] - hand["seconds"] / hand["trials"]
    startup = full["startup_s"] / full["trials"]
    between = full["between_jobs_s"] or 0.0
    in_job = full["job_s"] - hand["trial_s"]
    logging_s = full["job_s"] - quiet["job_s"]
    print(f"\nper-trial overhead of trainlab -m: {overhead:.2f} s over the hand-written "
          f"trial's {hand['trial_s']:.2f} s:")  # fmt: skip
    print(f"  process start-up  {startup:.2f} s  ({full['startup_s']:.1f} s once, over "
          f"{full['trials']} trials)")  # fmt: skip
    print(f"  Hydra job setup and the sweeper, between jobs  {between:.2f} s")
    print(f"  inside the job beyond the training  {in_job:.2f} s, of which TensorBoard and "
          f"the callbacks {logging_s:.2f} s")  # fmt: skip
    # What the start-up alone allows: one worker whose trials cost no more than the
    # hand-written ones, after trainlab's start-up.
    hand_startup = hand["seconds"] - hand["trials"] * hand["trial_s"]
    no_overhead = full["startup_s"] + full["trials"] * hand["trial_s"]
    ceiling = (60 * full["trials"] / no_overhead) / base
    print(f"start-up: trainlab {full['startup_s']:.1f} s to its first trial, the hand-written "
          f"loop ~{hand_startup:.1f} s; with no per-trial overhead at all, one worker "
          f"would take {no_overhead:.1f} s: {ceiling:.2f}x")  # fmt: skip
    print(f"workers: {per_min(full):.1f} trials/min with 1, {per_min(two):.1f} with 2 "
          f"commands ({per_min(two) / per_min(full):.2f}x), {per_min(forked):.1f} with "
          f"hydra.sweeper.workers=2 ({per_min(forked) / per_min(full):.2f}x)")  # fmt: skip
    return {
        "sweeps": {
            "trials": n_trials,
            "epochs": epochs,
            "handwritten": hand,
            "trainlab": full,
            "trainlab_quiet": quiet,
            "trainlab_2_workers": two,
            "trainlab_workers_2": forked,
            "ratio_workers_2": per_min(forked) / base,
            "ratio": per_min(full) / base,
            "overhead_s": overhead,
            "overhead_startup_s": startup,
            "overhead_between_jobs_s": between,
            "overhead_in_job_s": in_job,
            "overhead_logging_s": logging_s,
            "handwritten_startup_s": hand_startup,
            "ratio_without_trial_overhead": ceiling,
        }
    }


if __name__ == "__main__":  # the hand-written contender's process
    print(json.dumps(handwritten_search(*map(int, sys.argv[1:3]))))
