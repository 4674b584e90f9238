"""The HTTP side of `trainlab serve`: the FastAPI routes, dynamic batching, and one log
line per request.

Requests are checked on the event loop (a bad one is answered at once and never reaches
the model); the items of the good ones wait in a queue, and one worker gathers them,
request after request, up to `max_batch` items or until `max_wait_ms` has passed since
the first, then encodes and predicts them all in one call on a thread of its own, so the
event loop goes on accepting requests meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import platform
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from trainlab.app.predict import Predictor
from trainlab.app.serve_requests import RequestError, items_of, requests_for
from trainlab.errors import TrainlabError

log = logging.getLogger("trainlab")

MAX_BODY_BYTES = 64 * 2**20
ENDPOINTS = "POST /predict, GET /health, GET /metadata"


@dataclass
class Stats:
    """Counts since the server started (in GET /metadata): how well batching works."""

    requests: int = 0  # answered by the model
    items: int = 0
    model_calls: int = 0
    largest_batch: int = 0  # items in one model call


@dataclass
class Job:
    items: list[Any]
    where: str  # "input" or "inputs", for messages
    future: asyncio.Future = field(repr=False)


class Batcher:
    """Gathers the queued requests into model calls of up to `max_batch` items."""

    def __init__(self, predictor: Predictor, max_batch: int, max_wait_ms: float) -> None:
        self.predictor = predictor
        self.requests = requests_for(predictor.inputs)
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.stats = Stats()
        self.queue: asyncio.Queue[Job] | None = None
        self.worker: asyncio.Task | None = None
        # One thread: model calls run one at a time, each with torch's own threads.
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="trainlab-model")

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self.worker = asyncio.create_task(self.gather())

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.worker
        self.executor.shutdown(wait=True)

    async def predict(self, items: list[Any], where: str) -> list[dict[str, Any]]:
        """The answers for one request's checked items (after those queued before it)."""
        assert self.queue is not None, "start() first"
        job = Job(items, where, asyncio.get_running_loop().create_future())
        await self.queue.put(job)
        return await job.future

    async def gather(self) -> None:
        """The worker: forever, one batch of queued requests after another."""
        assert self.queue is not None
        held: Job | None = None  # the request that did not fit into the last call
        while True:
            batch, held = await self.next_batch(held)
            try:
                await self.call(batch)
            except Exception as ex:  # never let the worker die: later requests would hang
                log.error(f"error: the batching worker: {_line(ex)}")
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(ex)

    async def next_batch(self, held: Job | None) -> tuple[list[Job], Job | None]:
        """The first queued request (or the one held back), then those queued or arriving
        within `max_wait` of it, up to `max_batch` items; and the one that did not fit."""
        assert self.queue is not None
        loop = asyncio.get_running_loop()
        first = held or await self.queue.get()
        batch, size = [first], len(first.items)
        deadline = loop.time() + self.max_wait
        while size < self.max_batch:
            try:
                job = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self.queue.get(), remaining)
                except TimeoutError:
                    break
            if size + len(job.items) > self.max_batch:
                return batch, job
            batch.append(job)
            size += len(job.items)
        return batch, None

    async def call(self, batch: list[Job]) -> None:
        """Answer a batch with one model call on the model's thread."""
        batch = [job for job in batch if not job.future.done()]  # a client gone: skip
        if not batch:
            return
        loop = asyncio.get_running_loop()
        try:
            answers = await loop.run_in_executor(self.executor, self.answer, batch)
        except Exception as ex:  # a fault of the model call: every request of it hears
            answers = [ex] * len(batch)
        for job, answer in zip(batch, answers, strict=True):
            if job.future.done():
                continue
            if isinstance(answer, BaseException):
                job.future.set_exception(answer)
            else:
                job.future.set_result(answer)

    def answer(self, batch: list[Job]) -> list[Any]:
        """Encode the whole batch and predict it in one model call. Should the batch's
        encoding fail, each request is encoded on its own, so only a bad one gets the error
        (and the good ones still share one model call)."""
        answers: dict[int, Exception] = {}
        try:
            items = [item for job in batch for item in job.items]
            where = "inputs" if len(batch) > 1 else batch[0].where
            encoded = self.requests.encode(items, where)
            good = batch
        except Exception:
            good, parts = [], []
            for position, job in enumerate(batch):
                try:
                    parts.append(self.requests.encode(job.items, job.where))
                    good.append(job)
                except Exception as ex:
                    answers[position] = ex
            if not parts:
                return [answers[position] for position in range(len(batch))]
            encoded = torch.cat(parts)
        rows = iter(self.answer_each(good, self.model_call(encoded)))
        return [answers[p] if p in answers else next(rows) for p in range(len(batch))]

    @torch.inference_mode()
    def model_call(self, encoded: torch.Tensor) -> torch.Tensor:
        outputs = self.predictor.model(encoded)
        self.stats.model_calls += 1
        self.stats.largest_batch = max(self.stats.largest_batch, len(encoded))
        return outputs

    def answer_each(self, batch: list[Job], outputs: torch.Tensor) -> list[Any]:
        """Per request, one answer per item: `prediction`, and `probabilities` by class."""
        predictor = self.predictor
        if predictor.info.task == "regression":
            values = _finite(predictor.values(outputs).tolist())
            rows = [{"prediction": v[0] if len(v) == 1 else v} for v in values]
        else:
            probabilities = predictor.probabilities(outputs)
            names = predictor.info.class_names
            chosen = probabilities.argmax(dim=1).tolist()
            rows = [
                {"prediction": names[best], "probabilities": dict(zip(names, p, strict=True))}
                for best, p in zip(chosen, _finite(probabilities.tolist()), strict=True)
            ]
        answers, start = [], 0
        for job in batch:
            answers.append(rows[start : start + len(job.items)])
            start += len(job.items)
            self.stats.requests += 1
            self.stats.items += len(job.items)
        return answers


def _finite(rows: list[list[float]]) -> list[list[float | None]]:
    """JSON has no NaN or infinity: a diverged model's value is null."""
    return [[v if math.isfinite(v) else None for v in row] for row in rows]


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("trainlab", "torch", "fastapi", "uvicorn"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "unknown"
    return found


def _line(ex: BaseException) -> str:
    """An exception as one line (trainlab's own say the fix; others their type)."""
    text = (str(ex).strip().splitlines() or [""])[0]
    return text if isinstance(ex, TrainlabError) else f"{type(ex).__name__}: {text}"


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class RequestLog:
    """ASGI middleware: one line per request (method, path, status, items, ms)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            ms = (time.perf_counter() - start) * 1000
            items = scope.get("trainlab_items", 0)
            log.info(f"{scope['method']} {scope['path']} {status[0]} items={items} {ms:.1f} ms")


def build_app(predictor: Predictor, run_dir: Path, max_batch: int, max_wait_ms: float) -> FastAPI:
    """The server's ASGI app for a loaded run."""
    batcher = Batcher(predictor, max_batch, max_wait_ms)
    info = predictor.info

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(
        title=f"trainlab: {run_dir.name}",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.batcher = batcher
    app.add_middleware(RequestLog)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, ex: HTTPException) -> JSONResponse:
        if ex.status_code == 404:
            message = f"{request.url.path}: no such endpoint; the server answers {ENDPOINTS}"
        elif ex.status_code == 405:
            message = f"{request.method} {request.url.path}: not allowed; it answers {ENDPOINTS}"
        else:
            message = str(ex.detail)
        return error(ex.status_code, message)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/metadata")
    async def metadata() -> dict[str, Any]:
        about: dict[str, Any] = {
            "run": str(run_dir.resolve()),
            "checkpoint": str(predictor.checkpoint.resolve()),
            "data": info.name,
            "task": info.task,
        }
        if info.task == "regression":
            about["targets"] = info.num_targets
        else:
            about["classes"] = info.class_names
        about["input"] = batcher.requests.describe()
        about["body"] = '{"input": item} or {"inputs": [item, ...]}'
        about["batching"] = {"max_batch": max_batch, "max_wait_ms": max_wait_ms}
        about["versions"] = versions()
        about["stats"] = asdict(batcher.stats)
        return about

    @app.post("/predict")
    async def predict(request: Request) -> Any:
        try:
            length = int(request.headers.get("content-length") or 0)
            if length > MAX_BODY_BYTES:
                raise RequestError(
                    f"body: {length} bytes; the server takes at most {MAX_BODY_BYTES} per "
                    "request: split the batch",
                    413,
                )
            raw = bytearray()
            async for chunk in request.stream():
                raw += chunk
                if len(raw) > MAX_BODY_BYTES:
                    raise RequestError(f"body: over {MAX_BODY_BYTES} bytes; split the batch", 413)
            if not raw.strip():
                raise RequestError('body: empty; send JSON, e.g. {"inputs": [...]}', 400)
            try:
                body = json.loads(raw)
            except (ValueError, RecursionError) as ex:
                raise RequestError(f"body: not valid JSON ({ex})", 400) from None
            items, batch = items_of(body, max_batch)
            request.scope["trainlab_items"] = len(items)
            checked = batcher.requests.check(items, batch)
            answers = await batcher.predict(checked, "inputs" if batch else "input")
        except RequestError as ex:
            return error(ex.status, str(ex))
        except TrainlabError as ex:  # the run's own encoding refused a value
            return error(422, _line(ex))
        except Exception as ex:  # a fault of the server's, not the request's: it goes on
            log.error(f"error: POST /predict: {_line(ex)}")
            return error(500, f"the server failed on this request ({_line(ex)})")
        # Serialised here: FastAPI's encoder walks every value again, a cost per request.
        payload = {"predictions": answers} if batch else answers[0]
        return Response(json.dumps(payload), media_type="application/json")

    return app
