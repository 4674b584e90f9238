"""A throwaway PostgreSQL server for tests: initdb in a temporary folder, started on
127.0.0.1 and a free port (its unix socket in that folder too), stopped and removed after.

Uses Debian's `postgresql` package (`/usr/lib/postgresql/<version>/bin`) or whatever
`pg_ctl` is on PATH. PostgreSQL refuses to run as root: as root, the server runs as the
`postgres` user (the package creates it) through `runuser`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

USER = "trainlab"
PASSWORD = "s3cret-pw"


def find_bin() -> Path | None:
    """The folder of PostgreSQL's server programs (newest version first), or None."""
    found = shutil.which("pg_ctl")
    candidates = [found] if found else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    for candidate in candidates:
        folder = Path(os.path.realpath(candidate)).parent
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server; yield the SQLAlchemy URL (with a password) of an empty database."""
    bin_dir = find_bin()
    if bin_dir is None:
        raise LookupError(
            "no PostgreSQL found (pg_ctl, /usr/lib/postgresql/*/bin): apt-get install postgresql"
        )
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="trainlab-pg-"))
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    (root / "pw").write_text(PASSWORD + "\n")
    os.chmod(root / "pw", 0o644)
    port = free_port()
    data = root / "data"

    def run(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, text=True, timeout=120)

    try:
        run(
            str(bin_dir / "initdb"), "-D", str(data), "-U", USER, f"--pwfile={root / 'pw'}",
            "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8",
        )  # fmt: skip
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"),
            "-w", "-t", "60", "start")  # fmt: skip
        try:
            run(str(bin_dir / "createdb"), "-h", str(root), "-p", str(port), "-U", USER, "sweeps")
            yield f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/sweeps"
        finally:
            subprocess.run(
                [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                capture_output=True,
                timeout=60,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
