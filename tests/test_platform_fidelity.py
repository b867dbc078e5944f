"""What a learner sees inside a container, and of a buildpack given as a folder, reads as on a
Cloud Foundry cell, through the real `localcf` command (docs/localcf-vs-cloud-foundry.md).

On a Diego cell `cf ssh` then `id -un` says `vcap`, `ps` shows PID 1 as `/tmp/garden-init` and
every app and sidecar process as its own command, and nothing of the cell's own paths; `cf app`
names every buildpack with a name and a version. What needs a container of its own is checked in
the namespaces runtime and skipped, with the reason, in the process runtime (whose apps are plain
processes of this machine); what does not is checked in both.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from pathlib import Path

from conftest import FIXTURES, ROOT, LocalCF, free_port
from test_platform_runtime import cf, delete, needs_isolation, push_runtime_app  # noqa: F401  (cf: the fixture)

GARDEN_INIT = "/tmp/garden-init"
# A `localcf ssh -c` command runs without the droplet's profile scripts (deps' bin/ is not on its
# PATH): this sources them as the launcher does.
PROFILE = "cd /home/vcap/app 2>/dev/null || cd \"$HOME\"; for f in ../profile.d/*; do . \"$f\"; done; "


def ps_rows(lcf: LocalCF, app: dict) -> list[tuple[str, int, str]]:
    """(user, pid, args) of every process `ps` lists inside the app's instance 0."""
    out = lcf("ssh", app["name"], "-c", "ps -e -o user=,pid=,args=").out
    rows = []
    for line in out.splitlines():
        user, pid, args = line.split(None, 2)
        rows.append((user, int(pid), args))
    return rows


def host_paths(lcf: LocalCF, tmp_path: Path) -> list[str]:
    """Paths of this machine that must never show inside a container."""
    paths = {str(lcf.home), str(lcf.home.resolve()), str(ROOT), str(ROOT.resolve()), str(tmp_path),
             sys.prefix, os.path.realpath(sys.prefix), sys.base_prefix, os.path.realpath(sys.base_prefix),
             os.path.dirname(os.path.realpath(sys.executable)), os.path.expanduser("~")}
    return sorted(p for p in paths if p not in ("", "/"))


# ------------------------------------------------------------------------------- a. the user

def test_ssh_user_is_vcap_with_the_containers_own_passwd(cf: LocalCF, tmp_path: Path) -> None:  # noqa: F811
    needs_isolation(cf)
    app = push_runtime_app(cf, tmp_path)
    try:
        out = cf("ssh", app["name"], "-c", "id -un; whoami; id; getent passwd vcap; getent group vcap; "
                                           "cut -d: -f1 /etc/passwd").out.splitlines()
        assert out[:5] == ["vcap", "vcap", "uid=2000(vcap) gid=2000(vcap) groups=2000(vcap)",
                           "vcap:x:2000:2000::/home/vcap:/bin/bash", "vcap:x:2000:"], out
        # the container's own passwd: nobody of this machine is listed in it
        assert set(out[5:]) == {"root", "vcap", "nobody"}, out
        # `ps`'s USER column: every process of the app, the sidecar and the session is vcap
        rows = ps_rows(cf, app)
        mine = [r for r in rows if r[1] != 1]
        assert len(mine) >= 3 and {user for user, _, _ in mine} == {"vcap"}, rows
    finally:
        delete(cf, app)


# ------------------------------------------------------------------------------- b. PID 1

def test_pid_1_reads_as_garden_init_and_processes_as_their_commands(cf: LocalCF, tmp_path: Path) -> None:  # noqa: F811
    needs_isolation(cf)
    app = push_runtime_app(cf, tmp_path)
    try:
        rows = ps_rows(cf, app)
        by_pid = {pid: args for _, pid, args in rows}
        assert by_pid[1] == GARDEN_INIT, rows
        # the launcher ends in `exec bash -c "<command>"`, and bash execs a lone command: as on a
        # cell, `ps` shows the app's and the sidecar's start commands themselves
        commands = [args for _, pid, args in rows if pid != 1]
        assert "python app.py" in commands, rows
        assert f"python sidecar.py {app['sidecar']}" in commands, rows
        # the init's program is where its command line says
        listing = cf("ssh", app["name"], "-c", f"test -f {GARDEN_INIT} && echo present").out.strip()
        assert listing == "present"
    finally:
        delete(cf, app)


# -------------------------------------------------------------------------- c. no host path

def test_ps_inside_shows_no_path_of_this_machine(cf: LocalCF, tmp_path: Path) -> None:  # noqa: F811
    needs_isolation(cf)
    app = push_runtime_app(cf, tmp_path)
    try:
        out = cf("ssh", app["name"], "-c", "ps aux; ps axwf; ps -e -o args=").out
        # what is checked is there (not an empty listing)
        assert GARDEN_INIT in out and "python app.py" in out and "sidecar.py" in out, out
        for path in host_paths(cf, tmp_path):
            assert path not in out, f"{path} shows inside the container:\n{out}"
        # the app runs the interpreter from its droplet, as the real python_buildpack's
        where = cf("ssh", app["name"], "-c", PROFILE + "python -c 'import sys; print(sys.executable)'").out.strip()
        assert where.startswith("/home/vcap/deps/"), where
    finally:
        delete(cf, app)


def test_apps_run_the_droplets_python(cf: LocalCF, tmp_path: Path) -> None:  # noqa: F811
    """Both modes: `python` is the droplet's (deps/IDX/bin/python), with the interpreter's packages."""
    app = push_runtime_app(cf, tmp_path)
    try:
        script = PROFILE + "command -v python; python -c 'import sys, yaml; print(sys.prefix)'"
        found, prefix = cf("ssh", app["name"], "-c", script).out.split()
        home = "/home/vcap" if cf.mode == "namespaces" else str(cf.home.resolve())  # type: ignore[attr-defined]
        assert found.startswith(f"{home}") and found.endswith("/bin/python") and "/deps/" in found, found
        assert prefix == os.path.dirname(os.path.dirname(found)), (found, prefix)
    finally:
        delete(cf, app)


# ------------------------------------------------------------------- d. local buildpacks

def supply_buildpack(where: Path, *, version_file: str | None = None, manifest_version: str | None = None,
                     config_yml: str | None = None) -> Path:
    """A supply buildpack folder (detect exits 1: used by name), declaring its version as asked."""
    (where / "bin").mkdir(parents=True)
    (where / "bin" / "detect").write_text("#!/bin/sh\nexit 1\n")
    supply = f"#!/bin/sh\necho '-----> {where.name} supplying'\n"
    if config_yml is not None:
        supply += f"printf '{config_yml}' > \"$3/$4/config.yml\"\n"
    (where / "bin" / "supply").write_text(supply)
    for script in ("detect", "supply"):
        (where / "bin" / script).chmod(0o755)
    if version_file is not None:
        (where / "VERSION").write_text(version_file + "\n")
    if manifest_version is not None:
        (where / "manifest.yml").write_text(f"---\nlanguage: declared\nversion: {manifest_version}\n")
    return where


def test_a_buildpack_given_as_a_folder_has_a_name_and_version_of_its_own(cf: LocalCF, tmp_path: Path) -> None:  # noqa: F811
    bps = tmp_path / "buildpacks"
    first = supply_buildpack(bps / "sidecar-buildpack", version_file="0.0.1")
    second = supply_buildpack(bps / "declared-buildpack", manifest_version="1.2.3")
    third = supply_buildpack(bps / "configured-buildpack", version_file="9.9.9",
                             config_yml="name: configured\\nversion: 2.0.0\\n")
    name = f"bp-{uuid.uuid4().hex[:8]}"
    app = tmp_path / name
    shutil.copytree(FIXTURES / "runtime-app", app)
    (app / "manifest.yml").write_text(f"applications:\n- name: {name}\n  memory: 256M\n  env:\n"
                                      f"    SIDECAR_PORT: '{free_port()}'\n")
    pushed = cf("push", "-b", str(first), "-b", str(second), "-b", str(third), "-b", "python_buildpack", cwd=app)
    try:
        staging = [line for line in pushed.out.splitlines() if "ownload" in line or "supplying" in line]
        assert "   Downloading sidecar-buildpack..." in staging, pushed.out
        summary = cf("app", name).out
        for text in (staging, [summary]):
            for line in text:
                assert str(tmp_path) not in line and str(bps) not in line, line
        rows = [line.split() for line in summary.split("buildpacks:", 1)[1].split("type:", 1)[0].splitlines()
                if line.strip()]
        assert rows == [["name", "version", "detect", "output", "buildpack", "name"],
                        ["sidecar-buildpack", "0.0.1"],
                        ["declared-buildpack", "1.2.3"],
                        ["configured-buildpack", "2.0.0", "configured", "configured"],  # config.yml wins
                        ["python_buildpack", "1.0.0", "python", "python"]], summary
        guid = cf("app", name, "--guid").out.strip()
        droplet = json.loads(cf("curl", f"/v3/apps/{guid}/droplets/current").out)
        assert [(b["name"], b["version"]) for b in droplet["buildpacks"]] == [
            ("sidecar-buildpack", "0.0.1"), ("declared-buildpack", "1.2.3"),
            ("configured-buildpack", "2.0.0"), ("python_buildpack", "1.0.0")], droplet["buildpacks"]
    finally:
        delete(cf, {"name": name})


def test_two_folders_of_one_name_stay_apart(cf: LocalCF, tmp_path: Path) -> None:  # noqa: F811
    one = supply_buildpack(tmp_path / "a" / "tools-buildpack", version_file="1.0.0")
    two = supply_buildpack(tmp_path / "b" / "tools-buildpack", version_file="2.0.0")
    name = f"bp-{uuid.uuid4().hex[:8]}"
    app = tmp_path / name
    shutil.copytree(FIXTURES / "runtime-app", app)
    (app / "manifest.yml").write_text(f"applications:\n- name: {name}\n  memory: 256M\n  env:\n"
                                      f"    SIDECAR_PORT: '{free_port()}'\n")
    cf("push", "-b", str(one), "-b", str(two), "-b", "python_buildpack", cwd=app)
    try:
        guid = cf("app", name, "--guid").out.strip()
        droplet = json.loads(cf("curl", f"/v3/apps/{guid}/droplets/current").out)
        assert [(b["name"], b["version"]) for b in droplet["buildpacks"]] == [
            ("tools-buildpack", "1.0.0"), ("tools-buildpack-2", "2.0.0"), ("python_buildpack", "1.0.0")]
    finally:
        delete(cf, {"name": name})
