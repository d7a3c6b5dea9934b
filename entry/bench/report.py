"""BENCHMARKS.md: each figure beside its baseline and its target, with the machine that measured it."""

from __future__ import annotations

import datetime
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

import openvino_genai as ov_genai


@dataclass(frozen=True)
class Figure:
    """One measured figure: ours, its baseline and their ratio where it has one, and its target."""

    key: str
    measure: str
    ours: str
    baseline: str
    ratio: float | None
    target: str
    met: bool | None
    note: str = ""


def at_least(ratio: float, target: float) -> tuple[float, str, bool]:
    """A ratio figure's ratio, target text and verdict (higher is better)."""
    return ratio, f"≥ {target:g}x", ratio >= target


@dataclass
class Report:
    """Everything one `bot bench` run measured."""

    model: str
    engine: str
    mode: str
    figures: list[Figure] = field(default_factory=list)
    sections: list[tuple[str, list[str]]] = field(default_factory=list)

    def add(self, *figures: Figure) -> None:
        """Add measured figures, in the order they appear."""
        self.figures.extend(figures)

    def section(self, title: str, lines: list[str]) -> None:
        """Add a titled block of detail under the table."""
        self.sections.append((title, lines))

    def markdown(self) -> str:
        """The whole BENCHMARKS.md text."""
        lines = [
            "# Benchmarks",
            "",
            f"Written by `bot bench` ({self.mode}) on {datetime.date.today().isoformat()}: {cpu_model()}, "
            f"{os.cpu_count()} cores, {platform.system()} {platform.machine()}, OpenVINO GenAI "
            f"{ov_genai.__version__}. Model: {self.model}; the bot's engine: {self.engine}.",
            "",
            "Each ratio compares two measurements taken side by side in this run; higher is better.",
            "",
            "| | measure | ours | baseline | ratio | target | met |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for figure in self.figures:
            ratio = "-" if figure.ratio is None else f"{figure.ratio:.2f}x"
            met = "-" if figure.met is None else ("yes" if figure.met else "**no**")
            lines.append(
                f"| {figure.key} | {figure.measure} | {figure.ours} | {figure.baseline} | {ratio} | {figure.target} "
                f"| {met} |"
            )
        notes = [f"- {f.key}: {f.note}" for f in self.figures if f.note]
        if notes:
            lines += ["", *notes]
        for title, body in self.sections:
            lines += ["", f"## {title}", "", *body]
        return "\n".join(lines) + "\n"

    def write(self, path: Path) -> None:
        """Write the report to ``path``."""
        path.write_text(self.markdown(), encoding="utf-8")


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it (the machine's architecture where it does not)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
