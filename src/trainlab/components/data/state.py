"""Fitted scikit-learn transformers as plain JSON data, and back, without unpickling.

A run folder may come from someone else, so loading one must never run code from it.
`encode` turns a fitted transformer into JSON-ready data: numbers, text, lists, numeric
arrays (dtype, shape and base-64 bytes), text arrays, and the attributes of estimators
of a few known scikit-learn classes. `decode` rebuilds exactly that state: it creates
only the classes in `ESTIMATORS`, sets attributes from the data and calls nothing from
the file, so the rebuilt transformer gives bit-identical outputs. Anything else in the
file (an unknown class, a type it cannot hold) is refused with `UnsafeState`.
"""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer, TfidfVectorizer
from sklearn.impute import KNNImputer, MissingIndicator, SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler, OneHotEncoder, StandardScaler

# The only classes a file may name. FunctionTransformer is what a fitted ColumnTransformer
# makes of "passthrough"; its function must be None (see `_check_function`). The text
# vectorizers' analyzer, tokenizer and preprocessor are checked by their loader (names only).
ESTIMATORS = {
    f"{cls.__module__.split('.')[0]}.{cls.__name__}": cls
    for cls in (
        ColumnTransformer,
        CountVectorizer,
        FunctionTransformer,
        KNNImputer,
        MinMaxScaler,
        MissingIndicator,
        OneHotEncoder,
        Pipeline,
        SimpleImputer,
        StandardScaler,
        TfidfTransformer,
        TfidfVectorizer,
    )
}
# Numeric arrays are stored as raw bytes; kinds: bool, signed, unsigned, float.
ARRAY_KINDS = "biuf"


class UnsafeState(ValueError):
    """The data holds something `decode` does not rebuild (the message says what)."""


def encode(value: Any) -> Any:
    """`value` (a fitted transformer, or any part of one) as JSON-ready data."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": repr(value)}
    if isinstance(value, np.generic):
        return {"scalar": value.dtype.str, "value": encode(value.item())}
    if isinstance(value, np.dtype):
        return {"dtype": _dtype_name(value)}
    if isinstance(value, type) and issubclass(value, np.generic):  # e.g. dtype=np.float64
        return {"scalar_type": _dtype_name(np.dtype(value))}
    if isinstance(value, np.ndarray):
        return _encode_array(value)
    if isinstance(value, slice):
        return {"slice": [value.start, value.stop, value.step]}
    if isinstance(value, (list, tuple)):
        return {type(value).__name__: [encode(item) for item in value]}
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise UnsafeState(f"a dict with non-text keys: {list(value)[:3]}")
        return {"dict": {key: encode(item) for key, item in value.items()}}
    name = f"{type(value).__module__.split('.')[0]}.{type(value).__name__}"
    if ESTIMATORS.get(name) is type(value):
        return {"estimator": name, "state": {k: encode(v) for k, v in vars(value).items()}}
    raise UnsafeState(f"cannot store a {type(value).__name__} as data")


def decode(data: Any) -> Any:
    """The value `encode` gave `data` for; raises `UnsafeState` on anything else."""
    if data is None or isinstance(data, (bool, str, int)):
        return data
    if isinstance(data, float):
        return data
    if isinstance(data, list):
        raise UnsafeState("a bare list (lists are stored as {'list': [...]})")
    if not isinstance(data, dict) or len(data) not in (1, 2, 3):
        raise UnsafeState(f"unexpected {type(data).__name__} {str(data)[:60]!r}")
    kind = next(iter(data))
    body = data[kind]
    if kind == "float" and body in ("nan", "inf", "-inf"):
        return float(body)
    if kind == "scalar" and _is_allowed_dtype(body):
        return np.dtype(body).type(decode(data["value"]))
    if kind == "dtype" and _is_allowed_dtype(body, objects=True):
        return np.dtype(body)
    if kind == "scalar_type" and _is_allowed_dtype(body):
        return np.dtype(body).type
    if kind == "array":
        return _decode_array(data)
    if kind == "slice" and _is_list_of(body, (int, type(None)), 3):
        return slice(*body)
    if kind in ("list", "tuple") and isinstance(body, list):
        items = [decode(item) for item in body]
        return items if kind == "list" else tuple(items)
    if kind == "dict" and isinstance(body, dict):
        return {str(key): decode(item) for key, item in body.items()}
    if kind == "estimator" and isinstance(data.get("state"), dict):
        cls = ESTIMATORS.get(body) if isinstance(body, str) else None
        if cls is None:
            raise UnsafeState(f"the class {str(body)[:80]!r} is not one trainlab rebuilds")
        estimator = cls.__new__(cls)  # no __init__: nothing from the file is called
        state = {str(key): decode(item) for key, item in data["state"].items()}
        if any(key.startswith("__") for key in state):
            raise UnsafeState(f"{body} state names a special attribute")
        estimator.__dict__.update(state)
        _check_function(estimator)
        return estimator
    raise UnsafeState(f"unexpected entry {kind!r}")


def _check_function(estimator: Any) -> None:
    if isinstance(estimator, FunctionTransformer) and (
        estimator.__dict__.get("func") is not None
        or estimator.__dict__.get("inverse_func") is not None
    ):
        raise UnsafeState("a FunctionTransformer with a function")


def _dtype_name(dtype: np.dtype) -> str:
    if dtype.kind not in ARRAY_KINDS and dtype != np.dtype(object):
        raise UnsafeState(f"cannot store arrays of dtype {dtype}")
    return dtype.str


def _is_allowed_dtype(name: Any, objects: bool = False) -> bool:
    if not isinstance(name, str) or len(name) > 8:
        return False
    try:
        dtype = np.dtype(name)
    except TypeError:
        return False
    return dtype.kind in ARRAY_KINDS or (objects and dtype == np.dtype(object))


def _encode_array(array: np.ndarray) -> dict[str, Any]:
    if array.dtype == np.dtype(object):
        # Category names, feature names, imputed text: each item a text, a number or a gap.
        if array.ndim != 1:
            raise UnsafeState(f"cannot store a {array.ndim}-D array of objects")
        return {"array": "object", "shape": list(array.shape), "items": encode(array.tolist())}
    name = _dtype_name(array.dtype)
    raw = np.ascontiguousarray(array).tobytes()
    return {"array": name, "shape": list(array.shape), "bytes": base64.b64encode(raw).decode()}


def _decode_array(data: dict[str, Any]) -> np.ndarray:
    name, shape = data["array"], data.get("shape")
    if not _is_list_of(shape, (int,)) or any(size < 0 for size in shape):
        raise UnsafeState(f"an array with shape {str(shape)[:40]}")
    if name == "object":
        items = decode(data.get("items"))
        if not isinstance(items, list) or [len(items)] != shape:
            raise UnsafeState(f"an object array whose items do not match its shape {shape}")
        if not all(item is None or isinstance(item, (str, int, float)) for item in items):
            raise UnsafeState("an object array holding something besides text and numbers")
        array = np.empty(len(items), dtype=object)
        array[:] = items
        return array
    if not _is_allowed_dtype(name) or not isinstance(data.get("bytes"), str):
        raise UnsafeState(f"an array of dtype {str(name)[:20]!r}")
    raw = base64.b64decode(data["bytes"], validate=True)
    array = np.frombuffer(raw, dtype=np.dtype(name))
    if array.size != math.prod(shape):
        raise UnsafeState(f"an array of {array.size} values for shape {shape}")
    return array.reshape(shape).copy()  # writable, as the fitted one was


def _is_list_of(value: Any, kinds: tuple[type, ...], length: int | None = None) -> bool:
    return (
        isinstance(value, list)
        and (length is None or len(value) == length)
        and all(isinstance(item, kinds) and not isinstance(item, bool) for item in value)
    )
