"""The notebooks, executed headless with papermill through `sidecarlab run`, on the session's localcf.

Each part's claims are verified by identity: one expected line per check call, in order, each
matching what that very check proves (so swapping a check cell for another one fails).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import nbformat
import pytest
from conftest import LocalCF, free_port
from nbformat.v4 import new_code_cell
from test_blobstore import blobstore_processes, wait_until_gone

from sidecarlab import tutorial
from sidecarlab.checks import PASSED_MARK, SKIPPED_MARK
from sidecarlab.checks.core import output_text
from sidecarlab.supply_buildpack import DOWNLOAD_SUPPLY, NEVER_DETECT, PLACEHOLDER_SUPPLY

SIDECARLAB = Path(sys.executable).parent / "sidecarlab"
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOK_1 = NOTEBOOKS / "01-push-app-with-sidecar.ipynb"
NOTEBOOK_2 = NOTEBOOKS / "02-sidecar-from-buildpack.ipynb"
NOTEBOOK_3 = NOTEBOOKS / "03-real-sidecar-from-buildpack.ipynb"

# What each check proves, as the start of its pass line (after PASSED_MARK) ({app} is the notebook's app name).
_PROVES = {
    "app_answers": r"GET / of {app} answers \"Hi, I'm an app with a sidecar!\" \(HTTP 200, through the router\)$",
    "config_from_sidecar": r"GET /config of {app} returns \{{.*\}}: the app got it from its sidecar over localhost$",
    "sidecar_registered": r"/v3/apps/GUID/sidecars lists {sidecar} for {ptype} \(origin user, command ",
    "cf_app_shows_sidecar": r"`cf app {app}` shows `sidecars: config-server` for type {ptype}$",
    "processes_in_one_container": r"one `ps aux` inside instance 0 of {app} lists the app \(PID \d+: .*app\.py.*\) "
                                  r"and the sidecar \(PID \d+: .*config-server.*\): one container$",
    "sidecar_listening": r"config-server \(PID \d+\) listens on port {port}, and ",
    "sidecar_port_private": r"127\.0\.0\.1:{port} from outside: .*; through `cf ssh -L \d+:localhost:{port}`: the "
                            r"sidecar's JSON\. Port {port} is private to the container$",
    "logs_show_app_and_sidecar": r"recent logs have \d+ line\(s\) tagged \[APP/PROC/WEB/0\] .* and \d+ tagged "
                                 r"\[APP/PROC/WEB/SIDECAR/CONFIG-SERVER/0\]",
    "sidecar_crash_recovers": r"the crash was recorded \(app\.crash: 'APP/PROC/WEB/SIDECAR/CONFIG-SERVER: Exited with "
                              r"status 137'; audit\.app\.process\.crash: crash_count 1\) and instance 0 of {app} is "
                              r"RUNNING again with /config working$",
    "codependent_crash": r"config-server exited with status 0 and the app was stopped with it \(.*\); the instance "
                         r"crashed .* and is RUNNING again$",
    "memory_limit_carved": r"the app's MEMORY_LIMIT is 192m \(256M - 64M\) and the sidecar's is 64m: sidecar memory "
                           r"is carved out of the app's$",
    "hung_sidecar_unnoticed": r"the app \(PID \d+\) held an ESTABLISHED connection to \S+:{port}, the frozen "
                              r"sidecar, GET /config answered HTTP 502 \{{\"error\": \"error connecting to local "
                              r"config-server\"\}}, and instance 0 stayed RUNNING$",
    "crash_logged": r"\[API/0\] says `App instance exited with guid [0-9a-f-]+ payload: \.\.\.` with exit_description "
                    r"'APP/PROC/WEB/SIDECAR/CONFIG-SERVER: Exited with status 137' and crash_count 1$",
    "sidecar_per_instance": r"2 instances of web, each with its own config-server listening on port {port} \(instance 0: "
                            r"config-server PID \d+; instance 1: config-server PID \d+\): the same port in each, so "
                            r"each is a container of its own$",
    "supply_ran": r"the latest staging of {app} succeeded and ran the sidecar buildpack's bin/supply \(\d+ line\(s\), "
                  r"e\.g\. '-----> Sidecar buildpack: {said}",
    "sidecar_logged": r"\d+ line\(s\) tagged \[APP/PROC/WEB/SIDECAR/PLACEHOLDER/0\] in the logs of {app}, e\.g\. "
                      r"'placeholder sidecar: still here \(running {path}\)'$",
    "droplet_holds": r"the droplet of {app} holds {path} \(\d+ bytes, {how}\)$",
    "staging_failed": r"staging of {app} failed with 'BuildpackCompileFailed.*'; the log says 'Warning: the last "
                      r"buildpack is not compatible with multi-buildpack apps",
    "download_failed": r"staging of {app} failed with 'StagingError.*'; the log says 'Could not download "
                       r"http://127\.0\.0\.1:\d+/sidecar-buildpack/config-server-sidecar/config-server-v9\.9\.9: "
                       r"HTTP 404'$",
    # Part 3's look inside the container (the blog's `cf ssh` session)
    "port_in_container": r"inside {app}, CONFIG_SERVER_PORT is {port}$",
    "config_inside_container": r"inside {app}, localhost:\$CONFIG_SERVER_PORT/config/ returns \{{\"Scope\":"
                               r"\"some-service\.admin\",\"Password\":\"not-a-real-p4\$\$w0rd\"\}}$",
    "sidecar_beside_app": r"`ps axwf` inside {app}: '\./config-server' runs beside '\S*python\S* app\.py'$",
}
_SHA = r"SHA-256 [0-9a-f]{16}\.\.\., the uploaded binary's"

# Every check call of each part, in order: (check, what fills its pattern).
PART1 = [
    ("app_answers", {}), ("config_from_sidecar", {}),
    ("sidecar_registered", {"sidecar": "config-server", "ptype": "web"}),
    ("cf_app_shows_sidecar", {"ptype": "web"}), ("processes_in_one_container", {}), ("sidecar_listening", {"port": 8082}),
    ("hung_sidecar_unnoticed", {"port": 8082}), ("config_from_sidecar", {}),
    ("sidecar_port_private", {"port": 8082}), ("logs_show_app_and_sidecar", {}), ("sidecar_crash_recovers", {}),
    ("crash_logged", {}), ("codependent_crash", {}), ("memory_limit_carved", {}),
    ("config_from_sidecar", {}), ("sidecar_listening", {"port": 8083}),
    ("sidecar_registered", {"sidecar": "config-server", "ptype": "worker"}), ("cf_app_shows_sidecar", {"ptype": "worker"}),
    ("sidecar_per_instance", {"port": 8082}),
]
PART2 = [
    ("supply_ran", {"said": "installing the placeholder sidecar"}),
    ("sidecar_logged", {"path": "./placeholder-sidecar"}),
    ("sidecar_registered", {"sidecar": "placeholder", "ptype": "web"}),
    ("app_answers", {}),
    ("droplet_holds", {"path": "app/placeholder-sidecar", "how": "mode -rwxr-xr-x"}),
    ("staging_failed", {}),
    ("supply_ran", {"said": "installing the placeholder sidecar"}),
    ("droplet_holds", {"path": "deps/0/bin/placeholder-sidecar", "how": "mode -rwxr-xr-x"}),
    ("sidecar_logged", {"path": r"\S*deps/0/bin/placeholder-sidecar"}),
]
PART3 = [
    ("supply_ran", {"said": "downloading config-server from http://127"}),
    ("app_answers", {}),
    ("config_from_sidecar", {}),
    ("sidecar_registered", {"sidecar": "config-server", "ptype": "web"}),
    ("port_in_container", {"port": 8082}),
    ("config_inside_container", {}),
    ("sidecar_beside_app", {}),
    ("sidecar_port_private", {"port": 8082}),
    ("droplet_holds", {"path": "app/config-server", "how": _SHA}),
    ("download_failed", {}),
    ("config_from_sidecar", {}),
    ("supply_ran", {"said": "downloading config-server from http://127.*config-server-v0\\.0\\.1"}),
    ("droplet_holds", {"path": "app/config-server", "how": _SHA}),
    ("supply_ran", {"said": "downloading config-server from http://127.*config-server-v0\\.0\\.2"}),
    ("config_from_sidecar", {}),
]


def check_calls(path: Path) -> list[str]:
    """The checks a notebook calls, in order (helpers that prove nothing, like show_sockets, left out)."""
    nb = nbformat.read(str(path), as_version=4)
    calls = [m.group(1) for c in nb.cells if c.cell_type == "code"
             for m in re.finditer(r"\bchecks\.(\w+)\(", c.source)]
    return [name for name in calls if name not in ("show_sockets", "wait_until_reachable")]


def check_lines(executed: Path) -> list[str]:
    """The pass and skipped lines of an executed notebook (printed, or shown as displays), in order."""
    text = outputs_text(executed)
    return [line for line in text.splitlines() if line.startswith((PASSED_MARK, SKIPPED_MARK))]


def assert_claims(source: Path, executed: Path, expected: list[tuple[str, dict]], app: str) -> None:
    """One pass line per check call, in order, each the claim of that very check."""
    assert check_calls(source) == [name for name, _ in expected], "the notebook's check cells changed"
    lines = check_lines(executed)
    assert len(lines) == len(expected), "\n".join(lines)
    for line, (name, fill) in zip(lines, expected, strict=True):
        pattern = PASSED_MARK + " " + _PROVES[name].format(app=re.escape(app), **fill)
        assert re.match(pattern, line), f"{name} should have proven\n  {pattern}\nbut the line is\n  {line}"


def skip_without_isolation(localcf: LocalCF) -> None:
    status = localcf("status").out
    if "runtime: namespaces" not in status:
        notice = next((line.strip() for line in status.splitlines() if "namespaces" in line), "runtime: process")
        pytest.skip(f"Part 1's isolation claims need Linux user namespaces, missing here ({notice})")


def run_part(part: str, localcf: LocalCF, out: Path, work: Path, app_name: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, LOCALCF_HOME=str(localcf.home), SIDECARLAB_WORK=str(work))
    return subprocess.run(
        [str(SIDECARLAB), "run", part, "--out", str(out), "--no-progress", "-p", "app_name", app_name],
        env=env, capture_output=True, text=True, timeout=420,
    )


@pytest.mark.timeout(900)  # two full runs of Part 1; a guard against hanging, not a performance claim
def test_part1_runs_green_twice_in_a_row_on_the_same_platform(localcf: LocalCF, tmp_path: Path) -> None:
    skip_without_isolation(localcf)
    app_name = f"nb1-{uuid.uuid4().hex[:8]}"
    for attempt in ("first", "second"):
        out = tmp_path / attempt
        proc = run_part("01", localcf, out, tmp_path / "work", app_name)
        assert proc.returncode == 0, f"{attempt} run failed:\n{proc.stdout}\n{proc.stderr}"
        assert "[1/1] 01-push-app-with-sidecar (target local" in proc.stdout

        summary = json.loads((out / "summary.json").read_text())
        assert summary["ok"] is True and summary["target"] == "local"
        (result,) = summary["notebooks"]
        assert result["skipped_checks"] == []
        executed = out / "notebooks" / NOTEBOOK_1.name
        assert_claims(NOTEBOOK_1, executed, PART1, app_name)
        assert result["passed_checks"] == check_lines(executed)

        text = outputs_text(executed)
        assert f"$ cf push {app_name}" in text, "the notebook shows the real cf commands"
        assert "APP/PROC/WEB/SIDECAR/CONFIG-SERVER: Exited with status 137" in text
        # The commands the kit runs for the learner are shown as they would type them.
        assert "GOOS=linux GOARCH=" in text and " go build -o " in text
        assert f"$ cf app {app_name} --guid" in text
        assert f"$ cf ssh {app_name} -N -L LOCAL:localhost:8082" in text
        # Long outputs are shortened, and say so: the logs by --grep, the repeated pushes folded.
        assert f"$ cf logs {app_name} --recent | grep -E APP/PROC/WEB" in text
        assert re.search(r"\(\d+ of \d+ lines match; the whole output is in `_cf.output`\)", text)
        assert text.count("Downloading app package...") == 1
        assert text.count("more lines of this transcript are folded away") == 2
        assert '"href"' not in text

    # The notebook cleaned up after itself: no app, no work copy.
    assert app_name not in localcf("apps").out
    assert not (tmp_path / "work" / "part1" / app_name).exists()


# ------------------------------------------------------------------------------ Parts 2 and 3

def run_parts(parts: list[str], localcf: LocalCF, out: Path, work: Path, home: Path, *params: str,
              notebooks: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """`sidecarlab run PARTS` on the session's localcf, with its own work dir and SIDECARLAB_HOME."""
    run_env = dict(env if env is not None else os.environ, LOCALCF_HOME=str(localcf.home),
                   SIDECARLAB_WORK=str(work), SIDECARLAB_HOME=str(home))
    argv = [str(SIDECARLAB), "run", *parts, "--out", str(out), "--no-progress", *params]
    if notebooks is not None:
        argv += ["--notebooks", str(notebooks)]
    return subprocess.run(argv, env=run_env, capture_output=True, text=True, timeout=600)


def outputs_text(path: Path) -> str:
    """What the executed notebook printed and showed as plain text (checks show theirs as displays)."""
    executed = nbformat.read(str(path), as_version=4)
    return "\n".join(output_text(o) for c in executed.cells for o in c.get("outputs", [])
                     if o.get("output_type") in ("stream", "display_data"))


def test_runner_runs_parts_1_to_3_in_order() -> None:
    names = [p.stem for p in tutorial.find_notebooks()]
    assert names[:3] == ["01-push-app-with-sidecar", "02-sidecar-from-buildpack", "03-real-sidecar-from-buildpack"]


@pytest.mark.timeout(900)  # a guard against hanging, not a performance claim
def test_parts_2_and_3_run_green_and_leave_nothing_behind(localcf: LocalCF, tmp_path: Path) -> None:
    if "runtime: namespaces" not in localcf("status").out:
        pytest.skip("Part 3's claims about the container (the process tree, the private port) need Linux user "
                    "namespaces, missing here")
    app_name = f"nb23-{uuid.uuid4().hex[:8]}"
    home, work, out = tmp_path / "home", tmp_path / "work", tmp_path / "out"
    proc = run_parts(["02", "03"], localcf, out, work, home, "-p", "app_name", app_name)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert "[1/2] 02-sidecar-from-buildpack (target local" in proc.stdout
    assert "[2/2] 03-real-sidecar-from-buildpack (target local" in proc.stdout

    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is True
    part2, part3 = summary["notebooks"]
    assert part2["skipped_checks"] == part3["skipped_checks"] == []
    assert_claims(NOTEBOOK_2, out / "notebooks" / NOTEBOOK_2.name, PART2, app_name)
    assert_claims(NOTEBOOK_3, out / "notebooks" / NOTEBOOK_3.name, PART3, app_name)

    text2 = outputs_text(out / "notebooks" / NOTEBOOK_2.name)
    assert f"$ cf push {app_name} -f " in text2
    assert "-----> Sidecar buildpack: installing the placeholder sidecar" in text2
    assert "[APP/PROC/WEB/SIDECAR/PLACEHOLDER/0] OUT placeholder sidecar: still here" in text2
    assert "BuildpackCompileFailed - App staging failed in the buildpack compile phase" in text2
    text3 = outputs_text(out / "notebooks" / NOTEBOOK_3.name)
    assert "-----> Sidecar buildpack: downloading config-server from http://127.0.0.1:" in text3
    assert "/config-server-sidecar/config-server-v9.9.9: HTTP 404" in text3
    assert "embedded S3 server at http://127.0.0.1:" in text3
    # The commands a learner types, or would type where the kit runs the step for them.
    assert "CGO_ENABLED=0 GOOS=linux GOARCH=" in text3 and " go build -trimpath -o " in text3
    assert re.search(r"\$ aws s3 cp \S*/config-server-linux-\w+ s3://sidecar-buildpack/config-server-sidecar/"
                     r"config-server-v0\.0\.1 --acl public-read --endpoint-url http://127\.0\.0\.1:\d+\n", text3)
    assert "/config-server-sidecar/config-server-v0.0.2 --acl public-read" in text3
    # (each printed chunk is an output of its own, joined by a newline here)
    ssh = re.escape(f"$ cf ssh {app_name} -c ")
    assert re.search(ssh + re.escape("'echo $CONFIG_SERVER_PORT'") + r"\n+8082\n", text3)
    assert re.search(ssh + re.escape("'curl -s localhost:$CONFIG_SERVER_PORT/config/'") + r"\n+" +
                     re.escape('{"Scope":"some-service.admin","Password":"not-a-real-p4$$w0rd"}'), text3)
    assert re.search(ssh + re.escape("'ps axwf -o pid,command'") + r"\n+    PID COMMAND\n", text3)
    assert f"$ cf restage {app_name}" in text3

    # Cleaned up: no app, no work copies, and no embedded S3 server process.
    assert app_name not in localcf("apps").out
    assert not (work / "part2").exists() and not (work / "part3").exists()
    assert wait_until_gone(home / "blobstore") == []


def test_a_failing_part_3_leaves_no_s3_server_behind(localcf: LocalCF, tmp_path: Path) -> None:
    # A copy of Part 3 that breaks right after it started the embedded S3 server.
    notebooks = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS / "params", notebooks / "params")
    nb = nbformat.read(str(NOTEBOOK_3), as_version=4)
    started = next(i for i, c in enumerate(nb.cells) if "blobstore.start()" in c.source)
    nb.cells.insert(started + 1, new_code_cell('raise RuntimeError("broken on purpose")'))
    nbformat.write(nb, str(notebooks / NOTEBOOK_3.name))
    home, out = tmp_path / "home", tmp_path / "out"

    proc = run_parts(["03"], localcf, out, tmp_path / "work", home, "-p", "app_name",
                     f"nb3-{uuid.uuid4().hex[:8]}", notebooks=notebooks)
    assert proc.returncode == 1 and "RuntimeError: broken on purpose" in proc.stderr
    assert "embedded S3 server at http://127.0.0.1:" in outputs_text(out / "notebooks" / NOTEBOOK_3.name)
    assert wait_until_gone(home / "blobstore") == [], "the S3 server outlived the failed notebook's kernel"


@pytest.mark.parametrize(("params", "env_credentials", "message"), [
    (["-p", "s3_endpoint", "aws"], False, "needs credentials in the environment variable(s) AWS_ACCESS_KEY_ID"),
    (["-p", "s3_endpoint", "http://127.0.0.1:{port}"], True, "nothing answers at 127.0.0.1:{port}"),
    (["-p", "s3_bucket", ""], False, "s3_bucket is missing"),
])
def test_part_3_rejects_bad_storage_parameters_before_anything_is_pushed(
        localcf: LocalCF, tmp_path: Path, params: list[str], env_credentials: bool, message: str) -> None:
    port = free_port()
    app_name = f"nb3-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    if env_credentials:
        env.update(AWS_ACCESS_KEY_ID="key", AWS_SECRET_ACCESS_KEY="secret")
    home, out = tmp_path / "home", tmp_path / "out"
    proc = run_parts(["03"], localcf, out, tmp_path / "work", home, "-p", "app_name", app_name,
                     *[p.format(port=port) for p in params], env=env)
    assert proc.returncode == 1
    assert "BlobStoreError: " in proc.stderr and message.format(port=port) in proc.stderr
    assert "`s3 = blobstore.validate(s3_endpoint, s3_bucket, s3_region, target=target)`" in proc.stderr
    assert app_name not in localcf("apps").out
    assert not (tmp_path / "work").exists(), "nothing was built"
    assert blobstore_processes(home / "blobstore") == []


@pytest.mark.parametrize("path,params", [
    (NOTEBOOK_1, ()),
    (NOTEBOOK_2, ("buildpack_name",)),
    (NOTEBOOK_3, ("buildpack_name",)),
])
def test_every_part_has_parameters_exercises_and_cleanup(path: Path, params: tuple[str, ...], tmp_path: Path) -> None:
    nb = nbformat.read(str(path), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    for name in ("target", "app_name", "config_server_port", "cf_api", "cf_org", "cf_space", *params):
        assert f"\n{name} = " in "\n" + code[0].source, name
    solutions = [i for i, c in enumerate(nb.cells) if "solution" in c.metadata.get("tags", [])]
    last_of_each = [i for i in solutions if i + 1 not in solutions]
    assert len(last_of_each) >= 2, "at least two exercises"
    for i in last_of_each:
        # the check after each solution stays in the learner copy and gives the feedback
        follower = nb.cells[i + 1]
        assert "solution" not in follower.metadata.get("tags", []) and "checks." in follower.source
    if path in (NOTEBOOK_1, NOTEBOOK_2):
        for i in solutions:
            assert "exercise" in nb.cells[i].metadata.get("tags", [])
            # Exercises practise Cloud Foundry: a file the learner writes, or a cf command they type.
            assert nb.cells[i].source.startswith("%%writefile") or "%cf " in nb.cells[i].source
            assert "yaml." not in nb.cells[i].source and "set_buildpacks" not in nb.cells[i].source
        assert_no_name_only_in_solutions(nb)
    assert "%cf delete {app_name} -f -r" in code[-1].source
    assert any("%cf delete {app_name}" in c.source for c in code[1:5]), "starts clean, so it can be re-run"
    assert tutorial.learner_copy(path, tmp_path / path.name) == len(solutions)


def assert_no_name_only_in_solutions(nb: nbformat.NotebookNode) -> None:
    """A learner copy (solutions removed) must stop at the exercise's check with its expected, seen and
    hint, never a NameError: no name a later cell uses may be assigned only in a solution cell."""
    import ast

    def assigned(source: str) -> set[str]:
        python = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
        try:
            tree = ast.parse(python)
        except SyntaxError:
            return set()
        return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}

    code = [c for c in nb.cells if c.cell_type == "code"]
    in_solutions = set().union(*(assigned(c.source) for c in code if "solution" in c.metadata.get("tags", [])))
    elsewhere = set().union(*(assigned(c.source) for c in code if "solution" not in c.metadata.get("tags", [])))
    assert in_solutions <= elsewhere, f"defined only in solution cells: {sorted(in_solutions - elsewhere)}"


def test_the_buildpack_cells_are_the_kit_s_reference_scripts() -> None:
    def written(path: Path) -> list[str]:
        nb = nbformat.read(str(path), as_version=4)
        return [c.source.split("\n", 1)[1] for c in nb.cells if c.source.startswith("%%writefile")]

    scripts_2 = [s.strip() for s in written(NOTEBOOK_2) if s.startswith("#!")]
    into_deps = PLACEHOLDER_SUPPLY.replace("SIDECAR_DIR=$BUILD_DIR", "SIDECAR_DIR=$DEPS_DIR/$DEPS_IDX/bin").replace(
        "# Where the sidecar goes: the app directory, where the manifest's `./placeholder-sidecar` finds it.",
        "# Where the sidecar goes: our own deps dir's bin/, on the PATH of every process of the app.")
    assert scripts_2 == [PLACEHOLDER_SUPPLY.strip(), NEVER_DETECT.strip(), into_deps.strip()]
    assert [s.strip() for s in written(NOTEBOOK_3)] == [DOWNLOAD_SUPPLY.strip(), NEVER_DETECT.strip()]


def test_part_3_exercises_are_cloud_foundry_commands_not_kit_helpers() -> None:
    nb = nbformat.read(str(NOTEBOOK_3), as_version=4)
    solutions = [c for c in nb.cells if "solution" in c.metadata.get("tags", [])]
    assert len(solutions) >= 2
    for cell in solutions:
        lines = [line.strip() for line in cell.source.splitlines() if line.strip()]
        # a shell edit of .downloadurl, the cf commands, and the upload a stored buildpack needs
        assert all(line.startswith(("!echo ", "%cf ")) or line == "if admin_buildpack:" for line in lines), cell.source
        assert any(line.startswith("%cf push ") or line.startswith("%cf restage ") for line in lines)
        assert "%cf update-buildpack {buildpack_name} -p {bp_path}" in cell.source
    # No variable a later cell needs comes from a solution only (the learner copy stops at the check).
    defined_in_solutions = {m.group(1) for c in solutions for m in re.finditer(r"^(\w+) = ", c.source, re.M)}
    assert not defined_in_solutions
    # Where the kit does a step for the learner, it shows the command: the go build, the aws upload.
    sources = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "part3.build_sidecar(" in sources
    assert sources.count("show_command=True") == 2
    assert "buildpack_dir=" not in sources and "write_downloadurl" not in sources, "the learner writes .downloadurl"


def test_part_3_checks_its_storage_parameters_before_touching_the_platform() -> None:
    sources = [c.source for c in nbformat.read(str(NOTEBOOK_3), as_version=4).cells if c.cell_type == "code"]
    validate = next(i for i, s in enumerate(sources) if "blobstore.validate(" in s)
    connect = next(i for i, s in enumerate(sources) if "target_from_params(" in s)
    first_cf = next(i for i, s in enumerate(sources) if "%cf " in s)
    assert validate < connect < first_cf
