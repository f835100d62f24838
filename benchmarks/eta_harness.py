"""ETA accuracy: replay the recorded batch traces through four estimators and score them.

For every batch completed after 10 % of the file's bytes, each estimator's ETA is compared
with the true remaining time (the trace's last batch time minus now): the error is
|ETA - true| / true. "between batches" scores the ETA shown every 0.1 s between events
(the last ETA counted down; ours uses `eta.at`, which also grows during a stall). Prints
the table and rewrites it in docs/eta.md. Run from the repo root:

    python -m benchmarks.eta_harness        (or: make eta-eval)

Traces are recorded by `python -m benchmarks.eta.record` (see that module). The headline
tables come from benchmarks/eta/traces/*.jsonl, recorded on a quiet machine. Two more
groups are scored the same way and reported separately: benchmarks/eta/traces/churn/
(recorded with `--churn`: busy loops that come and go, a shared server) and
benchmarks/eta/traces/noisy/ (recorded while other engineers loaded the machine, with
disturbances that ended again).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.eta.estimators import ESTIMATORS, Ours

TRACES = Path(__file__).parent / "eta" / "traces"
CHURN = TRACES / "churn"
NOISY = TRACES / "noisy"
# The groups reported under the headline one: directory and heading.
OTHER_GROUPS = (
    (CHURN, "Shared-machine set, scripted churn (benchmarks/eta/traces/churn/)"),
    (NOISY, "Noisy-machine set (benchmarks/eta/traces/noisy/)"),
)
DOC = Path(__file__).parent.parent / "docs" / "eta.md"
START, END = "<!-- eta-table:start -->", "<!-- eta-table:end -->"
AFTER = 0.10  # score only once this fraction of the bytes is done
GRID = 0.1  # seconds between "between batches" samples


@dataclass
class Trace:
    """One recorded run: its header and batches."""

    name: str
    header: dict[str, Any]
    batches: list[dict[str, Any]]


@dataclass
class Score:
    """Relative errors of one estimator on one or more traces."""

    at_batches: list[float] = field(default_factory=list)
    between: list[float] = field(default_factory=list)
    missing: int = 0  # evaluation points with no ETA at all
    points: int = 0
    inside: int = 0  # true remaining time within the reported range (ours only)

    def add(self, other: Score) -> None:
        """Pool another score into this one."""
        self.at_batches += other.at_batches
        self.between += other.between
        self.missing += other.missing
        self.points += other.points
        self.inside += other.inside


def load(directory: Path = TRACES) -> list[Trace]:
    """Every trace in `directory`, by name."""
    traces = []
    for path in sorted(directory.glob("*.jsonl")):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        traces.append(Trace(path.stem, lines[0], lines[1:]))
    return traces


def replay(trace: Trace, name: str) -> Score:
    """Feed one trace to one estimator; score its ETAs."""
    total = int(trace.header["bytes_total"])
    end = float(trace.batches[-1]["t"])
    estimator = ESTIMATORS[name](total)
    score = Score()
    samples = 0
    for i, b in enumerate(trace.batches):
        samples += int(b["samples"])
        t = float(b["t"])
        guess = estimator.observe(t, float(b["batch_seconds"]), int(b["samples"]), samples, int(b["bytes"]))
        if int(b["bytes"]) < AFTER * total or t >= end:
            continue
        score.points += 1
        if guess is None:
            score.missing += 1
        else:
            score.at_batches.append(abs(guess - (end - t)) / (end - t))
        if isinstance(estimator, Ours) and (bounds := estimator.range()) is not None:
            score.inside += bounds[0] <= end - t <= bounds[1]
        nxt = float(trace.batches[i + 1]["t"])
        for now in np.arange(t + GRID, nxt, GRID):
            shown = estimator.live(float(now))
            if shown is not None:
                score.between.append(abs(shown - (end - now)) / (end - now))
    return score


def evaluate(traces: list[Trace]) -> dict[str, tuple[Score, dict[str, Score]]]:
    """Per estimator: the pooled score and the score per trace."""
    result = {}
    for name in ESTIMATORS:
        pooled, per = Score(), {}
        for trace in traces:
            per[trace.name] = replay(trace, name)
            pooled.add(per[trace.name])
        result[name] = (pooled, per)
    return result


def _pct(values: list[float], q: float) -> str:
    return f"{100 * float(np.percentile(values, q)):.1f} %" if values else "-"


def table(
    traces: list[Trace], result: dict[str, tuple[Score, dict[str, Score]]], *, per_trace: bool = True
) -> str:
    """The markdown tables for docs/eta.md."""
    points = sum(s.points for s in result["ours"][1].values())
    lines = [
        f"Traces: {', '.join(t.name for t in traces)} ({points} scored batches). "
        f"Error = |ETA - true remaining| / true remaining, scored after {AFTER:.0%} of the bytes.",
        "",
        "| estimator | median | p90 | no ETA | median between batches | p90 between batches |",
        "|---|---|---|---|---|---|",
    ]
    for name, (s, _) in result.items():
        lines.append(
            f"| {name} | {_pct(s.at_batches, 50)} | {_pct(s.at_batches, 90)} | "
            f"{100 * s.missing / max(s.points, 1):.0f} % | {_pct(s.between, 50)} | {_pct(s.between, 90)} |"
        )
    sets = sorted({t.name.partition("-")[2] for t in traces})
    if len(sets) > 1:
        # Traces recorded again (`--tag`) are a check that tuning on one set did not overfit.
        lines += ["", "Median (p90) per recording set:", "", "| set | " + " | ".join(result) + " |"]
        lines.append("|---|" + "---|" * len(result))
        for tag in sets:
            cells = []
            for name in result:
                errors = [
                    e
                    for t in traces
                    if t.name.partition("-")[2] == tag
                    for e in result[name][1][t.name].at_batches
                ]
                cells.append(f"{_pct(errors, 50)} ({_pct(errors, 90)})")
            lines.append(f"| {tag or 'first'} | " + " | ".join(cells) + " |")
    ours = result["ours"][0]
    lines += [
        "",
        f"Our range (eta_low_seconds .. eta_high_seconds) held the true remaining time at "
        f"{100 * ours.inside / max(ours.points, 1):.0f} % of the scored batches.",
    ]
    if not per_trace:
        return "\n".join(lines)
    lines += [
        "",
        "Median error per trace:",
        "",
        "| trace | duration | batches | " + " | ".join(result) + " |",
        "|---|---|---|" + "---|" * len(result),
    ]
    for trace in traces:
        cells = [_pct(result[name][1][trace.name].at_batches, 50) for name in result]
        lines.append(
            f"| {trace.name} | {trace.batches[-1]['t']:.0f} s | {len(trace.batches)} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def write_doc(text: str, doc: Path = DOC) -> None:
    """Replace the table between the markers in docs/eta.md."""
    body = doc.read_text()
    head, rest = body.split(START, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{START}\n{text}\n{END}{tail}")


def main() -> int:
    """Score the stored traces, print the table, update docs/eta.md."""
    traces = load()
    if not traces:
        print(f"no traces in {TRACES}; record them with python -m benchmarks.eta.record", file=sys.stderr)
        return 1
    text = table(traces, evaluate(traces))
    for directory, heading in OTHER_GROUPS:
        group = load(directory)
        if group:
            text += f"\n\n### {heading}\n\n" + table(group, evaluate(group), per_trace=False)
    print(text)
    write_doc(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
