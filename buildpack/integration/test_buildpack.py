"""The config-server buildpack's integration tests: the sample app pushed with each package of the
buildpack (uncached and cached) onto the platform of `--target`, and the buildpack's claims checked
on it. Run with `pytest buildpack/integration` (add `--target cf` for a real foundation)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecarlab.testing import (
    DeployFailed,
    Deployment,
    Platform,
    answers,
    sidecar_registered,
    sidecar_running_in_instance,
    staging_failed_with,
    staging_logged,
    staging_not_logged,
)

from .conftest import FINAL_BUILDPACK, Installed

# One worker runs the whole suite under `pytest -n N --dist loadgroup` (make test): one platform, each
# package built and installed once.
pytestmark = pytest.mark.xdist_group("buildpack-integration")

# The sample app's answers (fixtures/app-using-config-server/app.py) and its sidecar's configuration.
GREETING = "Hi, I'm an app with a sidecar!"
CONFIG = {"Scope": "some-service.admin", "Password": "not-a-real-p4$$w0rd"}


def test_root_greets(deployed: Deployment | DeployFailed) -> None:
    answers(deployed, "/", contains=GREETING)


def test_config_answers_through_the_sidecar(deployed: Deployment | DeployFailed) -> None:
    answers(deployed, "/config", json_equal=CONFIG)


def test_the_sidecar_runs_in_the_same_instance(deployed: Deployment | DeployFailed) -> None:
    sidecar_running_in_instance(deployed, "config-server")


def test_the_sidecar_is_registered_with_origin_buildpack(deployed: Deployment | DeployFailed) -> None:
    sidecar_registered(deployed, "config-server", origin="buildpack", process_type="web")


def test_staging_logged_the_install_line(deployed: Deployment | DeployFailed, installed: Installed) -> None:
    staging_logged(deployed, f"-----> Installing config-server {installed.dependency_version}")
    if installed.cached:
        staging_logged(deployed, "Copy [")
        staging_not_logged(deployed, "Download [")
    else:
        staging_logged(deployed, f"Download [{installed.dependency_uri}]")


def test_staging_with_egress_closed(platform: Platform, installed: Installed, sample_app: Path) -> None:
    """The cached package stages with no staging egress; the uncached one fails there with the download error."""
    deploy = platform.deploy.with_buildpacks(installed.name, FINAL_BUILDPACK).without_internet_access()
    if installed.cached:
        try:
            air_gapped: Deployment | DeployFailed = deploy.execute("it-air-gapped", sample_app)
        except DeployFailed as failed:
            air_gapped = failed
        staging_logged(air_gapped, "Copy [")
        answers(air_gapped, "/config", json_equal=CONFIG)
    else:
        try:
            unexpected = deploy.execute("it-air-gapped", sample_app)
        except DeployFailed as failed:
            staging_logged(failed, f"Download [{installed.dependency_uri}]")
            staging_failed_with(failed, "**ERROR** could not download: ")
        else:
            staging_failed_with(unexpected, "**ERROR** could not download: ")
