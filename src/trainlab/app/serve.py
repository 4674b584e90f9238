"""`trainlab serve run=<run folder> [host=127.0.0.1] [port=8000] [max_batch=256]
[max_wait_ms=2] [checkpoint=best]`: a trained run behind HTTP.

The server is FastAPI on uvicorn (see docs/serve.md) around the same `trainlab.Predictor`
that `trainlab predict` uses, so both encode inputs and predict alike. The checks that
need no model (the options, the run folder, the address) come first, so a mistake ends in
one line before the model is loaded.
"""

from __future__ import annotations

import errno
import logging
import math
import socket
import sys
from pathlib import Path

from trainlab.errors import TrainlabError

log = logging.getLogger("trainlab")

USAGE = (
    "usage: trainlab serve run=<run folder> [host=127.0.0.1] [port=8000] [max_batch=256] "
    "[max_wait_ms=2] [checkpoint=best|last|<file.pt>]"
)
DEFAULTS = {"host": "127.0.0.1", "port": "8000", "max_batch": "256", "max_wait_ms": "2"}
KEYS = ("run", "host", "port", "max_batch", "max_wait_ms", "checkpoint")
MAX_BATCH_LIMIT = 65536
MAX_WAIT_LIMIT_MS = 10_000


def parse_args(argv: list[str]) -> dict[str, str]:
    """`key=value` arguments into a dict (with defaults); anything else is an error."""
    from trainlab.app.arguments import parse_options

    return parse_options(argv, KEYS, ("run",), USAGE, defaults=DEFAULTS)


def whole_number(options: dict[str, str], key: str, low: int, high: int, example: str) -> int:
    text = options[key]
    try:
        number = int(text)
    except ValueError:
        raise TrainlabError(f"{key}={text} is not a whole number; e.g. {key}={example}") from None
    if not low <= number <= high:
        raise TrainlabError(
            f"{key}={number} is out of range ({low} to {high}); e.g. {key}={example}"
        )
    return number


def wait_ms(options: dict[str, str]) -> float:
    text = options["max_wait_ms"]
    try:
        value = float(text)
    except ValueError:
        raise TrainlabError(f"max_wait_ms={text} is not a number; e.g. max_wait_ms=2") from None
    if not math.isfinite(value) or not 0 <= value <= MAX_WAIT_LIMIT_MS:
        raise TrainlabError(
            f"max_wait_ms={text} is out of range (0 to {MAX_WAIT_LIMIT_MS}); e.g. max_wait_ms=2"
        )
    return value


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port and listening; a taken or impossible address is refused
    in one line (before the model is loaded)."""
    fix = "use host=127.0.0.1 (this machine only) or host=0.0.0.0 (every interface)"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as ex:
        reason = getattr(ex, "strerror", None) or type(ex).__name__
        raise TrainlabError(f"host={host}: not an address to listen on ({reason}); {fix}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart can reuse the port
    try:
        sock.bind(address)
        sock.listen(2048)  # clients that come before the loop runs wait in the backlog
    except OSError as ex:
        sock.close()
        if ex.errno == errno.EADDRINUSE:
            raise TrainlabError(
                f"port={port} is in use on {host} (another server?); stop it or choose "
                f"another port, e.g. port={port + 1 if port < 65535 else 8000}"
            ) from None
        if ex.errno == errno.EACCES:
            raise TrainlabError(
                f"port={port}: permission denied (ports below 1024 need root); "
                "choose e.g. port=8000"
            ) from None
        if ex.errno == errno.EADDRNOTAVAIL:
            raise TrainlabError(f"host={host} is not an address of this machine; {fix}") from None
        raise TrainlabError(
            f"cannot listen on {host}:{port} ({ex.strerror or type(ex).__name__}); {fix}"
        ) from None
    return sock


def serve_command(argv: list[str]) -> None:
    """Check everything, load the run, then serve until stopped (SIGINT or SIGTERM)."""
    options = parse_args(argv)
    port = whole_number(options, "port", 0, 65535, "8000")
    max_batch = whole_number(options, "max_batch", 1, MAX_BATCH_LIMIT, "256")
    max_wait = wait_ms(options)
    run_dir = Path(options["run"])

    from trainlab.app.predict_run import load_data_info

    load_data_info(run_dir)  # a wrong folder is said before the address is taken
    sock = listen(options["host"], port)
    try:
        import uvicorn

        from trainlab.app.predict import Predictor
        from trainlab.app.serve_app import ENDPOINTS, build_app
        from trainlab.engine import preemption

        predictor = Predictor.load(run_dir, options.get("checkpoint"))
        app = build_app(predictor, run_dir, max_batch, max_wait)
        config = uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=5
        )
        server = uvicorn.Server(config)
        host, bound = sock.getsockname()[:2]
        url = f"http://[{host}]:{bound}" if ":" in host else f"http://{host}:{bound}"
        info = predictor.info
        what = f"{len(info.class_names)} classes" if info.task != "regression" else "regression"
        log.info(
            f"serving run={run_dir} ({info.name}, {what}) at {url} ({ENDPOINTS}); "
            f"max_batch={max_batch}, max_wait_ms={max_wait:g}; Ctrl+C stops"
        )
        try:
            server.run(sockets=[sock])
        except (KeyboardInterrupt, preemption.Stopped) as ex:
            # uvicorn shut down gracefully, then passed the signal on: the server's end.
            name = "SIGINT" if isinstance(ex, KeyboardInterrupt) else ex.signal_name
            log.info(
                f"server stopped ({name}); answered {app.state.batcher.stats.requests} "
                "prediction request(s)"
            )
    finally:
        sock.close()


def serve_main(argv: list[str]) -> None:
    """`trainlab serve ...`."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    serve_command(argv)
