"""What `POST /predict` takes, per kind of run, checked item by item, and encoded as
`trainlab predict` encodes a file's rows (the same `Predictor.inputs`).

A body is `{"input": item}` (one item) or `{"inputs": [item, ...]}` (a batch). An item is:

- a table run's row: `{"column": value, ...}` with every input column (a number, a text,
  or null for a missing value that the run's imputation fills);
- a text run's text: `"a string"` (or `{"<text column>": "a string"}`);
- an array or image run's sample: a base64 PNG / JPEG image of the run's height and width
  (its pixel values go in as they are), a nested list of numbers of the run's input shape
  (or flat), or `{"<feature name>": number, ...}`.

A problem is a `RequestError`: one line that names the field (`inputs[2].age`), and the
HTTP status to answer with.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from typing import Any

import numpy as np
import pandas as pd
import torch

from trainlab.app.predict_inputs import ArrayInput, TableInput, TextInput
from trainlab.errors import did_you_mean

BODY_KEYS = ("input", "inputs")
IMAGE_FORMATS = ("PNG", "JPEG")


class RequestError(Exception):
    """A request the server refuses: `status` (4xx) and one line naming the field."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def items_of(body: Any, max_items: int) -> tuple[list[Any], bool]:
    """The items of a parsed JSON body, and whether it was a batch (`inputs`)."""
    if not isinstance(body, dict):
        raise RequestError(
            f'body: {_kind(body)} (JSON); send an object, {{"input": ...}} for one item or '
            '{"inputs": [...]} for a batch',
            400,
        )
    for key in body:
        if key not in BODY_KEYS:
            raise RequestError(
                f"body: unknown field '{key}'{did_you_mean(key, list(BODY_KEYS))}; the body "
                'takes "input" (one item) or "inputs" (a list of items)'
            )
    if len(body) != 1:
        raise RequestError('body: give "input" (one item) or "inputs" (a batch), not both')
    if "input" in body:
        return [body["input"]], False
    items = body["inputs"]
    if not isinstance(items, list):
        raise RequestError(f"inputs: {_kind(items)}; it must be a list of items")
    if not items:
        raise RequestError("inputs: the list is empty; send at least one item")
    if len(items) > max_items:
        raise RequestError(
            f"inputs: {len(items)} items; this server takes at most {max_items} per request "
            "(max_batch): split the batch",
            413,
        )
    return items, True


def _kind(value: Any) -> str:
    """What a JSON value is, for a message: 'null', 'a number', 'an object', ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {str: "a string", list: "a list", dict: "an object"}.get(type(value), "a value")


def _field(batch: bool, position: int) -> str:
    return f"inputs[{position}]" if batch else "input"


class TableRequests:
    """Rows of a table run: objects with every input column."""

    kind = "table"

    def __init__(self, inputs: TableInput) -> None:
        self.inputs = inputs
        pre = inputs.preprocessor
        self.numeric = list(pre.numeric)
        self.text_columns = [*pre.dates, *pre.categorical]
        self.columns = [*pre.numeric, *pre.dates, *pre.categorical]
        self.allowed = {*self.columns, pre.target}  # the target may come along; it is ignored

    def describe(self) -> dict[str, Any]:
        pre = self.inputs.preprocessor
        types = {c: "number" for c in pre.numeric} | {c: "date" for c in pre.dates}
        types |= {c: "category" for c in pre.categorical}
        return {
            "kind": self.kind,
            "item": "an object with a value for each column (null: missing, filled as in training)",
            "columns": types,
        }

    def check(self, items: list[Any], batch: bool) -> list[Any]:
        for position, item in enumerate(items):
            where = _field(batch, position)
            if not isinstance(item, dict):
                raise RequestError(
                    f"{where}: {_kind(item)}; a table row is an object {{column: value}} "
                    f"with the columns {', '.join(self.columns[:8])}"
                    + (", ..." if len(self.columns) > 8 else "")
                )
            for key in item:
                if key not in self.allowed:
                    raise RequestError(
                        f"{where}.{key}: unknown column{did_you_mean(key, self.columns)}; "
                        "the model takes the columns listed by GET /metadata"
                    )
            if missing := [c for c in self.columns if c not in item]:
                raise RequestError(
                    f"{where}.{missing[0]}: missing"
                    + (f" (and {len(missing) - 1} more column(s))" if len(missing) > 1 else "")
                    + "; give every input column (null for a missing value)"
                )
            for column in self.numeric:
                value = item[column]
                if value is not None and (
                    isinstance(value, bool) or not isinstance(value, (int, float))
                ):
                    raise RequestError(
                        f"{where}.{column}: {_kind(value)} ({_short(value)}); the model was "
                        "trained on numbers in this column: send a number or null"
                    )
                if value is not None and not _finite_number(value):
                    raise RequestError(
                        f"{where}.{column}: {_short(value)} is not a finite number; send a "
                        "number, or null to have it filled as in training"
                    )
            for column in self.text_columns:
                value = item[column]
                if isinstance(value, (bool, list, dict)):
                    raise RequestError(
                        f"{where}.{column}: {_kind(value)}; send a text, a number or null"
                    )
        return items

    def encode(self, items: list[Any], where: str) -> torch.Tensor:
        frame = pd.DataFrame.from_records(items, columns=self.columns)
        for column in self.numeric:  # a column of nulls only would stay of object dtype
            frame[column] = pd.to_numeric(frame[column])
        return self.inputs.encode(frame, where)


class TextRequests:
    """Texts of a text run: strings."""

    kind = "text"

    def __init__(self, inputs: TextInput) -> None:
        self.inputs = inputs

    def describe(self) -> dict[str, Any]:
        column = self.inputs.text_column
        return {
            "kind": self.kind,
            "item": f'a string (or an object {{"{column}": "..."}})',
            "text_column": column,
        }

    def check(self, items: list[Any], batch: bool) -> list[Any]:
        column = self.inputs.text_column
        texts = []
        for position, item in enumerate(items):
            where = _field(batch, position)
            if isinstance(item, dict):
                if unknown := [k for k in item if k != column]:
                    raise RequestError(
                        f"{where}.{unknown[0]}: unknown field"
                        f"{did_you_mean(unknown[0], [column])}; a text item is a string or "
                        f'{{"{column}": "..."}}'
                    )
                if column not in item:
                    raise RequestError(f"{where}.{column}: missing; send the text")
                item = item[column]
                where = f"{where}.{column}"
            if not isinstance(item, str):
                raise RequestError(f"{where}: {_kind(item)}; a text run takes strings")
            texts.append(item)
        if not any(text.strip() for text in texts):
            what = "the text is" if len(texts) == 1 else f"all {len(texts)} texts are"
            raise RequestError(f"{'inputs' if batch else 'input'}: {what} empty; send words")
        return texts

    def encode(self, items: list[Any], where: str) -> torch.Tensor:
        return self.inputs.encode(items, where)


class ArrayRequests:
    """Samples of an array or image run: images, lists of numbers or named features."""

    kind = "array"

    def __init__(self, inputs: ArrayInput) -> None:
        self.inputs = inputs
        self.shape = tuple(inputs.shape)
        self.size = math.prod(self.shape)
        # (channels, height, width): a sample may come as a PNG / JPEG image.
        self.image = len(self.shape) == 3 and self.shape[0] in (1, 3)

    def describe(self) -> dict[str, Any]:
        names = self.inputs.feature_names
        takes = f"a list of numbers of shape {list(self.shape)} (or {self.size} flat)"
        if self.image:
            takes = (
                f"a base64 PNG or JPEG image of {self.shape[2]}x{self.shape[1]} pixels, " + takes
            )
        return {
            "kind": "image" if self.image else self.kind,
            "item": takes + ", or an object {feature: number}",
            "shape": list(self.shape),
            "features": names if len(names) <= 100 else [*names[:3], "...", names[-1]],
        }

    def check(self, items: list[Any], batch: bool) -> list[Any]:
        return [self.sample(item, _field(batch, position)) for position, item in enumerate(items)]

    def sample(self, item: Any, where: str) -> np.ndarray:
        """One sample as a flat float64 vector of the run's input size."""
        if isinstance(item, str):
            if not self.image:
                raise RequestError(
                    f"{where}: a string; this run ({self.inputs.name}) takes a list of "
                    f"{self.size} numbers or an object {{feature: number}}"
                )
            values = self.decode_image(item, where)
        elif isinstance(item, dict):
            values = self.named(item, where)
        elif isinstance(item, list):
            values = self.numbers(item, where)
        else:
            raise RequestError(
                f"{where}: {_kind(item)}; send a list of numbers"
                + (", a base64 image" if self.image else "")
                + " or an object {feature: number}"
            )
        if not np.isfinite(values).all():
            raise RequestError(f"{where}: holds a value that is not finite; send numbers")
        return values

    def numbers(self, item: list[Any], where: str) -> np.ndarray:
        try:
            values = np.asarray(item, dtype=np.float64)
        except (ValueError, TypeError, OverflowError):
            raise RequestError(
                f"{where}: not a list of numbers of shape {list(self.shape)} (ragged, or holds "
                "text or null)"
            ) from None
        accepted = {self.shape, (self.size,)}
        if self.image and self.shape[0] == 1:
            accepted.add(self.shape[1:])  # a one-channel image without its channel
        if values.shape not in accepted:
            raise RequestError(
                f"{where}: shape {list(values.shape)}; this run ({self.inputs.name}) takes "
                f"{list(self.shape)} or {self.size} flat numbers"
            )
        return values.reshape(-1)

    def named(self, item: dict[str, Any], where: str) -> np.ndarray:
        names = self.inputs.feature_names
        for key in item:
            if key not in names:
                raise RequestError(f"{where}.{key}: unknown feature{did_you_mean(key, names)}")
        if missing := [n for n in names if n not in item]:
            raise RequestError(
                f"{where}.{missing[0]}: missing"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                + "; give every feature"
            )
        for name in names:
            value = item[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise RequestError(f"{where}.{name}: {_kind(value)}; send a number")
        try:
            return np.array([item[name] for name in names], dtype=np.float64)
        except OverflowError:
            raise RequestError(f"{where}: holds a value that is not finite; send numbers") from None

    def decode_image(self, text: str, where: str) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        data = image_bytes(text, where)
        try:
            with Image.open(io.BytesIO(data)) as image:
                channels, height, width = self.shape
                if image.size != (width, height):
                    raise RequestError(
                        f"{where}: the image is {image.size[0]}x{image.size[1]} pixels; this "
                        f"run ({self.inputs.name}) takes {width}x{height}"
                    )
                pixels = np.asarray(image.convert("L" if channels == 1 else "RGB"))
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as ex:
            raise RequestError(
                f"{where}: not a readable PNG or JPEG image ({type(ex).__name__}); send the "
                "image file's bytes base64-encoded"
            ) from None
        if pixels.ndim == 3:
            pixels = pixels.transpose(2, 0, 1)  # height, width, channels -> channels first
        return pixels.astype(np.float64).reshape(-1)

    def encode(self, items: list[Any], where: str) -> torch.Tensor:
        return self.inputs.encode(np.stack(items).reshape(len(items), *self.shape), where)


def image_bytes(text: Any, where: str) -> bytes:
    """The bytes of a base64 PNG or JPEG file sent as one item; anything else is refused
    naming the item (`where`)."""
    if not isinstance(text, str):
        raise RequestError(f"{where}: {_kind(text)}; send a base64 PNG or JPEG image")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(
            f"{where}: not valid base64; send the PNG or JPEG file's bytes base64-encoded"
        ) from None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = image.format
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as ex:
        raise RequestError(
            f"{where}: not a readable PNG or JPEG image ({type(ex).__name__}); send the "
            "image file's bytes base64-encoded"
        ) from None
    if kind not in IMAGE_FORMATS:
        raise RequestError(f"{where}: a {kind} image; send a PNG or JPEG")
    return data


def _finite_number(value: float) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an integer too large for a float
        return False


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 30 else text[:27] + "..."


class OtherRequests:
    """Inputs of a kind this module does not know: the items go to the run's own
    `encode` as a list, as `Predictor.predict` would take them."""

    kind = "other"

    def __init__(self, inputs: Any) -> None:
        self.inputs = inputs

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "item": f"what {type(self.inputs).__name__}.encode takes"}

    def check(self, items: list[Any], batch: bool) -> list[Any]:
        return items

    def encode(self, items: list[Any], where: str) -> torch.Tensor:
        return self.inputs.encode(items, where)


def requests_for(inputs: Any) -> Any:
    """The request reader for a Predictor's inputs (see the module's docstring); by what
    the inputs have, so a new kind built like these is served alike."""
    if isinstance(inputs, TableInput):
        return TableRequests(inputs)
    if isinstance(inputs, TextInput) or hasattr(inputs, "text_column"):
        return TextRequests(inputs)
    if isinstance(inputs, ArrayInput):
        return ArrayRequests(inputs)
    from trainlab.components.data.image_folder import ImageInput

    if isinstance(inputs, ImageInput):
        from trainlab.app.serve_images import ImageFolderRequests

        return ImageFolderRequests(inputs)
    return OtherRequests(inputs)
