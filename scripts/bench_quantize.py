"""int8 quantization on CPU: torch's dynamic quantization (what `trainlab compress` uses)
against torchao, each against the fp32 model, on digits runs of the MLP and the RNN.

    python scripts/bench.py --quantize                  # 10-epoch runs, 200 timed calls
    python scripts/bench.py --quantize --rounds 20 --quantize-epochs 2   # a quick check

For each model one digits run is trained in-process (the shipped config, seed 42); then,
on its test split: size of the saved state dict, test accuracy, and latency of one row
and of a batch of 256 rows (median of `--rounds` timed calls on one thread, after three
warm-up calls). The baseline is the fp32 model called in a plain loop; each contender's
figures are given as ratios to it:

    torch.ao     torch.ao.quantization.quantize_dynamic, int8 Linear / LSTM / GRU
    torchao      torchao.quantization.quantize_ with Int8DynamicActivationInt8WeightConfig
                 (Linear layers only: torchao has no LSTM / GRU path)
    torchao-wo   torchao with Int8WeightOnlyConfig (Linear only)
"""

from __future__ import annotations

import copy
import io
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BATCH = 256


def train(model: str, epochs: int, folder: Path) -> Any:
    """A digits run of `model`, loaded back as `trainlab compress` loads it."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import compose_config

    from trainlab.app.experiment import run
    from trainlab.app.run_model import load_run

    run_dir = folder / model
    run(compose_config(f"model={model}", f"trainer.max_epochs={epochs}", output_dir=run_dir))
    return load_run(run_dir)


def contenders(model: Any) -> dict[str, Any]:
    from trainlab.components.compression import quantize_int8

    found = {"fp32": model, "torch.ao": quantize_int8(model)}
    try:
        from torchao.quantization import (
            Int8DynamicActivationInt8WeightConfig,
            Int8WeightOnlyConfig,
            quantize_,
        )
    except ImportError:
        print("torchao is not installed: comparing without it")
        return found
    for name, config in (
        ("torchao", Int8DynamicActivationInt8WeightConfig()),
        ("torchao-wo", Int8WeightOnlyConfig()),
    ):
        copied = copy.deepcopy(model)
        quantize_(copied, config)
        found[name] = copied
    return found


def size(model: Any) -> int:
    import torch

    from trainlab.app.compressed import state_dict_of

    buffer = io.BytesIO()
    try:
        torch.save(state_dict_of(model), buffer)
    except Exception:  # a torchao tensor subclass: its own state dict saves as it is
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
    return buffer.tell()


def latency(model: Any, inputs: Any, rounds: int) -> float:
    import torch

    times = []
    with torch.inference_mode():
        for index in range(rounds + 3):
            started = time.perf_counter()
            model(inputs)
            if index >= 3:
                times.append(time.perf_counter() - started)
    return statistics.median(times)


def run(args: Any) -> dict[str, Any]:
    import torch

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    rounds = args.rounds if args.rounds is not None else 200
    report: dict[str, Any] = {"quantize": {}}
    with tempfile.TemporaryDirectory() as folder:
        for name in ("mlp", "rnn"):
            loaded = train(name, args.quantize_epochs, Path(folder))
            inputs = loaded.inputs
            results = {}
            for contender, model in contenders(loaded.model).items():
                results[contender] = {
                    "size_bytes": size(model),
                    "test_acc": loaded.evaluate(model)["test/acc"],
                    "row_ms": latency(model, inputs[:1], rounds) * 1e3,
                    "batch_ms": latency(model, inputs[:BATCH], max(rounds // 10, 5)) * 1e3,
                }
            report["quantize"][name] = results
            print_table(name, results)
    return report


def print_table(model: str, results: dict[str, dict[str, float]]) -> None:
    base = results["fp32"]
    print(f"\n{model} on digits (test split; latency on 1 thread, median)")
    print(
        "| contender | size KiB | smaller | test acc | change (pt) | 1 row ms | x fp32 | "
        f"{BATCH} rows ms | x fp32 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, values in results.items():
        print(
            f"| {name} | {values['size_bytes'] / 1024:.1f} | "
            f"{base['size_bytes'] / values['size_bytes']:.2f}x | {values['test_acc']:.4f} | "
            f"{100 * (values['test_acc'] - base['test_acc']):+.2f} | {values['row_ms']:.3f} | "
            f"{values['row_ms'] / base['row_ms']:.2f} | {values['batch_ms']:.3f} | "
            f"{values['batch_ms'] / base['batch_ms']:.2f} |"
        )
