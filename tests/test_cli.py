"""The `localcf` command as the cf CLI: default route hosts, droplet file names, symlinks in app
packages, and its layering (actions, output, one poll helper, no server-side imports)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
from conftest import LocalCF

from localcf.actions import ActionFailed
from localcf.constants import SPACE_GUID
from localcf.output import key_values, megabytes, table
from localcf.polling import PollTimeout, poll_until

BAD_HOST = ('Failed to create default route from app name: Host must be either "*" or contain only '
            'alphanumeric characters, "_", or "-"')
TOO_LONG = "Failed to create default route from app name: Host cannot exceed 63 characters"


def routes_of(cf: LocalCF, app: str) -> list[str]:
    guid = cf("app", app, "--guid").out.strip()
    return [r["url"] for r in json.loads(cf("curl", f"/v3/apps/{guid}/routes").out)["resources"]]


def binary_app(root: Path, name: str = "bits", files: dict[str, str] | None = None) -> Path:
    """An app the binary buildpack stages in a moment (its start command is given with -c)."""
    app = root / name
    app.mkdir(parents=True)
    for fname, body in (files or {"run.sh": "#!/bin/sh\nexec sleep 600\n"}).items():
        (app / fname).write_text(body)
        (app / fname).chmod(0o755)
    return app


# ------------------------------------------------------------------------------ default routes

@pytest.mark.parametrize("name", ["café", "api/v2", "my app", "my.app"])
def test_push_refuses_a_name_that_cannot_be_a_host(localcf: LocalCF, tmp_path: Path, name: str) -> None:
    app = binary_app(tmp_path)
    res = localcf("push", name, "--no-start", "-b", "binary_buildpack", "-c", "./run.sh", cwd=app, check=False)
    assert res.code == 1
    assert res.err.startswith("FAILED\n"), res.err
    assert f"For application '{name}': {BAD_HOST}" in res.err
    assert "--no-route" in res.err, "the error says what to do"
    assert localcf("app", name, check=False).code == 1, "nothing is half-applied: no app was created"


def test_push_refuses_a_name_longer_than_a_dns_label(localcf: LocalCF, tmp_path: Path) -> None:
    name = "a" * 64
    res = localcf("push", name, "--no-start", "-b", "binary_buildpack", "-c", "./run.sh",
                  cwd=binary_app(tmp_path), check=False)
    assert res.code == 1 and TOO_LONG in res.err, res.err


def test_manifest_name_that_cannot_be_a_host_names_the_line(localcf: LocalCF, tmp_path: Path) -> None:
    app = binary_app(tmp_path)
    (app / "manifest.yml").write_text("---\napplications:\n- buildpacks: [binary_buildpack]\n  name: über-app\n")
    res = localcf("push", "--no-start", cwd=app, check=False)
    assert res.code == 1
    assert f"manifest.yml:4: applications[0].name: For application 'über-app': {BAD_HOST}" in res.err, res.err


def test_name_that_cannot_be_a_host_pushes_with_no_route_or_routes(localcf: LocalCF, tmp_path: Path) -> None:
    app = binary_app(tmp_path)
    localcf("push", "naïve", "--no-start", "--no-route", "-b", "binary_buildpack", "-c", "./run.sh", cwd=app)
    assert routes_of(localcf, "naïve") == []
    (app / "manifest.yml").write_text(textwrap.dedent("""\
        applications:
        - name: with/slash
          buildpacks: [binary_buildpack]
          command: ./run.sh
          routes: [{route: with-slash.apps.localhost}]
        """))
    localcf("push", "--no-start", cwd=app)
    assert routes_of(localcf, "with/slash") == ["with-slash.apps.localhost"]
    localcf("delete", "naïve", "-f")
    localcf("delete", "with/slash", "-f")


def test_default_route_keeps_underscores_and_lowers_case(localcf: LocalCF, tmp_path: Path) -> None:
    # Cloud Controller (v7/v8 push) takes the name as the host; hosts are case-insensitive.
    localcf("push", "My_App-1", "--no-start", "-b", "binary_buildpack", "-c", "./run.sh",
            cwd=binary_app(tmp_path))
    assert routes_of(localcf, "My_App-1") == ["my_app-1.apps.localhost"]
    localcf("delete", "My_App-1", "-f")


def test_an_app_with_routes_is_not_asked_for_a_default_host(localcf: LocalCF, tmp_path: Path) -> None:
    app = binary_app(tmp_path)
    (app / "manifest.yml").write_text("applications: [{name: 'x/y', routes: [{route: xy.apps.localhost}]}]\n")
    localcf("apply-manifest", "-f", str(app / "manifest.yml"))
    # the app has a route now: pushing it again without routes keeps it, and the name is no problem
    localcf("push", "x/y", "--no-manifest", "--no-start", "-b", "binary_buildpack", "-c", "./run.sh", cwd=app)
    assert routes_of(localcf, "x/y") == ["xy.apps.localhost"]
    localcf("delete", "x/y", "-f")


def test_the_api_refuses_the_name_too(localcf: LocalCF) -> None:
    # What Cloud Foundry's own cf CLI sends: manifest YAML, which the server validates itself.
    res = localcf("curl", "-X", "POST", f"/v3/spaces/{SPACE_GUID}/actions/apply_manifest",
                  "-H", "Content-Type: application/x-yaml", "-d", "applications: [{name: 'sp ace'}]", check=False)
    assert res.code == 1
    assert json.loads(res.out)["errors"][0]["detail"] == f"For application 'sp ace': {BAD_HOST}"
    assert localcf("app", "sp ace", check=False).code == 1, "the server applied nothing"


# ------------------------------------------------------------------------------------ droplets

def test_download_droplet_writes_droplet_guid_tgz(localcf: LocalCF, tmp_path: Path) -> None:
    localcf("push", "dl-app", "--no-start", "--no-route", "-b", "binary_buildpack", "-c", "./run.sh",
            cwd=binary_app(tmp_path))
    app = json.loads(localcf("curl", "/v3/apps?names=dl-app").out)["resources"][0]
    guid = app["relationships"]["current_droplet"]["data"]["guid"]
    dest = tmp_path / "out"
    dest.mkdir()
    res = localcf("download-droplet", "dl-app", "--path", str(dest))
    path = dest / f"droplet_{guid}.tgz"
    assert res.out.splitlines()[1:] == [f"Droplet downloaded successfully at {path}", "OK"]
    assert [p.name for p in dest.iterdir()] == [path.name]
    with tarfile.open(path) as tf:
        assert "./app/run.sh" in tf.getnames() or "app/run.sh" in tf.getnames()
    # without --path: the current directory; with --path FILE: that file
    localcf("download-droplet", "dl-app", cwd=tmp_path)
    assert (tmp_path / f"droplet_{guid}.tgz").is_file()
    localcf("download-droplet", "dl-app", "--path", str(tmp_path / "mine.tgz"))
    assert (tmp_path / "mine.tgz").read_bytes() == path.read_bytes()
    localcf("delete", "dl-app", "-f")


# ----------------------------------------------------------------------------- app packages

def test_symlinks_are_packaged_as_links_wherever_they_point(localcf: LocalCF, tmp_path: Path) -> None:
    app = binary_app(tmp_path, "linky")
    (tmp_path / "sibling.txt").write_text("beside the app\n")
    (app / "inside.txt").write_text("in\n")
    os.symlink("/etc/hostname", app / "abs-link")
    os.symlink("../sibling.txt", app / "up-link")
    os.symlink("inside.txt", app / "in-link")
    os.symlink("/usr/share", app / "dir-link")
    res = localcf("push", "linky", "--no-start", "--no-route", "-b", "binary_buildpack", "-c", "./run.sh", cwd=app)
    assert "buildpack zip" not in res.text and "refusing" not in res.text
    d = tmp_path / "droplet"
    localcf("droplet", "download", "linky", str(d))
    for name, target in (("abs-link", "/etc/hostname"), ("up-link", "../sibling.txt"),
                         ("in-link", "inside.txt"), ("dir-link", "/usr/share")):
        assert (d / "app" / name).is_symlink(), name
        assert os.readlink(d / "app" / name) == target
    assert not (d / "app" / "dir-link").resolve().is_relative_to(d), "a link, not a copy of /usr/share"
    if "runtime: namespaces" in localcf("status").out:
        # and the app runs with them, the links resolving inside its container as on Diego
        localcf("push", "linky", "--no-route", "-u", "process", "-b", "binary_buildpack", "-c", "./run.sh", cwd=app)
        seen = localcf("ssh", "linky", "-c", "readlink /home/vcap/app/abs-link; cat /home/vcap/app/in-link").out
        assert seen.split() == ["/etc/hostname", "in"]
    localcf("delete", "linky", "-f")


def _evil_package(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        link = zipfile.ZipInfo("escape")
        link.create_system = 3
        link.external_attr = (0o120777) << 16
        zf.writestr(link, str(path.parent / "outside"))
        zf.writestr("escape/planted.txt", "owned")
        zf.writestr("run.sh", "#!/bin/sh\nsleep 600\n")
    return path


def test_an_app_package_that_writes_through_a_link_is_refused_as_an_app_package(localcf: LocalCF,
                                                                                tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    localcf("create-app", "evil-pkg")
    c = localcf.client()
    app = c.require_app("evil-pkg")
    pkg = c.post("/v3/packages", {"type": "bits", "relationships": {"app": {"data": {"guid": app["guid"]}}}})
    c.request("POST", f"/v3/packages/{pkg['guid']}/upload", data=_evil_package(tmp_path / "evil.zip").read_bytes(),
              headers={"Content-Type": "application/zip"})
    res = localcf("restage", "evil-pkg", "-f", check=False)
    assert res.code == 1
    assert "refusing to extract app package zip" in res.text, res.text
    assert "'escape/planted.txt' would be written outside the app (through a symlink)" in res.text
    assert "an app package zip may only hold paths inside the app" in res.text
    assert "buildpack" not in res.err, res.err
    assert list((tmp_path / "outside").iterdir()) == []
    localcf("delete", "evil-pkg", "-f")


# ------------------------------------------------------------------------------------ layering

def test_the_command_imports_no_server_side_module() -> None:
    code = ("import sys, localcf.cli; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('localcf.'))))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout.split())
    assert "localcf.cli" in loaded and "localcf.actions" in loaded
    server = {"localcf.controller", "localcf.api", "localcf.cell", "localcf.stager", "localcf.runtime",
              "localcf.store", "localcf.router", "localcf.presenters", "localcf.logstream", "localcf.builder"}
    assert loaded & server == set()


def test_poll_until_returns_the_first_truthy_value() -> None:
    seen = []

    def check() -> int | None:
        seen.append(1)
        return len(seen) if len(seen) >= 3 else None

    assert poll_until(check, timeout=5, interval=0.001) == 3


def test_poll_until_gives_up_with_the_error_given_or_poll_timeout() -> None:
    with pytest.raises(ActionFailed, match="too slow"):
        poll_until(lambda: None, timeout=0.05, interval=0.01, on_timeout=lambda: ActionFailed("too slow"))
    start = time.monotonic()
    with pytest.raises(PollTimeout) as e:
        poll_until(lambda: 0, timeout=0.05, interval=0.01, what="the answer")
    assert time.monotonic() - start >= 0.05
    assert "the answer did not happen within 0.05 s" in str(e.value) and e.value.last == 0


def test_poll_until_lets_the_check_end_the_wait() -> None:
    def crashed() -> None:
        raise ActionFailed("Start unsuccessful")

    with pytest.raises(ActionFailed, match="Start unsuccessful"):
        poll_until(crashed, timeout=5)


def test_output_aligns_as_the_cf_cli() -> None:
    assert table([["name", "state"], ["a-long-name", "started"], ["b", ""]]) == (
        "name          state\na-long-name   started\nb")
    assert key_values([("name:", "x"), ("requested state:", "started"), ("routes:", "")]) == (
        "name:              x\nrequested state:   started\nroutes:")
    assert [megabytes(n) for n in (None, 256, 1024, 1536, 2048)] == ["", "256M", "1G", "1536M", "2G"]
