"""Minutes per part for the instructor's agenda: each part headless (measured), and a learner's pace
(estimated from the measurement and the notebook's text).

Headless: `sidecarlab run 01 02 03 04 05` on a throwaway localcf, work dir and object-store state
dir, after one warm-up run (Go build cache, kernel, system buildpacks), as benchmarks/tutorial.py.

Learner pace, per part, in minutes:
    headless seconds / 60                     (the cells' own running time, which a learner waits for)
  + words / 200                               (reading every markdown and code cell at 200 words a minute)
  + EXERCISE_MINUTES x exercises              (thinking and typing, per `## Exercise` heading)
rounded up to a whole minute. Words are whitespace-separated tokens of the cells' sources.

Run: .venv/bin/python benchmarks/parts.py [--no-warm-up]
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat
from common import ROOT, Platform, record
from tutorial import PARTS, run_tutorial

WORDS_PER_MINUTE = 200
EXERCISE_MINUTES = 5


def reading(path: Path) -> tuple[int, int]:
    """(words to read, exercises) of a notebook."""
    nb = nbformat.read(str(path), as_version=4)
    words = sum(len(cell.source.split()) for cell in nb.cells)
    exercises = sum(1 for cell in nb.cells if cell.cell_type == "markdown"
                    and "exercise" in cell.metadata.get("tags", []) and cell.source.lstrip().startswith("## Exercise"))
    return words, exercises


def main() -> None:
    warm_up = "--no-warm-up" not in sys.argv[1:]
    load_before = os.getloadavg()
    scratch = Path(tempfile.mkdtemp(prefix="sidecarlab-bench-"))
    try:
        with Platform() as cf:
            cf("start")
            if warm_up:
                run_tutorial(cf, scratch, "warm-up")
            total, summary = run_tutorial(cf, scratch, "measured")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    parts = {}
    for notebook in summary["notebooks"]:
        path = Path(notebook["notebook"])
        words, exercises = reading(ROOT / "notebooks" / path.name)
        headless = notebook["seconds"]
        pace = headless / 60 + words / WORDS_PER_MINUTE + EXERCISE_MINUTES * exercises
        parts[path.stem] = {"headless_s": headless, "words": words, "exercises": exercises,
                            "learner_minutes": math.ceil(pace)}
    record("parts", {"parts": parts, "headless_total_s": round(total, 1),
                     "learner_total_minutes": sum(p["learner_minutes"] for p in parts.values()),
                     "warm_up": warm_up,
                     # other work on the machine slows the headless figures (not the reading estimate)
                     "load_average_1m": {"before": round(load_before[0], 1), "after": round(os.getloadavg()[0], 1)},
                     "words_per_minute": WORDS_PER_MINUTE,
                     "exercise_minutes": EXERCISE_MINUTES, "parts_run": PARTS})


if __name__ == "__main__":
    main()
