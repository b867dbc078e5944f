"""Part 3's look inside the container, on a real localcf: the port, the sidecar's answer over
localhost and the process tree hold for an app whose sidecar the platform starts, and the checks fail,
with what they saw, when the port differs, the answer differs, or the app's own start command
launches the sidecar (it then runs under the app, not beside it). Plus the tree parser on the shapes
`ps axwf` draws, and the commands the kit prints for the steps it does."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import LocalCF

from sidecarlab import checks, part3, sidecar, tutorial
from sidecarlab.checks import PASSED_MARK, CheckFailed
from sidecarlab.checks.part3 import parse_forest
from sidecarlab.targets import LocalTarget

# What `ps axwf -o pid,command` printed in a localcf container (namespaces runtime).
LOCALCF_TREE = """\
    PID COMMAND
      1 /venv/bin/python -I -S /src/localcf/container_init.py /state/containers/c0ffee/init.json
      4 /venv/bin/python app.py
      5 ./config-server
     15 ps axwf -o pid,command
"""
# The shape on a Cloud Foundry cell: garden's init, then every process of the container under it.
CF_TREE = """\
    PID COMMAND
      1 /tmp/garden-init
     13 /tmp/lifecycle/diego-sshd --allowedKeyExchanges= --address=0.0.0.0:2222
     95  \\_ /tmp/lifecycle/diego-sshd --allowedKeyExchanges= --address=0.0.0.0:2222
     96      \\_ /bin/bash -c ps axwf -o pid,command
     97          \\_ ps axwf -o pid,command
     24 /home/vcap/deps/1/vendor_bundle/ruby/2.4.0/bin/rackup config.ru -p 8080
     39 ./config-server
"""
# An app whose start command launches the sidecar itself: it runs under the app.
NESTED_TREE = """\
    PID COMMAND
      1 /tmp/garden-init
      7 python app.py
     12  \\_ ./config-server
"""


def test_the_tree_parser_reads_depth_and_parent_as_ps_draws_them() -> None:
    flat = parse_forest(LOCALCF_TREE)
    assert [(p.pid, p.command, p.depth, p.parent) for p in flat][1:3] == [
        (4, "/venv/bin/python app.py", 0, None), (5, "./config-server", 0, None)]
    cf = {p.pid: p for p in parse_forest(CF_TREE)}
    assert (cf[95].depth, cf[95].parent) == (1, 13)
    assert (cf[97].depth, cf[97].parent, cf[97].command) == (3, 96, "ps axwf -o pid,command")
    assert (cf[24].depth, cf[24].parent) == (0, None), "back at the top after a subtree"
    assert (cf[39].parent, cf[39].command) == (None, "./config-server")
    nested = {p.pid: p for p in parse_forest(NESTED_TREE)}
    assert nested[12].parent == 7
    assert parse_forest("    PID COMMAND\n") == []


def test_the_go_build_line_is_the_build_the_kit_runs(tmp_path: Path) -> None:
    out = tmp_path / "config-server"
    lines: list[str] = []
    binary = part3.build_sidecar(LocalTarget(echo=False), out, log=lines.append)
    assert binary == out.resolve() and binary.is_file()
    source = sidecar.default_source_dir()
    assert lines[0].startswith("$ (cd ") and "CGO_ENABLED=0 GOOS=linux GOARCH=" in lines[0]
    assert lines[0].endswith(" go build -trimpath -o " + os.path.relpath(out.resolve(), source) + " .)")
    assert lines[-1].startswith("built ") and "KiB" in lines[-1]


# ------------------------------------------------------------------------------ on a real localcf

@pytest.fixture(scope="module")
def target(localcf: LocalCF) -> LocalTarget:
    return LocalTarget(home=localcf.home, echo=False)


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sidecar.build(out=tmp_path_factory.mktemp("sidecar") / "config-server")


def _push(target: LocalTarget, workdir: Path, binary: Path, start_command: str | None = None) -> str:
    """The sample app with the config-server in its directory; with `start_command`, no `sidecars:`
    and that command instead (the app launches the sidecar itself)."""
    name = f"p3-{uuid.uuid4().hex[:8]}"
    app_dir = workdir / name
    manifest = tutorial.copy_fixture_app(app_dir, name)
    shutil.copy2(binary, app_dir / "config-server")
    if start_command is not None:
        document = yaml.safe_load(manifest.read_text())
        app = document["applications"][0]
        app.pop("sidecars", None)
        app["command"] = start_command
        manifest.write_text(yaml.safe_dump(document, sort_keys=False))
    target.cf("push", name, "-f", str(manifest), "-p", str(app_dir), quiet=True)
    return name


@pytest.fixture(scope="module")
def sidecar_app(target: LocalTarget, binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    name = _push(target, tmp_path_factory.mktemp("part3"), binary)
    yield name
    target.cleanup(name)


def test_inside_the_container_the_port_the_answer_and_the_tree_hold(
        target: LocalTarget, sidecar_app: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert checks.port_in_container(target, sidecar_app, port=8082).data == "8082"
    assert checks.config_inside_container(target, sidecar_app).data == checks.CONFIG
    side, main = checks.sidecar_beside_app(target, sidecar_app).data
    assert side.command == "./config-server" and main.command.endswith("app.py")
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 3 and all(line.startswith(PASSED_MARK) for line in printed)
    assert "CONFIG_SERVER_PORT is 8082" in printed[0]
    assert "runs beside" in printed[2]


def test_the_checks_fail_on_another_port_or_another_answer(target: LocalTarget, sidecar_app: str) -> None:
    with pytest.raises(CheckFailed) as wrong_port:
        checks.port_in_container(target, sidecar_app, port=9090)
    assert wrong_port.value.expected == "`echo $CONFIG_SERVER_PORT` to print 9090"
    assert wrong_port.value.seen == "'8082'"
    assert "CONFIG_SERVER_PORT: 9090" in wrong_port.value.hint
    with pytest.raises(CheckFailed) as other_json:
        checks.config_inside_container(target, sidecar_app, expected={"Scope": "another"})
    assert '"Password":"not-a-real-p4$$w0rd"' in other_json.value.seen


def test_a_sidecar_the_app_starts_itself_runs_under_it_and_fails_the_tree_check(
        target: LocalTarget, binary: Path, tmp_path: Path) -> None:
    name = _push(target, tmp_path, binary, start_command="./config-server & exec python app.py")
    try:
        # The sidecar answers all the same: only the process tree shows who started it.
        assert checks.config_inside_container(target, name).passed
        with pytest.raises(CheckFailed) as nested:
            checks.sidecar_beside_app(target, name)
        assert nested.value.expected == "the sidecar and the app side by side (neither in the other's subtree)"
        assert "'./config-server'" in nested.value.seen and "runs under" in nested.value.seen
        assert "declare it under `sidecars:`" in nested.value.hint
    finally:
        target.cleanup(name)
