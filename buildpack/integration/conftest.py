"""Fixtures of the buildpack's integration suite, on the kit's harness (`sidecarlab.testing`).

Once per session (per xdist worker): the config-server is built for the platform's cells and uploaded
to an object store the platform reaches (an embedded S3 server of the session's own for `--target
local`; the `s3_*` settings of the cf params for `--target cf`), its uri and sha256 recorded in a
work copy of the buildpack, and the copy packaged twice (uncached and cached) with the kit's
packager. Each package is installed as a system buildpack under a unique name and version, and
removed at the end.

A buildpack whose manifest already names an uploaded dependency (a sha256 other than the committed
placeholder) is tested as it is: nothing is built or uploaded for it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from sidecarlab import blobstore, packager, sidecar, tutorial
from sidecarlab.testing import DeployFailed, Deployment, Platform
from sidecarlab.testing.plugin import cf_settings

BUILDPACK = Path(__file__).resolve().parents[1]
STACK = "cflinuxfs4"
KINDS = ("uncached", "cached")
FINAL_BUILDPACK = "python_buildpack"


@dataclass(frozen=True)
class Installed:
    """One package of the buildpack, installed on the platform as a system buildpack."""

    kind: str
    name: str
    zip_path: Path
    version: str
    dependency_version: str
    dependency_uri: str

    @property
    def cached(self) -> bool:
        return self.kind == "cached"


@dataclass(frozen=True)
class WorkCopy:
    """The buildpack's work copy, its dependency recorded (uploaded by the session, or by its author)."""

    directory: Path
    dependency_version: str
    dependency_uri: str


def _dependency(directory: Path) -> dict:
    manifest = packager.load_manifest(directory)
    return next(d for d in manifest["dependencies"] if d["name"] == packager.DEPENDENCY)


@pytest.fixture(scope="session")
def work_copy(session_platform: Platform, buildpack_dir: Path | None, request: pytest.FixtureRequest,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkCopy]:
    source = buildpack_dir or BUILDPACK
    root = tmp_path_factory.mktemp("buildpack-work")
    directory = packager.copy_buildpack(root / "buildpack", source=source)
    dep = _dependency(directory)
    state_dir: Path | None = None  # the session's own embedded S3 server, when it starts one
    if dep["sha256"] == packager.PLACEHOLDER_SHA256:
        target = session_platform.target
        if session_platform.target_kind == "local":
            # Its own, as the harness starts a localcf of its own: a suite or notebook running beside
            # this session never stops the server this session's stagings still download from.
            state_dir = tmp_path_factory.mktemp("blobstore")
            s3 = blobstore.validate(target="local")
            blobstore.start(state_dir)
        else:
            params = request.config.getoption("--cf-params")
            settings = cf_settings(Path(params) if params else None)
            s3 = blobstore.validate(str(settings.get("s3_endpoint", "")), str(settings.get("s3_bucket", "")),
                                    str(settings.get("s3_region", "")), target="cf")
        binary = sidecar.build(out=root / "bin" / "config-server", goos="linux", goarch=target.goarch())
        packager.upload_dependency(binary, str(dep["version"]), s3, directory, state_dir=state_dir, log=None)
        dep = _dependency(directory)
    try:
        yield WorkCopy(directory, str(dep["version"]), str(dep["uri"]))
    finally:
        if state_dir is not None:
            blobstore.stop(state_dir)


@pytest.fixture(scope="session", params=KINDS)
def installed(request: pytest.FixtureRequest, work_copy: WorkCopy, session_platform: Platform,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """The package of one kind, built by the packager and installed under a unique name and version."""
    kind = str(request.param)
    token = uuid.uuid4().hex[:8]
    base = (work_copy.directory / "VERSION").read_text().strip()
    version = f"{base}-it.{token}"
    out = tmp_path_factory.mktemp(f"package-{kind}")
    made = packager.package(work_copy.directory, stack=STACK, cached=kind == "cached", version=version,
                            out_dir=out, cache_dir=out / "cache", goarch=session_platform.target.goarch(), log=None)
    name = f"config_server_{kind}_{token}"
    session_platform.install_buildpack(made.path, name)
    try:
        yield Installed(kind, name, made.path, version, work_copy.dependency_version, work_copy.dependency_uri)
    finally:
        session_platform.remove_buildpacks([name])


@pytest.fixture(scope="session")
def sample_app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample app (fixtures/app-using-config-server) without `sidecars:`: the buildpack declares it."""
    directory = tmp_path_factory.mktemp("sample-app") / "app"
    manifest_path = tutorial.copy_fixture_app(directory, "sample-app")
    manifest = yaml.safe_load(manifest_path.read_text())
    for app in manifest["applications"]:
        app.pop("sidecars", None)
    manifest_path.write_text("---\n" + yaml.safe_dump(manifest, sort_keys=False))
    return directory


@pytest.fixture(scope="session")
def deployed(installed: Installed, session_platform: Platform, sample_app: Path) -> Deployment | DeployFailed:
    """The sample app pushed once per package with the buildpack then python_buildpack; a push that
    failed is returned as its DeployFailed, so each claim fails with its own name and the staging log."""
    try:
        return session_platform.deploy.with_buildpacks(installed.name, FINAL_BUILDPACK) \
            .execute(f"it-{installed.kind}", sample_app)
    except DeployFailed as failed:
        return failed
