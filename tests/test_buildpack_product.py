"""Part 4's product on a real localcf: the packaged sidecar buildpack, installed with
`localcf create-buildpack NAME ZIP POSITION`, stages the sample app whose manifest names only the
buildpacks (no `sidecars:`). The cached zip stages air-gapped without a single request to the
dependency's server and /config answers through the sidecar; the uncached zip fails there with the
URL and the reason; a wrong sha256 and a foreign stack fail with libbuildpack's texts; the sidecar
comes from launch.yml with origin `buildpack`, and a user sidecar of the same name is refused."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import LocalCF, Result
from test_packager import VERSION, DependencyServer, archive_name, binary, dep_server, make_work_copy  # noqa: F401
from test_platform_runtime import namespaces_available

from sidecarlab import blobstore, checks, packager, tutorial
from sidecarlab.targets import LocalTarget

STACK = "cflinuxfs4"
USER_SIDECAR = {"name": "config-server", "process_types": ["web"], "command": "config-server"}


class Zips:
    """The packaged zips of one work copy (and variants), packaged once per module."""

    def __init__(self, root: Path, server: DependencyServer, archive: str) -> None:
        self.root, self.server, self.archive = root, server, archive
        self.url = server.url(archive)
        self.sha256 = blobstore.sha256_of(server.directory / archive)
        self.wrong_sha256 = "ab" * 32

    def make(self, label: str, *, cached: bool = False, stack: str | None = STACK, edit: dict | None = None) -> Path:
        work = make_work_copy(self.root / label / "buildpack", self.server, self.archive)
        if edit:
            manifest = yaml.safe_load((work / "manifest.yml").read_text())
            manifest["dependencies"] = [dict(manifest["dependencies"][0], **edit)]
            (work / "manifest.yml").write_text(yaml.safe_dump(manifest, sort_keys=False))
        return packager.package(work, cached=cached, stack=stack, any_stack=stack is None,
                                cache_dir=self.root / label / "cache", out_dir=self.root / label, log=None).path


@pytest.fixture(scope="module")
def zips(tmp_path_factory: pytest.TempPathFactory, dep_server: DependencyServer, archive_name: str) -> Zips:  # noqa: F811
    return Zips(tmp_path_factory.mktemp("zips"), dep_server, archive_name)


@pytest.fixture(scope="module")
def cached_zip(zips: Zips) -> Path:
    return zips.make("cached", cached=True)


@pytest.fixture(scope="module")
def uncached_zip(zips: Zips) -> Path:
    return zips.make("uncached")


@pytest.fixture(scope="module")
def air_gapped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCF]:
    """A second localcf made air-gapped as an operator does it: no staging security group opens egress."""
    if not namespaces_available():
        pytest.skip("air-gapped staging needs a network namespace (namespaces mode)")
    cf = LocalCF(tmp_path_factory.mktemp("localcf-air-gapped"))
    cf("start")
    cf("unbind-staging-security-group", "public_networks")
    assert "public_networks" not in cf("staging-security-groups").out
    yield cf
    cf("stop", check=False)


class Platform:
    """Installs buildpack zips and pushes the sample app on one localcf; removes both at the end."""

    def __init__(self, cf: LocalCF, workdir: Path) -> None:
        self.cf, self.workdir = cf, workdir
        self.target = LocalTarget(home=cf.home, echo=False)
        self.apps: list[str] = []
        self.buildpacks: list[str] = []

    def install(self, zip_path: Path) -> str:
        name = f"config-server-bp-{uuid.uuid4().hex[:6]}"
        created = self.cf("create-buildpack", name, str(zip_path), "1")
        assert f"Uploading buildpack {name}" in created.out
        self.buildpacks.append(name)
        return name

    def push(self, buildpack: str, sidecars: list[dict] | None = None) -> tuple[str, Result]:
        name = f"p4-{uuid.uuid4().hex[:8]}"
        app_dir = self.workdir / name
        manifest_path = tutorial.copy_fixture_app(app_dir, name)
        manifest = yaml.safe_load(manifest_path.read_text())
        (app,) = manifest["applications"]
        app["buildpacks"] = [buildpack, "python_buildpack"]
        app.pop("sidecars", None)
        if sidecars:
            app["sidecars"] = sidecars
        manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False))
        self.apps.append(name)
        return name, self.cf("push", name, "-f", str(manifest_path), "-p", str(app_dir), check=False, timeout=300)

    def sidecars(self, app: str) -> list[dict]:
        guid = self.cf("app", app, "--guid").out.strip()
        return json.loads(self.cf("curl", f"/v3/apps/{guid}/sidecars").out)["resources"]

    def cleanup(self) -> None:
        for app in self.apps:
            self.cf("delete", app, "-f", check=False)
        for bp in self.buildpacks:
            self.cf("delete-buildpack", bp, "-f", check=False)


@pytest.fixture
def online(localcf: LocalCF, tmp_path: Path) -> Iterator[Platform]:
    platform = Platform(localcf, tmp_path)
    yield platform
    platform.cleanup()


@pytest.fixture
def offline(air_gapped: LocalCF, tmp_path: Path) -> Iterator[Platform]:
    platform = Platform(air_gapped, tmp_path)
    yield platform
    platform.cleanup()


def test_manifest_of_the_app_names_only_the_buildpacks(online: Platform, uncached_zip: Path) -> None:
    name, _ = online.push(online.install(uncached_zip))
    manifest = yaml.safe_load((online.workdir / name / "manifest.yml").read_text())
    (app,) = manifest["applications"]
    assert "sidecars" not in app and app["buildpacks"][1] == "python_buildpack"


def test_cached_buildpack_stages_air_gapped_without_any_request(offline: Platform, cached_zip: Path,
                                                                zips: Zips) -> None:
    buildpack = offline.install(cached_zip)
    before = list(zips.server.requests)
    name, pushed = offline.push(buildpack)
    assert pushed.code == 0, pushed.text
    assert f"-----> Installing config-server {VERSION}" in pushed.out
    assert "       Copy [" in pushed.out and f"/dependencies/{hashlib.md5(zips.url.encode()).hexdigest()}/" \
        f"{zips.archive}]" in pushed.out
    assert "Download [" not in pushed.out
    assert zips.server.requests == before, "staging with the cached buildpack made a network request"
    checks.config_from_sidecar(offline.target, name)
    found = checks.droplet_holds(offline.target, name, "deps/0/bin/config-server").data
    assert found.mode == "-rwxr-xr-x"
    (sidecar,) = offline.sidecars(name)
    assert (sidecar["name"], sidecar["origin"], sidecar["process_types"], sidecar["command"]) == \
        ("config-server", "buildpack", ["web"], "config-server")
    assert sidecar["memory_in_mb"] == 64


def test_uncached_buildpack_fails_air_gapped_with_the_url_and_reason(offline: Platform, uncached_zip: Path,
                                                                     zips: Zips) -> None:
    before = list(zips.server.requests)
    _, pushed = offline.push(offline.install(uncached_zip))
    assert pushed.code != 0
    assert f"-----> Installing config-server {VERSION}" in pushed.out
    assert f"       Download [{zips.url}]" in pushed.out
    error = next(line for line in pushed.text.splitlines() if "**ERROR** could not download: " in line)
    assert zips.url in error and ("unreachable" in error or "refused" in error), error
    assert "StagingError - Staging error: staging failed" in pushed.text
    assert zips.server.requests == before


def test_uncached_buildpack_downloads_online_and_the_sidecar_comes_from_launch_yml(online: Platform,
                                                                                   uncached_zip: Path, zips: Zips,
                                                                                   binary: Path) -> None:  # noqa: F811
    before = len(zips.server.requests)
    name, pushed = online.push(online.install(uncached_zip))
    assert pushed.code == 0, pushed.text
    assert f"       Download [{zips.url}]" in pushed.out
    assert len(zips.server.requests) == before + 1
    checks.config_from_sidecar(online.target, name)
    installed = checks.droplet_holds(online.target, name, "deps/0/bin/config-server",
                                     sha256=blobstore.sha256_of(binary)).data
    assert installed.size == binary.stat().st_size
    assert checks.sidecar_registered(online.target, name, origin="buildpack").data["origin"] == "buildpack"
    (sidecar,) = online.sidecars(name)
    assert sidecar["origin"] == "buildpack" and sidecar["name"] == "config-server"


def test_user_sidecar_of_the_same_name_is_refused(online: Platform, uncached_zip: Path) -> None:
    _, pushed = online.push(online.install(uncached_zip), sidecars=[USER_SIDECAR])
    assert pushed.code != 0
    assert ("Buildpack defined sidecar 'config-server' conflicts with an existing user-defined sidecar. "
            "Consider renaming 'config-server'.") in pushed.text


def test_checksum_mismatch_fails_staging_with_libbuildpack_text(online: Platform, zips: Zips) -> None:
    bad = zips.make("mismatch", edit={"sha256": zips.wrong_sha256})
    _, pushed = online.push(online.install(bad))
    assert pushed.code != 0
    assert (f"**ERROR** dependency sha256 mismatch: expected sha256 {zips.wrong_sha256}, "
            f"actual sha256 {zips.sha256}") in pushed.out


def test_foreign_stack_fails_staging_with_libbuildpack_text(online: Platform, zips: Zips) -> None:
    foreign = zips.make("foreign", stack=None, edit={"cf_stacks": ["cflinuxfs3"]})
    assert packager.zip_name("config-server", VERSION, False, None) == foreign.name
    _, pushed = online.push(online.install(foreign))
    assert pushed.code != 0
    assert f"**ERROR** Stack not supported by buildpack: required stack {STACK} was not found" in pushed.out
    assert "Installing config-server" not in pushed.out


def test_stack_specific_package_for_another_stack_is_refused(online: Platform, zips: Zips) -> None:
    other = zips.make("other-stack", stack="cflinuxfs3")
    _, pushed = online.push(online.install(other))
    assert pushed.code != 0
    assert f"**ERROR** Stack not supported by buildpack: required stack {STACK} was not found" in pushed.out
