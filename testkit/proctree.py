"""A process and everything it started, read from /proc (Linux): pids, resident memory, CPU time.

The digits server is a tree: the gRPC process, a forkserver, the preprocessing workers forked from
it and the model process. Tests and the hostile-input benchmark measure the whole tree."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return text.rsplit(")", 1)[1].split()  # fields from 3 (state) on; the name may hold spaces


def children_of(pids: set[int]) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None and int(fields[1]) in pids:
                found.add(int(entry))
    return found


def tree(root: int) -> list[int]:
    """`root` and all its descendants that are alive now."""
    seen = {root}
    frontier = {root}
    while frontier:
        frontier = children_of(frontier) - seen
        seen |= frontier
    return sorted(pid for pid in seen if _stat(pid) is not None)


def rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0


def peak_rss_bytes(pid: int) -> int:
    """The process's high-water mark of resident memory (VmHWM) since it started."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process itself (not of its children)."""
    fields = _stat(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / _TICKS


def state(pid: int) -> str:
    fields = _stat(pid)
    return "gone" if fields is None else fields[0]


@dataclass(frozen=True)
class TreeSample:
    pids: tuple[int, ...]
    rss: int  # bytes, summed over the tree
    cpu: float  # seconds, summed over the processes alive now


def sample(root: int) -> TreeSample:
    pids = tree(root)
    return TreeSample(tuple(pids), sum(rss_bytes(p) for p in pids), sum(cpu_seconds(p) for p in pids))


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of `root` and its live descendants: read before and after a benchmark
    round, the difference over the answers is the server's CPU per answered request."""
    return sample(root).cpu
