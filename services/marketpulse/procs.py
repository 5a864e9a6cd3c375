"""Child processes for the dev supervisor and the benchmark: each runs one `marketpulse`
subcommand with its own log file, and all stop together (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    peak_rss: int = 0
    stopping: bool = False  # stopped on purpose: its exit is not a failure

    def sample_rss(self) -> int:
        """Resident memory of the process and its children, remembering the peak."""
        try:
            p = psutil.Process(self.proc.pid)
            rss = p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
        except psutil.Error:
            return self.peak_rss
        self.peak_rss = max(self.peak_rss, rss)
        return rss

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class ProcessGroup:
    log_dir: Path
    env: dict[str, str]
    children: list[Child] = field(default_factory=list)

    def spawn(self, name: str, *args: str, extra_env: dict[str, str] | None = None) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        env = {**os.environ, **self.env, **(extra_env or {})}
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "marketpulse", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # a Ctrl-C in the terminal reaches only the supervisor
            )
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    def check_alive(self) -> None:
        """Raise with the log's tail when a child died: a silent half-pipeline helps nobody."""
        for c in self.children:
            code = c.proc.poll()
            if code is not None and not c.stopping:
                raise RuntimeError(
                    f"process {c.name!r} exited with code {code}; last lines of {c.log}:\n"
                    + c.tail()
                )

    def sample_rss(self) -> None:
        for c in self.children:
            c.sample_rss()

    def stop(self, name: str | None = None, timeout: float = 20.0) -> None:
        targets = [c for c in self.children if name is None or c.name == name]
        for c in targets:
            c.stopping = True
            if c.proc.poll() is None:
                c.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for c in targets:
            try:
                c.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(c.proc.pid, signal.SIGKILL)
                c.proc.wait()
