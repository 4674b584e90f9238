"""The request readers of `trainlab serve` for table and text runs, in-process: JSON
rows and texts encode as `trainlab predict` encodes the same rows from a file, and bad
items are refused naming the item and the field."""

from __future__ import annotations

import json
import threading

import httpx
import pandas as pd
import pytest
import torch
from test_serve import (
    SEED,
    ThreadServer,
)

from trainlab.app.predict import Predictor
from trainlab.app.predict_inputs import TableInput, TextInput
from trainlab.app.serve_requests import RequestError, TableRequests, requests_for
from trainlab.components.data.tabular import load_table
from trainlab.components.data.text import TextPreprocessor
from trainlab.components.data.text_datasets import demo_reviews
from trainlab.components.models.mlp import MLP


# --- the request readers of table and text runs, in-process (no model needed) ---------------
@pytest.fixture(scope="module")
def pets_requests(table_csv) -> TableRequests:
    bundle = load_table(seed=SEED, path=str(table_csv), target="label")
    return requests_for(TableInput(bundle.preprocessor, {}))


def test_json_rows_encode_exactly_as_the_same_rows_read_from_csv(pets_requests, table_csv):
    """`trainlab predict` reads a CSV; the server, JSON objects: the model gets the same."""
    rows = pd.read_csv(table_csv).head(25).drop(columns="label")
    items = json.loads(rows.to_json(orient="records"))  # NaN -> null, as a client sends gaps
    assert any(v is None for item in items for v in item.values())
    served = pets_requests.encode(pets_requests.check(items, True), "inputs")
    read = pets_requests.inputs.encode(pd.read_csv(table_csv).head(25), "input=pets.csv")
    assert torch.equal(served, read)
    nulls = [dict.fromkeys(item, None) for item in items[:2]]  # every value missing: filled
    assert pets_requests.encode(pets_requests.check(nulls, True), "inputs").isfinite().all()


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (
            {"id": 1, "weight": 0.5, "height": 1},
            "inputs[0].color: missing; give every input column (null for a missing value)",
        ),
        (
            {"weight": 0.5},
            "inputs[0].id: missing (and 2 more column(s)); give every input "
            "column (null for a missing value)",
        ),
        (
            {"id": 1, "weight": "heavy", "height": 1, "color": "red"},
            "inputs[0].weight: a "
            "string ('heavy'); the model was trained on numbers in this column: send a number or "
            "null",
        ),
        (
            {"id": 1, "weight": [1], "height": 1, "color": "red"},
            "inputs[0].weight: a list "
            "([1]); the model was trained on numbers in this column: send a number or null",
        ),
        (
            {"id": 1, "weight": 10**400, "height": 1, "color": "red"},
            "inputs[0].weight: "
            "100000000000000000000000000... is not a finite number; send a number, or null to "
            "have it filled as in training",
        ),
        (
            {"id": 1, "weight": float("inf"), "height": 1, "color": "red"},
            "inputs[0].weight: "
            "inf is not a finite number; send a number, or null to have it filled as in training",
        ),
        (
            {"id": 1, "weight": 1, "height": 1, "color": {"r": 1}},
            "inputs[0].color: an object; send a text, a number or null",
        ),
        (
            {"id": 1, "weight": 1, "height": 1, "color": "red", "colour": "red"},
            "inputs[0]."
            "colour: unknown column (did you mean 'color'?); the model takes the columns listed "
            "by GET /metadata",
        ),
        (
            ["red", 1],
            "inputs[0]: a list; a table row is an object {column: value} with the "
            "columns id, weight, height, color",
        ),
    ],
)
def test_table_items_are_refused_naming_row_and_column(pets_requests, item, message) -> None:
    with pytest.raises(RequestError) as raised:
        pets_requests.check([item], True)
    assert (raised.value.status, str(raised.value)) == (422, message)


def test_a_request_its_run_cannot_encode_fails_alone_in_a_shared_batch(table_csv, tmp_path):
    """A table run trained with data.impute=drop cannot fill a gap: the request with one is
    refused, the requests batched with it are answered."""
    bundle = load_table(seed=SEED, path=str(table_csv), target="label", impute="drop")
    torch.manual_seed(0)
    model = MLP(bundle.info.input_shape, bundle.info.num_classes, hidden_sizes=(8,)).eval()
    inputs = TableInput(bundle.preprocessor, {})
    predictor = Predictor(model, bundle.info, inputs, {}, tmp_path / "checkpoints" / "best.pt")
    rows = pd.read_csv(table_csv).drop(columns="label").dropna().head(6)
    items = json.loads(rows.to_json(orient="records"))
    gap = {**items[0], "weight": None}
    expected = predictor.predict(rows)["prediction"].tolist()
    # The batch closes when its 7 items have come (or after 5 s): one shared call.
    served = ThreadServer(predictor, max_batch=7, max_wait_ms=5000)
    try:
        bodies = [{"inputs": items[:3]}, {"input": gap}, {"inputs": items[3:]}]
        replies, client = {}, httpx.Client(timeout=60)

        def ask(i: int) -> None:
            replies[i] = client.post(f"{served.url}/predict", json=bodies[i])

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        client.close()
        got = [a["prediction"] for i in (0, 2) for a in replies[i].json()["predictions"]]
        assert got == expected
        assert (replies[1].status_code, replies[1].json()["error"]) == (
            422,
            "input has missing values (data rows 1) but the run was trained with "
            "data.impute=drop, which cannot fill them: fill them in, or train with "
            "data.impute=median (or mean, most_frequent, knn)",
        )
        stats = httpx.get(f"{served.url}/metadata").json()["stats"]
        assert (stats["requests"], stats["items"], stats["model_calls"]) == (2, 6, 1)
    finally:
        served.stop()


def test_text_items_are_strings_or_the_text_column() -> None:
    reviews = demo_reviews(SEED, n_samples=60)
    preprocessor = TextPreprocessor.fit(list(reviews["text"]), tokenizer="word")
    reader = requests_for(TextInput(preprocessor, "review"))
    texts = reader.check(["good screen", {"review": "bad battery"}, ""], True)
    assert torch.equal(
        reader.encode(texts, "inputs"), preprocessor.encode(["good screen", "bad battery", ""])
    )
    for items, message in [
        ([3], "inputs[0]: a number; a text run takes strings"),
        ([None], "inputs[0]: null; a text run takes strings"),
        (
            [{"reviews": "x"}],
            "inputs[0].reviews: unknown field (did you mean 'review'?); a text item "
            'is a string or {"review": "..."}',
        ),
        ([{}], "inputs[0].review: missing; send the text"),
        ([{"review": 5}], "inputs[0].review: a number; a text run takes strings"),
        (["", " \n"], "inputs: all 2 texts are empty; send words"),
    ]:
        with pytest.raises(RequestError) as raised:
            reader.check(items, True)
        assert str(raised.value) == message
    with pytest.raises(RequestError, match=r"^input: the text is empty; send words$"):
        reader.check([""], False)
