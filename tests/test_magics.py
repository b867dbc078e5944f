"""The %cf magic on the session's localcf: `--grep`, folded repeat pushes, trimmed `cf curl`; every
shortened output stays whole in `_cf`."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LocalCF

from sidecarlab import magics
from sidecarlab.targets import CommandError, LocalTarget

ROOT = Path(__file__).resolve().parents[1]
PLAIN_APP = ROOT / "fixtures" / "staging" / "python-app"


@pytest.fixture
def shell(localcf: LocalCF) -> Iterator[object]:
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "sidecarlab.magics")
    magics.load_ipython_extension(ip)  # again: an earlier test's teardown may have reset the error display
    registered = ip.magics_manager.registry["CfMagics"]
    registered.target = LocalTarget(home=localcf.home, echo=True)
    registered._shown_in_full.clear()
    ip.user_ns["app_name"] = f"mg-{uuid.uuid4().hex[:8]}"
    yield ip
    registered.target.cleanup(ip.user_ns["app_name"])
    registered.target = None
    ip.set_custom_exc((), None)


def test_grep_shows_the_matching_lines_as_a_shell_pipe_and_keeps_the_rest(shell, capsys) -> None:
    result = shell.run_cell("%cf --grep '^OK$|does not exist' delete {app_name} -f")
    assert result.success, result.error_in_exec
    out = capsys.readouterr().out.splitlines()
    name = shell.user_ns["app_name"]
    assert out[0] == f"$ cf delete {name} -f | grep -E '^OK$|does not exist'"
    assert out[1:3] == [f"App '{name}' does not exist.", "OK"]
    assert out[3] == "(2 of 3 lines match; the whole output is in `_cf.output`)"
    assert shell.user_ns["_cf"].output.startswith(f"Deleting app {name}")


def test_grep_with_a_broken_pattern_is_a_clear_error(shell, capsys) -> None:
    result = shell.run_cell("%cf --grep '(' apps")
    assert "not a regular expression" in str(result.error_in_exec)
    assert "Traceback" not in capsys.readouterr().out


def test_grep_still_fails_on_a_failing_command_unless_no_check(shell, capsys) -> None:
    result = shell.run_cell("%cf --grep FAILED app {app_name}")
    assert isinstance(result.error_in_exec, CommandError)
    assert "FAILED" in capsys.readouterr().out
    assert shell.run_cell("%cf --no-check --grep FAILED app {app_name}").success


def test_curl_leaves_out_the_repeated_links_and_says_so(shell, capsys) -> None:
    result = shell.run_cell("%cf curl /v3/spaces")
    assert result.success, result.error_in_exec
    out = capsys.readouterr().out
    assert '"total_results": ' in out and '"name": "dev"' in out
    assert "href" not in out and "http" not in out.split("(the `links`")[0]
    assert "the whole answer is in `_cf.output`" in out
    assert '"href": "http' in shell.user_ns["_cf"].output


def test_a_repeated_push_is_folded_to_its_key_lines_with_the_whole_transcript_kept(shell, capsys,
                                                                                tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    shutil.copytree(PLAIN_APP, app_dir)
    shell.user_ns["app_path"] = str(app_dir)
    assert shell.run_cell("%cf push {app_name} -p {app_path} -m 64M").success
    first = capsys.readouterr().out
    assert "Downloading app package..." in first and "folded away" not in first

    result = shell.run_cell("%cf push {app_name} -p {app_path} -m 64M")
    assert result.success, result.error_in_exec
    second = capsys.readouterr().out
    whole = shell.user_ns["_cf"].output
    assert "Downloading app package..." in whole and "Downloading app package..." not in second
    for key in ("Staging app and tracing logs...", "-----> Python Buildpack", "Exit status 0",
                "Waiting for app", "requested state:", "#0   running"):
        assert key in second, key
    assert len(second.splitlines()) < len(whole.splitlines())
    assert "more lines of this transcript are folded away" in second

    # --full prints it whole again.
    assert shell.run_cell("%cf --full push {app_name} -p {app_path} -m 64M").success
    assert "Downloading app package..." in capsys.readouterr().out


def test_fold_keeps_the_failure_and_the_lifecycle_warning() -> None:
    transcript = "\n".join([
        "Pushing app x to org o / space s as admin...", "Packaging files to upload...",
        "Staging app and tracing logs...", "   Downloading python_buildpack...",
        "   Warning: the last buildpack is not compatible with multi-buildpack apps",
        "   Exit status 223", "FAILED",
        "Error staging application: BuildpackCompileFailed - App staging failed in the buildpack compile phase",
    ])
    folded = magics.fold_staging(transcript).splitlines()
    assert "   Downloading python_buildpack..." not in folded and "Packaging files to upload..." not in folded
    assert folded[-2].startswith("Error staging application: BuildpackCompileFailed")
    assert "   Warning: the last buildpack is not compatible with multi-buildpack apps" in folded
    assert folded[-1] == "(2 more lines of this transcript are folded away: open the block below, or read `_cf.output`)"


def test_curl_output_that_is_not_a_paginated_document_is_left_alone() -> None:
    assert magics.trim_curl("not json\n") == ("not json", "")
    assert magics.trim_curl('{"name": "x"}') == ('{"name": "x"}', "")
