"""Part 5: the notebook runs green headless (the suite passes on the work copy, catches the learner's
wrong sha256, passes again once fixed) and leaves nothing behind; its checks fail when they should,
on real runs of the buildpack's integration suite: a suite that passes cannot count as having caught a
fault, a suite that fails for another reason than the named fault does not either, and a selection
that runs no test is not a pass."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import LocalCF
from test_blobstore import wait_until_gone

from sidecarlab import packager, part5, tutorial
from sidecarlab.checks import CheckFailed

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_5 = ROOT / "notebooks" / "05-integration-testing.ipynb"
SIDECARLAB = Path(sys.executable).parent / "sidecarlab"
# The suite on the work copy, on the copy broken by exercise 1, on the copy fixed by exercise 2.
PART5_CHECKS = 3
# One xdist worker for the suites these tests start: each brings up a platform of its own.
pytestmark = pytest.mark.xdist_group("buildpack-integration")


def outputs_text(path: Path) -> str:
    executed = nbformat.read(str(path), as_version=4)
    text = "\n".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", [])
                      if o.get("output_type") == "stream")
    return re.sub(r"\x1b\[[0-9;]*m", "", text)  # pytest may colour its output


@pytest.fixture
def kit_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The kit's state (the embedded S3 server the suite starts) and work folder under tmp_path."""
    monkeypatch.setenv("SIDECARLAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SIDECARLAB_WORK", str(tmp_path / "work"))
    return tmp_path


@pytest.mark.timeout(900)  # a guard against hanging, not a performance claim
def test_part_5_runs_green_headless_and_leaves_nothing_behind(localcf: LocalCF, tmp_path: Path) -> None:
    env = dict(os.environ, LOCALCF_HOME=str(localcf.home), SIDECARLAB_WORK=str(tmp_path / "work"),
               SIDECARLAB_HOME=str(tmp_path / "home"))
    proc = subprocess.run([str(SIDECARLAB), "run", "05", "--out", str(tmp_path / "out"), "--no-progress"],
                          env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert "[1/1] 05-integration-testing (target local" in proc.stdout
    # the target's parameters file serves every part; Part 5 is given only those it declares
    assert "Passed unknown parameter" not in proc.stderr, proc.stderr

    (result,) = json.loads((tmp_path / "out" / "summary.json").read_text())["notebooks"]
    assert result["skipped_checks"] == []
    passed = result["passed_checks"]
    assert len(passed) == PART5_CHECKS
    assert "the buildpack's integration suite passed: 6 tests" in passed[0]
    assert "the integration suite caught the fault: " in passed[1] and "dependency sha256 mismatch" in passed[1]
    assert "the buildpack's integration suite passed: 6 tests" in passed[2]

    text = outputs_text(tmp_path / "out" / "notebooks" / NOTEBOOK_5.name)
    # pytest's own output, streamed into the notebook, for the one package selected
    assert text.count("$ pytest buildpack/integration --buildpack ") == 3
    assert text.count("part5/buildpack --target local -k uncached   # from the repository's root") == 3
    assert "test_root_greets[uncached] PASSED" in text and "test_root_greets[uncached] FAILED" in text
    assert "[cached]" not in text
    assert "claim failed: GET / answers 200" in text
    assert "**ERROR** dependency sha256 mismatch: expected sha256 0123456789abcdef" in text
    # A report that is the same from run to run: no pytest header, no timings, no progress, the staging
    # log of the broken push once (not once per failing test), and the whole output kept in a file.
    assert "platform linux" not in text and "plugins:" not in text and " passed in " not in text
    assert "%]" not in text
    assert text.count("dependency sha256 mismatch: expected sha256 0123456789abcdef") == 1
    assert text.count("result: 6 passed, 6 deselected (pytest exited 0)") == 2
    assert "result: 2 passed, 4 failed, 6 deselected (pytest exited 1)" in text
    assert text.count("part5/suite-reports/pytest-output.txt") == 3
    # The learner's edits are shell lines they can read: the sha256 line as sed left it.
    assert '10:  sha256: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"' in text
    assert "def test_staging_logged_the_install_line(" in text

    # Cleaned up: the work folder, the S3 server; nothing pushed on the learner's platform.
    assert not (tmp_path / "work" / "part5").exists()
    assert wait_until_gone(tmp_path / "home" / "blobstore") == []
    assert "it-uncached" not in localcf("apps").out


def test_the_notebook_has_parameters_exercises_and_cleanup(tmp_path: Path) -> None:
    nb = nbformat.read(str(NOTEBOOK_5), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    for name in ("target", "suite_select", "s3_endpoint", "cf_api", "cf_org", "cf_space", "cf_skip_ssl_validation"):
        assert f"\n{name} = " in "\n" + code[0].source, name
    solutions = [i for i, c in enumerate(nb.cells) if "solution" in c.metadata.get("tags", [])]
    assert len(solutions) == 2
    for i in solutions:
        follower = nb.cells[i + 1]
        assert "solution" not in follower.metadata.get("tags", []) and "part5.suite_" in follower.source
    for i in solutions:
        # The learner edits manifest.yml with a shell line they can read, not with the kit's Python.
        lines = [line for line in nb.cells[i].source.splitlines() if line.strip()]
        assert lines and all(line.startswith(("!sed -i ", "!grep ")) for line in lines), nb.cells[i].source
        assert "{manifest_path}" in lines[0]
    assert "tutorial.remove_work_dir(work)" in code[-1].source
    assert all(not c.get("outputs") for c in code), "saved without outputs"
    assert tutorial.learner_copy(NOTEBOOK_5, tmp_path / NOTEBOOK_5.name) == 2


# ------------------------------------------------------------------ the checks on real suite runs

@pytest.mark.timeout(600)
def test_a_suite_that_passes_has_not_caught_a_fault(kit_env: Path) -> None:
    # The committed placeholders: the suite builds and uploads the dependency itself.
    copy = packager.copy_buildpack(kit_env / "work" / "buildpack")
    lines: list[str] = []
    run = part5.run_suite(copy, select="uncached", log=lines.append)
    assert lines[0].startswith("$ pytest buildpack/integration --buildpack ")
    assert any("test_root_greets[uncached]" in line and "PASSED" in line for line in lines), "the output is streamed"
    assert part5.suite_passed(run).passed
    assert run.count("passed") == 6 and run.returncode == 0
    with pytest.raises(CheckFailed, match="the suite passed") as failed:
        part5.suite_caught(run, "dependency sha256 mismatch")
    assert "proves nothing" in str(failed.value)
    assert wait_until_gone(kit_env / "home" / "blobstore") == []


@pytest.mark.timeout(600)
def test_a_suite_failing_for_another_reason_has_not_caught_the_named_fault(kit_env: Path) -> None:
    copy = packager.copy_buildpack(kit_env / "work" / "buildpack")
    manifest = copy / "manifest.yml"
    # sha256 unquoted and all digits: YAML reads a number; the packager refuses the manifest.
    manifest.write_text(manifest.read_text().replace(f'"{packager.PLACEHOLDER_SHA256}"', "1" * 64))
    run = part5.run_suite(copy, select="uncached", log=lambda line: None)
    assert run.returncode != 0 and run.failing
    with pytest.raises(CheckFailed, match="a failing test whose report names 'dependency sha256 mismatch'"):
        part5.suite_caught(run, "dependency sha256 mismatch")
    with pytest.raises(CheckFailed, match="every selected test to pass"):
        part5.suite_passed(run)
    assert part5.suite_caught(run, "must be 64 hex digits").passed


@pytest.mark.timeout(600)
def test_a_selection_that_runs_no_test_is_not_a_pass(kit_env: Path) -> None:
    copy = packager.copy_buildpack(kit_env / "work" / "buildpack")
    run = part5.run_suite(copy, select="no_such_package", log=lambda line: None)
    assert run.tests == []
    with pytest.raises(CheckFailed, match="at least one test to run and pass"):
        part5.suite_passed(run)


def test_bad_arguments_are_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="has no manifest.yml"):
        part5.run_suite(tmp_path, log=lambda line: None)
    with pytest.raises(ValueError, match="target must be 'local' or 'cf'"):
        part5.suite_command(tmp_path, target="bosh")
    with pytest.raises(KeyError, match="its tests: test_root_greets"):
        part5.test_source("test_nothing")


def test_the_report_names_each_failure_and_shows_each_staging_log_once() -> None:
    staging = ["Cell cell-0 creating container for instance g", "-----> Installing config-server 0.0.1",
               "       **ERROR** dependency sha256 mismatch: expected sha256 aa, actual sha256 bb",
               "Exit status 225"]
    claim = ("sidecarlab.testing.matchers.ClaimFailed: claim failed: GET / answers 200\n"
             "  seen: it-uncached-abc did not deploy\nstaging log (last 40 lines):\n" + "\n".join(staging))
    traceback = "buildpack/integration/test_buildpack.py:35: in test_root_greets\nE   " + "\nE   ".join(staging)
    run = part5.SuiteRun([], 1, "", [
        part5.TestOutcome("test_root_greets[uncached]", "failed", claim + "\n" + traceback, claim),
        part5.TestOutcome("test_config[uncached]", "failed", claim + "\n" + traceback, claim),
        part5.TestOutcome("test_install_line[uncached]", "passed"),
        part5.TestOutcome("test_packaging[uncached]", "error", "PackagerError: sha256 must be 64 hex digits\n..."),
    ])
    report = part5.suite_report(run, "collected 12 items / 8 deselected / 4 selected")
    assert "FAILED test_root_greets[uncached]" in report and "FAILED test_config[uncached]" in report
    assert report.count("  claim failed: GET / answers 200") == 2
    assert report.count("  seen: it-uncached-abc did not deploy") == 2
    assert "ERROR test_packaging[uncached]" in report
    assert "  PackagerError: sha256 must be 64 hex digits" in report
    # The staging log both failures carry, once, from the exception (not pytest's `E` lines).
    heading = "the end of the staging log in the report of test_root_greets[uncached], test_config[uncached]:"
    at = report.index(heading)
    assert report[at + 1:at + 5] == [f"  {line.strip()}" for line in staging]
    assert not any(line.lstrip().startswith("E ") for line in report)
    assert report[-1] == "result: 1 passed, 2 failed, 1 error, 8 deselected (pytest exited 1)"


def test_the_report_reads_the_whole_claim_from_a_real_junit_file(tmp_path: Path) -> None:
    # pytest shortens a long message in JUnit's `message` attribute; the report must not depend on that.
    staging = [f"staging line {i}" for i in range(30)] + ["       **ERROR** dependency sha256 mismatch: expected sha256 aa"]
    message = "\n".join(["claim failed: GET / answers 200", "  seen: it did not deploy",
                         "staging log (last 40 lines):", *staging])
    (tmp_path / "test_claims.py").write_text(
        f"class ClaimFailed(AssertionError):\n    pass\n\ndef test_one():\n    raise ClaimFailed({message!r})\n")
    junit = tmp_path / "junit.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--tb=short", "-c", os.devnull,
                    f"--junitxml={junit}", str(tmp_path / "test_claims.py")], cwd=tmp_path, capture_output=True,
                   check=False)
    (outcome,) = part5.read_junit(junit)
    assert outcome.outcome == "failed" and "dependency sha256 mismatch" in outcome.message
    report = part5.suite_report(part5.SuiteRun([], 1, "", [outcome]))
    assert "  claim failed: GET / answers 200" in report and "  seen: it did not deploy" in report
    tail = report[report.index("the end of the staging log in the report of test_one:") + 1:]
    assert tail[:part5.STAGING_TAIL] == [f"  {line.strip()}" for line in staging[-part5.STAGING_TAIL:]]


def test_a_suite_that_could_not_start_shows_pytest_s_last_lines() -> None:
    run = part5.SuiteRun([], 4, "ERROR: usage: pytest [options]\nerror: unrecognized arguments: --nope\n", [])
    report = part5.suite_report(run, ran_any=False)
    assert report[1] == "pytest exited 4 before any test ran; its last lines:"
    assert report[-1] == "error: unrecognized arguments: --nope"


def test_the_cf_params_file_is_what_the_suite_reads(tmp_path: Path) -> None:
    from sidecarlab.testing.plugin import cf_settings

    path = part5.write_cf_params(tmp_path / "cf.yml", cf_api="https://api.sys.example.com", cf_org="o", cf_space="s",
                                 cf_skip_ssl_validation=True, s3_endpoint="aws", s3_bucket="b", s3_region="eu-west-1")
    settings = cf_settings(path, environ={})
    assert (settings["cf_api"], settings["cf_org"], settings["cf_space"]) == ("https://api.sys.example.com", "o", "s")
    assert settings["cf_skip_ssl_validation"] is True
    assert (settings["s3_endpoint"], settings["s3_bucket"], settings["s3_region"]) == ("aws", "b", "eu-west-1")
    argv = part5.suite_command(tmp_path, target="cf", select="", cf_params=path)
    assert argv[argv.index("--target") + 1] == "cf" and argv[argv.index("--cf-params") + 1] == str(path.resolve())
    assert "-k" not in argv, "an empty selection runs both packages"
    assert "--learner" not in argv, "a single user"
    shared = part5.suite_command(tmp_path, target="cf", select="", cf_params=path, learner="alice")
    assert shared[shared.index("--learner") + 1] == "alice"
