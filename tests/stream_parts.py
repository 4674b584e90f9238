"""Test-only parts for the streaming tests: a callback that SIGKILLs its own process
after the optimizer step named in $TRAINLAB_TEST_KILL_AT_STEP (nothing is saved then), and
a real memory limit for a child process (a cgroup), which the memory bar runs under."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from trainlab.components.callbacks import Callback

VARIABLE = "TRAINLAB_TEST_KILL_AT_STEP"
CGROUP_V1 = Path("/sys/fs/cgroup/memory")
CGROUP_V2 = Path("/sys/fs/cgroup")


class KillAtStep(Callback):
    def __init__(self) -> None:
        self.step = int(os.environ.get(VARIABLE, "-1"))

    def on_train_step_end(self, trainer, state) -> None:
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class MemoryGroup:
    """A child cgroup with a hard memory limit. `prefix` starts a command inside it (the
    shell writes its own pid into the group, then execs the command); `peak` is the most
    memory the group used (cgroup v1 counts page cache too, which it reclaims first)."""

    def __init__(self, folder: Path, version: int) -> None:
        self.folder, self.version = folder, version

    @property
    def prefix(self) -> list[str]:
        procs = self.folder / "cgroup.procs"
        return ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh"]

    @property
    def peak(self) -> int:
        name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
        path = self.folder / name
        return int(path.read_text()) if path.exists() else -1

    @property
    def oom_kills(self) -> int:
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        for line in (self.folder / name).read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return 0


def _writable(folder: Path, name: str) -> bool:
    return (folder / name).exists() and os.access(folder, os.W_OK)


@contextmanager
def memory_limit(limit: int) -> Iterator[MemoryGroup | None]:
    """A `MemoryGroup` limited to `limit` bytes (cgroup v1 memory controller, else v2
    `memory.max`), removed afterwards; None when neither can be written here."""
    name = f"trainlab-test-{uuid.uuid4().hex[:8]}"
    if _writable(CGROUP_V1, "memory.limit_in_bytes"):
        group, version, setting = CGROUP_V1 / name, 1, "memory.limit_in_bytes"
    elif (
        _writable(CGROUP_V2, "cgroup.subtree_control")
        and "memory" in (CGROUP_V2 / "cgroup.controllers").read_text().split()
    ):
        group, version, setting = CGROUP_V2 / name, 2, "memory.max"
    else:
        yield None
        return
    try:
        group.mkdir()
        (group / setting).write_text(str(limit))
        if version == 1 and (group / "memory.swappiness").exists():
            (group / "memory.swappiness").write_text("0")  # the limit is on memory, not swap
    except OSError:
        if group.exists():
            group.rmdir()
        yield None
        return
    try:
        yield MemoryGroup(group, version)
    finally:
        group.rmdir()  # its processes have ended: an empty group can be removed
