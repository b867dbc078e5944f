"""Part 5 of the tutorial: the buildpack's integration tests (`buildpack/integration/`), run from the
notebook on a work copy of the buildpack, broken on purpose and fixed.

- `run_suite` runs the suite as a subprocess (`python -m pytest buildpack/integration --buildpack DIR
  --target T -k SELECT`) and returns a `SuiteRun` with the outcome of each test (read from pytest's
  JUnit XML report, not from the text). What it prints is the same from run to run, so the executed
  notebook can be compared with a reference: one line per test as it finishes, then
  `suite_report` (each failure's claim and what it saw, each distinct staging log once, the counts),
  never pytest's header (versions, plugins), timings or tracebacks; those stay in
  `pytest-output.txt`, named at the end;
- `test_source` shows one test of the suite;
- `write_cf_params` writes the notebook's foundation settings where the suite's `--cf-params` reads
  them, for `--target cf`;
- the checks: `suite_passed` (every selected test passed, and at least one ran) and `suite_caught`
  (the suite failed, and a failing test's report names the fault). Each shows one pass line (`PASSED_MARK`) or
  raises `CheckFailed` with what was expected, what was seen and a hint.

The suite always runs on a work copy of the buildpack (`--buildpack`), never on the committed
`buildpack/`, so the learner can break it.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .checks import CheckFailed
from .checks.core import CheckResult
from .packager import default_buildpack_dir

Log = Callable[[str], None]


def integration_dir() -> Path:
    """The buildpack's integration tests, next to the repository's `buildpack/`."""
    return default_buildpack_dir() / "integration"


def test_source(name: str, module: str = "test_buildpack.py") -> str:
    """The source of one test function of the integration suite (to read it in the notebook)."""
    path = integration_dir() / module
    text = path.read_text()
    for node in ast.parse(text).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return ast.get_source_segment(text, node) or ""
    known = [n.name for n in ast.parse(text).body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]
    raise KeyError(f"{path.name} has no test {name!r}; its tests: {', '.join(known)}.")


@dataclass(frozen=True)
class TestOutcome:
    """One test of the suite: its id (`test_root_greets[uncached]`), outcome and failure text."""

    name: str
    outcome: str  # "passed", "failed", "error" or "skipped"
    message: str = ""  # the exception's message, then pytest's traceback
    exception: str = ""  # the exception's message alone (JUnit's `message` attribute)


@dataclass(frozen=True)
class SuiteRun:
    """One run of the integration suite."""

    command: list[str]
    returncode: int
    output: str
    tests: list[TestOutcome] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(1 for t in self.tests if t.outcome == outcome)

    @property
    def failing(self) -> list[TestOutcome]:
        return [t for t in self.tests if t.outcome in ("failed", "error")]

    def summary(self) -> str:
        parts = [f"{self.count(o)} {o}" for o in ("passed", "failed", "error", "skipped") if self.count(o)]
        return ", ".join(parts) or "no test ran"


def write_cf_params(path: Path, *, cf_api: str, cf_org: str, cf_space: str, cf_skip_ssl_validation: bool,
                    s3_endpoint: str, s3_bucket: str, s3_region: str) -> Path:
    """The notebook's foundation settings as the suite's `--cf-params` file (no credentials: those
    stay in the environment, CF_USERNAME/CF_PASSWORD and AWS_*)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    settings = {"cf_api": cf_api, "cf_org": cf_org, "cf_space": cf_space,
                "cf_skip_ssl_validation": bool(cf_skip_ssl_validation), "s3_endpoint": s3_endpoint,
                "s3_bucket": s3_bucket, "s3_region": s3_region}
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    return path


def suite_command(buildpack_dir: Path, *, target: str = "local", select: str | None = "uncached",
                  cf_params: Path | None = None, junit_xml: Path | None = None, learner: str = "") -> list[str]:
    """The pytest command line that runs the suite on `buildpack_dir` (`select` is a `-k` expression;
    `learner`, a workshop's learner on a shared foundation)."""
    if target not in ("local", "cf"):
        raise ValueError(f"target must be 'local' or 'cf', not {target!r}.")
    argv = [sys.executable, "-m", "pytest", str(integration_dir()), "--buildpack", str(Path(buildpack_dir).resolve()),
            "--target", target, "-n", "0", "-p", "no:cacheprovider", "-v", "--tb=short", "-rfE", "--color=no"]
    if select:
        argv += ["-k", select]
    if cf_params is not None:
        argv += ["--cf-params", str(Path(cf_params).resolve())]
    if learner:
        argv += ["--learner", learner]
    if junit_xml is not None:
        argv += ["--junitxml", str(Path(junit_xml).resolve())]
    return argv


def read_junit(path: Path) -> list[TestOutcome]:
    """The outcome of each test case in a pytest JUnit XML report (none when there is no report)."""
    if not path.is_file():
        return []
    outcomes = []
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name", "?")
        outcome, message, exception = "passed", "", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                text = _ANSI.sub("", child.text or "")
                # pytest shortens the `message` attribute of a long message ("[+12 more lines; ...]"); the
                # traceback's `E` lines hold the whole of it.
                exception = _exception_lines(text) or _ANSI.sub("", child.get("message", ""))
                message = "\n".join(filter(None, [_ANSI.sub("", child.get("message", "")), text]))
                break
        outcomes.append(TestOutcome(name, outcome, message, exception))
    return outcomes


# A test's result line in pytest's `-v` output (`path::test[param] PASSED [ 16%]`), and its collection line.
_RESULT_LINE = re.compile(r"^(?P<test>\S+::\S+) (?P<outcome>PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b")
_COLLECTED_LINE = re.compile(r"\bcollected \d+ items?\b.*$")
_DESELECTED = re.compile(r"(\d+) deselected")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Where a staging log quoted in a test's report ends: pytest's next section (`____ name ____`, `----
# captured ---`) or the traceback that follows the message (`path.py:35: in test_x`).
_SECTION_END = re.compile(r"^(?:[-_=]{4,}.*[-_=]{4,}|\S+\.py:\d+: in \S+)$")
#: How many lines of a failed staging's log the report shows (the end, where the buildpack says why).
STAGING_TAIL = 12


def _exception_lines(traceback: str) -> str:
    """The exception's message as pytest's traceback shows it: its `E   ` lines, without the marker."""
    lines = [line[1:].removeprefix("   ") for line in traceback.splitlines() if re.match(r"E(\s|$)", line)]
    return "\n".join(lines)


def run_suite(buildpack_dir: Path, *, target: str = "local", select: str | None = "uncached",
              cf_params: Path | None = None, report_dir: Path | None = None, learner: str = "",
              log: Log = print) -> SuiteRun:
    """Run the integration suite on `buildpack_dir` and return its outcome, printing a report that
    is the same from run to run: the command (as a learner would type it), then, as they come, the
    collection line and one line per test with its outcome; at the end, for each failing test its
    claim and what it saw, the staging log they name (once per distinct log), and the counts.

    pytest's whole output (its header, timings, tracebacks, every app's logs) goes to
    `pytest-output.txt` in `report_dir`, named at the end; the outcomes come from its JUnit report.
    With a `learner` (a workshop on one foundation), the air-gapped test takes the foundation's
    air-gap lease, as Part 4 does.
    """
    buildpack_dir = Path(buildpack_dir)
    if not (buildpack_dir / "manifest.yml").is_file():
        raise FileNotFoundError(f"{buildpack_dir} has no manifest.yml: give the buildpack's work copy.")
    report_dir = Path(report_dir) if report_dir is not None else buildpack_dir.parent / "suite-reports"
    report_dir.mkdir(parents=True, exist_ok=True)
    junit = report_dir / "junit.xml"
    junit.unlink(missing_ok=True)
    argv = suite_command(buildpack_dir, target=target, select=select, cf_params=cf_params, junit_xml=junit,
                         learner=learner)
    root = integration_dir().parents[1]
    shown = ["pytest", os.path.relpath(integration_dir(), root), "--buildpack",
             os.path.relpath(buildpack_dir.resolve(), root), "--target", target]
    if select:
        shown += ["-k", select]
    if cf_params is not None:
        shown += ["--cf-params", os.path.relpath(Path(cf_params).resolve(), root)]
    if learner:
        shown += ["--learner", learner]
    log("$ " + shlex.join(shown) + "   # from the repository's root")
    # Plain text: pytest colours its output when the environment asks (PY_COLORS, FORCE_COLOR).
    # The learner is the notebook's parameter, never one left in the environment.
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "PY_COLORS", "SIDECARLAB_LEARNER")}
    env.update(PYTHONUNBUFFERED="1", PY_COLORS="0", NO_COLOR="1")
    lines: list[str] = []
    collected = ""
    results = 0
    # From the repository's root: its pyproject.toml loads the harness's plugin (`-p sidecarlab.testing.plugin`).
    with subprocess.Popen(argv, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            text = _ANSI.sub("", line.rstrip("\n"))
            result = _RESULT_LINE.match(text)
            if result:
                results += 1
                log(f"{result.group('test')} {result.group('outcome')}")
            elif not collected and (found := _COLLECTED_LINE.search(text)):
                collected = found.group(0).strip()
                log(collected)
        returncode = proc.wait()
    output = "".join(lines)
    saved = report_dir / "pytest-output.txt"
    saved.write_text(output)
    run = SuiteRun(argv, returncode, output, read_junit(junit))
    for report_line in suite_report(run, collected, ran_any=results > 0):
        log(report_line)
    log(f"pytest's whole output (header, tracebacks, the apps' logs): {os.path.relpath(saved)}")
    return run


def suite_report(run: SuiteRun, collected: str = "", *, ran_any: bool = True) -> list[str]:
    """The end of `run_suite`'s report: each failure's claim and what it saw, each distinct staging log
    once, and the counts (without pytest's timings). When no test ran at all, pytest's last lines."""
    report: list[str] = []
    if not ran_any and not run.tests and run.returncode not in (0, 5):
        tail = run.output.strip().splitlines()[-STAGING_TAIL * 2:]
        return ["", f"pytest exited {run.returncode} before any test ran; its last lines:", *tail]
    logs: dict[tuple[str, ...], list[str]] = {}
    for test in run.failing:
        claim, seen, staging = _failure_parts(test.exception or test.message)
        report += ["", f"{test.outcome.upper()} {test.name}", f"  {claim}"]
        if seen:
            report.append(f"  {seen}")
        if staging:
            logs.setdefault(tuple(staging[-STAGING_TAIL:]), []).append(test.name)
    for staging_lines, names in logs.items():
        report += ["", f"the end of the staging log in the report of {', '.join(names)}:",
                   *(f"  {line}" for line in staging_lines)]
    deselected = _DESELECTED.search(collected)
    counts = run.summary() + (f", {deselected.group(1)} deselected" if deselected else "")
    report += ["", f"result: {counts} (pytest exited {run.returncode})"]
    return report


def _failure_parts(message: str) -> tuple[str, str, list[str]]:
    """A failing test's report, from its JUnit message: the claim (`claim failed: ...`), what was seen
    (`seen: ...`) and the staging log a ClaimFailed carries; any other error by its first line."""
    lines = [line.rstrip() for line in message.strip().splitlines()]
    claim_at = next((i for i, line in enumerate(lines) if "claim failed: " in line), None)
    if claim_at is None:
        first = lines[0] if lines else "(no message)"
        return first, "", []
    claim = lines[claim_at][lines[claim_at].index("claim failed: "):]
    seen = next((line.strip() for line in lines[claim_at + 1:] if line.strip().startswith("seen: ")), "")
    start = next((i for i, line in enumerate(lines) if line.strip().startswith("staging log (last ")), None)
    staging: list[str] = []
    if start is not None:
        for line in lines[start + 1:]:
            if not line.strip() or _SECTION_END.match(line.strip()):
                break
            staging.append(line.strip())
    return claim, seen, staging


# ===================================================================================== checks

def _report(result: CheckResult) -> CheckResult:
    return result.show()


def _names(tests: list[TestOutcome]) -> str:
    return ", ".join(t.name for t in tests) or "none"


def suite_passed(run: SuiteRun) -> CheckResult:
    """Every selected test of the suite passed, and at least one ran."""
    what = "the buildpack's integration suite passed"
    if not run.failing and run.count("passed") == 0 and run.returncode in (0, 5):  # 5: no test collected
        raise CheckFailed(what, "at least one test to run and pass", f"{run.summary()} (pytest exited {run.returncode})",
                          "The `-k` selection matched no test, or every test was skipped: select `uncached` or "
                          "`cached`, or nothing for both.")
    if run.returncode != 0 or run.failing:
        first = run.failing[0] if run.failing else None
        seen = f"pytest exited {run.returncode} ({run.summary()}); failing: {_names(run.failing)}"
        if first is not None:
            seen += f"\n{first.name}: {first.message.strip().splitlines()[0] if first.message.strip() else ''}"
        raise CheckFailed(what, "every selected test to pass", seen,
                          "Read the failing test's report above (its claim, then the staging log). Is the work "
                          "copy still broken? Fix it and run the suite again.")
    passed = [t.name for t in run.tests if t.outcome == "passed"]
    skipped = f", {run.count('skipped')} skipped" if run.count("skipped") else ""
    return _report(CheckResult("passed", f"the buildpack's integration suite passed: {len(passed)} tests{skipped}",
                               data=passed))


def suite_caught(run: SuiteRun, fault: str) -> CheckResult:
    """The suite failed, and a failing test's report (its claim and the staging log) names `fault`."""
    what = f"the integration suite caught the fault ({fault!r})"
    if run.returncode == 0 and not run.failing:
        raise CheckFailed(what, "at least one failing test", f"the suite passed ({run.summary()})",
                          "A suite that passes on a broken buildpack proves nothing: is the fault really in the "
                          "work copy the suite ran on (`--buildpack`)? Break it, then run the suite again.")
    naming = [t for t in run.failing if fault in t.message]
    if not naming:
        seen = f"{run.summary()}; failing: {_names(run.failing)}"
        if not run.failing:
            seen += f"; pytest exited {run.returncode}:\n{run.output[-800:]}"
        raise CheckFailed(what, f"a failing test whose report names {fault!r}", seen,
                          "The suite failed for another reason than the fault you introduced: read its output "
                          "above.")
    return _report(CheckResult("passed", f"the integration suite caught the fault: {len(run.failing)} tests failed, "
                               f"{naming[0].name} names {fault!r}", data=[t.name for t in run.failing]))
