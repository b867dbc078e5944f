"""Part 5 of the tutorial: the buildpack's integration tests (`buildpack/integration/`), run from the
notebook on a work copy of the buildpack, broken on purpose and fixed.

- `run_suite` runs the suite as a subprocess (`python -m pytest buildpack/integration --buildpack DIR
  --target T -k SELECT`), printing pytest's output line by line as it comes, and returns a `SuiteRun`
  with the outcome of each test (read from pytest's JUnit XML report, not from the text);
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
    message: str = ""


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
                  cf_params: Path | None = None, junit_xml: Path | None = None) -> list[str]:
    """The pytest command line that runs the suite on `buildpack_dir` (`select` is a `-k` expression)."""
    if target not in ("local", "cf"):
        raise ValueError(f"target must be 'local' or 'cf', not {target!r}.")
    argv = [sys.executable, "-m", "pytest", str(integration_dir()), "--buildpack", str(Path(buildpack_dir).resolve()),
            "--target", target, "-n", "0", "-p", "no:cacheprovider", "-v", "--tb=short", "-rfE"]
    if select:
        argv += ["-k", select]
    if cf_params is not None:
        argv += ["--cf-params", str(Path(cf_params).resolve())]
    if junit_xml is not None:
        argv += ["--junitxml", str(Path(junit_xml).resolve())]
    return argv


def _read_junit(path: Path) -> list[TestOutcome]:
    if not path.is_file():
        return []
    outcomes = []
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name", "?")
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                message = "\n".join(filter(None, [child.get("message", ""), child.text or ""]))
                break
        outcomes.append(TestOutcome(name, outcome, message))
    return outcomes


def run_suite(buildpack_dir: Path, *, target: str = "local", select: str | None = "uncached",
              cf_params: Path | None = None, report_dir: Path | None = None, log: Log = print) -> SuiteRun:
    """Run the integration suite on `buildpack_dir`, printing pytest's output line by line as it
    comes (the command first, as a learner would type it), and return its outcome."""
    buildpack_dir = Path(buildpack_dir)
    if not (buildpack_dir / "manifest.yml").is_file():
        raise FileNotFoundError(f"{buildpack_dir} has no manifest.yml: give the buildpack's work copy.")
    report_dir = Path(report_dir) if report_dir is not None else buildpack_dir.parent / "suite-reports"
    report_dir.mkdir(parents=True, exist_ok=True)
    junit = report_dir / "junit.xml"
    junit.unlink(missing_ok=True)
    argv = suite_command(buildpack_dir, target=target, select=select, cf_params=cf_params, junit_xml=junit)
    root = integration_dir().parents[1]
    shown = ["pytest", os.path.relpath(integration_dir(), root), "--buildpack",
             os.path.relpath(buildpack_dir.resolve(), root), "--target", target]
    if select:
        shown += ["-k", select]
    if cf_params is not None:
        shown += ["--cf-params", os.path.relpath(Path(cf_params).resolve(), root)]
    log("$ " + shlex.join(shown) + "   # from the repository's root")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    lines: list[str] = []
    # From the repository's root: its pyproject.toml loads the harness's plugin (`-p sidecarlab.testing.plugin`).
    with subprocess.Popen(argv, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            log(line.rstrip("\n"))
        returncode = proc.wait()
    return SuiteRun(argv, returncode, "".join(lines), _read_junit(junit))


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
