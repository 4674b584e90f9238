"""The logged metrics equal scikit-learn's on the same predictions."""

from __future__ import annotations

import pytest
import torch
from sklearn import metrics as sk
from torch import nn

from trainlab.components.data import TensorBatches
from trainlab.components.metrics import TaskMetrics
from trainlab.engine.trainer import Trainer


def make_predictions(num_classes: int, rows: int = 503, seed: int = 0):
    """Logits with some signal (so the metrics are not trivial) and their labels."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (rows,), generator=generator)
    logits = torch.randn(rows, num_classes, generator=generator)
    logits[torch.arange(rows), labels] += 1.5
    return logits, labels


@pytest.mark.parametrize(("num_classes", "batch_size"), [(10, 64), (3, 500), (4, 7)])
def test_evaluate_matches_sklearn(num_classes: int, batch_size: int) -> None:
    logits, labels = make_predictions(num_classes)
    # The identity model returns the logits it is given, so `evaluate` scores exactly them.
    trainer = Trainer(
        nn.Identity(),
        torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1),
        nn.CrossEntropyLoss(),
        max_epochs=1,
        metrics=TaskMetrics("multiclass", num_classes, torch.device("cpu")),
    )
    values = trainer.evaluate(TensorBatches(logits, labels, batch_size), "val")

    predicted = logits.argmax(dim=1).numpy()
    probabilities = logits.softmax(dim=1).numpy()
    y = labels.numpy()
    expected = {
        "val/loss": nn.functional.cross_entropy(logits, labels).item(),
        "val/acc": sk.accuracy_score(y, predicted),
        "val/precision": sk.precision_score(y, predicted, average="macro", zero_division=0),
        "val/recall": sk.recall_score(y, predicted, average="macro"),
        "val/f1": sk.f1_score(y, predicted, average="macro"),
        "val/auroc": sk.roc_auc_score(y, probabilities, multi_class="ovr", average="macro"),
    }
    assert set(values) == set(expected)
    for name, value in expected.items():
        assert values[name] == pytest.approx(value, abs=1e-5), name
    assert 0.3 < values["val/acc"] < 0.95  # the predictions are neither random nor perfect


@pytest.mark.parametrize("task", ["multiclass", "binary", "regression"])
@pytest.mark.parametrize("block", [2**22, 50])
def test_scores_do_not_depend_on_how_outputs_are_batched(task, block, monkeypatch) -> None:
    # Outputs wait and are scored in blocks of `block` values (all at once, or in
    # several blocks that split batches' groups unevenly): the same as one batch.
    import trainlab.components.metrics

    generator = torch.Generator().manual_seed(3)
    width = {"multiclass": 4, "binary": 1, "regression": 2}[task]
    outputs = torch.randn(203, width, generator=generator)
    if task == "regression":
        targets = outputs + 0.3 * torch.randn(203, width, generator=generator)
    elif task == "binary":
        targets = (outputs[:, 0] + torch.randn(203, generator=generator) > 0).long()
    else:
        targets = (outputs + torch.randn(203, 4, generator=generator)).argmax(dim=1)

    def scored(batch_size: int) -> tuple[dict[str, float], torch.Tensor | None]:
        metrics = TaskMetrics(task, max(width, 2), torch.device("cpu"))
        if batch_size < 203:
            metrics.update(torch.zeros(5, width), targets[:5])  # forgotten by the reset
            metrics.reset()
        for start in range(0, 203, batch_size):
            rows = slice(start, start + batch_size)
            metrics.update(outputs[rows], targets[rows])
        values = {name: value.item() for name, value in metrics.compute().items()}
        return values, metrics.confusion_matrix()

    whole, whole_matrix = scored(203)
    monkeypatch.setattr(trainlab.components.metrics, "SCORE_EVERY_VALUES", block)
    batched, batched_matrix = scored(7)
    assert whole == pytest.approx(batched, rel=1e-6, abs=1e-7)
    if task != "regression":
        assert torch.equal(whole_matrix, batched_matrix)
        assert whole_matrix.sum() == 203


@pytest.mark.parametrize("task", ["multiclass", "binary"])
def test_scores_from_the_confusion_matrix_equal_torchmetrics_own_metrics(task) -> None:
    # Accuracy, precision, recall and F1 come from the confusion matrix: the same values
    # as torchmetrics' separate metrics, also where a class is never predicted, never
    # present, or the only one.
    from torchmetrics import classification as cls

    if task == "multiclass":
        reference = {
            "acc": cls.MulticlassAccuracy(5, average="micro"),
            "precision": cls.MulticlassPrecision(5, average="macro"),
            "recall": cls.MulticlassRecall(5, average="macro"),
            "f1": cls.MulticlassF1Score(5, average="macro"),
        }
    else:
        reference = {
            "acc": cls.BinaryAccuracy(),
            "precision": cls.BinaryPrecision(),
            "recall": cls.BinaryRecall(),
            "f1": cls.BinaryF1Score(),
        }
    generator = torch.Generator().manual_seed(5)
    width = 5 if task == "multiclass" else 1
    cases = 0
    for rows in (1, 2, 9, 40, 300):
        for variant in ("plain", "never predicted", "never present", "one class"):
            outputs = 2 * torch.randn(rows, width, generator=generator)
            targets = torch.randint(0, max(width, 2), (rows,), generator=generator)
            if variant == "never predicted":
                outputs[:, -1] = -50.0  # the last class (binary: the positive one)
            elif variant == "never present":
                targets[targets == targets.max()] = 0
            elif variant == "one class":
                targets.fill_(1)
            metrics = TaskMetrics(task, max(width, 2), torch.device("cpu"))
            metrics.update(outputs, targets)
            values = metrics.compute()
            predicted = metrics.predictions(outputs)
            for name, metric in reference.items():
                metric.reset()
                expected = metric(predicted, targets)
                assert torch.equal(values[name], expected), (rows, variant, name)
            cases += 1
    assert cases == 20
