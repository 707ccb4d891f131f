"""Optional sampling profiles of the services during the gateway rows (`--profile DIR`), with py-spy.

py-spy is not a project dependency: `.venv/bin/pip install py-spy` to use this. Each profile is written as
py-spy's raw (collapsed stack) format, `<service>-c<level>.txt`, plus a `.top.txt` summary of the functions
with the most samples, self and inclusive, so hot paths read without a flame graph tool.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

#: Samples per second; low enough that the profiler does not steal much CPU from the two cores.
RATE_HZ = 100
TOP_N = 30
_FRAME = re.compile(r"(.*) \((.*):\d+\)")


def py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


async def record(pids: dict[str, int], duration_s: float, out_dir: Path, level: int) -> list[Path]:
    """Profile every process in `pids` for `duration_s` at once; returns the summary files written."""
    binary = py_spy()
    if binary is None:
        raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
    _ensure_dir(out_dir)
    runs = []
    for name, pid in pids.items():
        raw = out_dir / f"{name}-c{level}.txt"
        args = ["record", "--pid", str(pid), "--duration", str(max(1, int(duration_s)))]
        args += ["--rate", str(RATE_HZ), "--format", "raw", "--nonblocking", "-o", str(raw)]
        process = await asyncio.create_subprocess_exec(
            binary, *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        runs.append((raw, process))
    for _, process in runs:
        await process.wait()
    return _write_summaries([raw for raw, _ in runs])


def _ensure_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def _write_summaries(raws: list[Path]) -> list[Path]:
    written = []
    for raw in raws:
        if raw.exists():
            summary = raw.with_suffix(".top.txt")
            summary.write_text(summarize(raw.read_text()))
            written.append(summary)
    return written


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    function, path = match.groups()
    return f"{function} ({path.split('site-packages/')[-1].split('/work/main/')[-1]})"


def summarize(collapsed: str) -> str:
    """Top functions by self and by inclusive samples, as percentages of all samples."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        if not line.strip():
            continue
        stack, count = line.rsplit(" ", 1)
        frames = [_short(f) for f in stack.split(";")]
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    lines = [f"{total} samples at {RATE_HZ} Hz", "", "self:"]
    lines += [f"{100 * n / total:6.1f}%  {f}" for f, n in own.most_common(TOP_N)]
    lines += ["", "inclusive:"]
    lines += [f"{100 * n / total:6.1f}%  {f}" for f, n in inclusive.most_common(TOP_N * 2)]
    return "\n".join(lines) + "\n"
