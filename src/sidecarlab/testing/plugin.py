"""The kit's pytest plugin: a `platform` fixture chosen by `--target local|cf`, clean-up of what a
test pushed (whatever its outcome), and the logs of those apps in the failure report.

Load it with `-p sidecarlab.testing.plugin` (this project's pyproject does so in `addopts`), or with
`pytest_plugins = ["sidecarlab.testing.plugin"]` in a suite's top-level conftest.py. It is not an
auto-loading `pytest11` entry point on purpose: installing the kit must not add options and fixtures
to every pytest run on the machine, and an explicit `-p` works from a checkout without reinstalling.

Options:

- `--target local` (default): one embedded platform (localcf) per session, in its own state
  directory, stopped at the end;
- `--target cf`: a real foundation. Its settings come from `--cf-params` (default
  `notebooks/params/cf.yml` of the checkout), overridden by the environment (`CF_API`, `CF_ORG`,
  `CF_SPACE`, `CF_SKIP_SSL_VALIDATION`); credentials only from `CF_USERNAME` and `CF_PASSWORD`.
- `--buildpack DIR`: the buildpack a suite tests (suites read it through the `buildpack_dir` fixture).
- `--learner NAME` (default `$SIDECARLAB_LEARNER`): the learner of a workshop sharing one foundation,
  as the notebooks' `learner` parameter. Stagings then wait while another learner's air gap holds,
  and an air-gapped push (`without_internet_access`) takes the foundation's air-gap lease first.

Fixtures: `platform` (function scope: what the test pushes is deleted after it) and
`session_platform` (session scope, for apps and buildpacks shared by several tests), both
`sidecarlab.testing.Platform`.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .. import learner
from ..sidecar import project_root
from ..targets import CFTarget, LocalTarget, Target, TargetError, default_cf_home
from .harness import Deployment, Platform

__all__ = ["cf_settings", "make_target"]

_ENV_OVERRIDES = {"cf_api": "CF_API", "cf_org": "CF_ORG", "cf_space": "CF_SPACE",
                  "cf_skip_ssl_validation": "CF_SKIP_SSL_VALIDATION"}
_PLATFORMS = pytest.StashKey[list[Platform]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sidecarlab", "Sidecar Lab integration harness")
    group.addoption("--target", choices=("local", "cf"), default=os.environ.get("SIDECARLAB_TARGET", "local"),
                    help="the platform to push to: local (the embedded localcf, default) or cf (a real foundation)")
    group.addoption("--cf-params", default=None, metavar="YAML",
                    help="a real foundation's settings (default notebooks/params/cf.yml of the checkout); "
                         "CF_API, CF_ORG, CF_SPACE, CF_SKIP_SSL_VALIDATION override them")
    group.addoption("--buildpack", default=None, metavar="DIR",
                    help="the buildpack source directory a suite tests (default: the suite's own)")
    group.addoption("--learner", default=os.environ.get("SIDECARLAB_LEARNER", ""), metavar="NAME",
                    help="a workshop's learner on a shared foundation (the notebooks' `learner`): staging waits "
                         "while another learner's air gap holds, and an air-gapped push takes the foundation's "
                         "air-gap lease first (default: $SIDECARLAB_LEARNER, else a single user)")


def pytest_configure(config: pytest.Config) -> None:
    try:
        learner.check_learner(str(config.getoption("--learner") or ""))
    except learner.LearnerError as exc:
        raise pytest.UsageError(f"--learner: {exc}") from None


def cf_settings(params_file: Path | None = None, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """A real foundation's settings: the params file, then the environment on top."""
    environ = dict(os.environ if environ is None else environ)
    if params_file is None:
        root = project_root()
        params_file = root / "notebooks" / "params" / "cf.yml" if root is not None else None
    settings: dict[str, Any] = {}
    if params_file is not None:
        if not Path(params_file).is_file():
            raise TargetError(f"--cf-params {params_file} is not a file: give the YAML with cf_api, cf_org and "
                              "cf_space (see notebooks/params/cf.yml), or set CF_API, CF_ORG and CF_SPACE.")
        loaded = yaml.safe_load(Path(params_file).read_text()) or {}
        if not isinstance(loaded, dict):
            raise TargetError(f"{params_file} is not a mapping of settings (cf_api: ..., cf_org: ...).")
        settings.update(loaded)
    for key, variable in _ENV_OVERRIDES.items():
        if environ.get(variable):
            settings[key] = environ[variable]
    skip = str(settings.get("cf_skip_ssl_validation", "false")).strip().lower()
    settings["cf_skip_ssl_validation"] = skip in ("1", "true", "yes")
    return settings


def make_target(kind: str, workdir: Path, params_file: Path | None = None, learner_name: str = "") -> Target:
    """The Target of `--target`: a localcf of its own under `workdir`, or the foundation of cf_settings;
    `learner_name` is the workshop learner on a shared foundation (empty: a single user)."""
    target = _make_target(kind, workdir, params_file)
    target.learner = learner.check_learner(learner_name)
    return target


def _make_target(kind: str, workdir: Path, params_file: Path | None) -> Target:
    if kind == "local":
        return LocalTarget(home=workdir / "localcf", echo=False)
    settings = cf_settings(params_file)
    missing = [name for name in ("cf_api", "cf_org", "cf_space") if not settings.get(name)]
    if missing:
        raise TargetError(f"--target cf needs {', '.join(missing)}: set them in {params_file or 'notebooks/params/cf.yml'} "
                          f"or export {', '.join(_ENV_OVERRIDES[m] for m in missing)}.")
    cf_home = Path(str(settings["cf_home"])) if settings.get("cf_home") else default_cf_home()
    return CFTarget(str(settings["cf_api"]), str(settings["cf_org"]), str(settings["cf_space"]),
                    skip_ssl_validation=bool(settings["cf_skip_ssl_validation"]), cf_home=cf_home, echo=False)


@pytest.fixture(scope="session")
def session_platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """One platform for the whole session (per xdist worker); what was pushed on it is deleted at the end."""
    kind = str(request.config.getoption("--target"))
    params = request.config.getoption("--cf-params")
    workdir = tmp_path_factory.mktemp("sidecarlab-platform")
    target = make_target(kind, workdir, Path(params) if params else None,
                         str(request.config.getoption("--learner") or ""))
    platform = Platform(target, workdir / "apps", kind)
    request.config.stash.setdefault(_PLATFORMS, []).append(platform)
    try:
        yield platform
    finally:
        platform.cleanup()
        platform.remove_buildpacks()
        if isinstance(target, LocalTarget):
            target.stop()


@pytest.fixture
def platform(session_platform: Platform) -> Iterator[Platform]:
    """The session's platform; the apps this test pushes are deleted after it, whatever its outcome."""
    before = list(session_platform.deployments)
    yield session_platform
    session_platform.cleanup([d for d in session_platform.deployments if d not in before])


@pytest.fixture(scope="session")
def buildpack_dir(request: pytest.FixtureRequest) -> Path | None:
    """The directory `--buildpack` names (None when not given: the suite picks its own)."""
    given = request.config.getoption("--buildpack")
    if not given:
        return None
    path = Path(str(given)).resolve()
    if not path.is_dir():
        raise pytest.UsageError(f"--buildpack {given} is not a directory: give the buildpack's source folder.")
    return path


def _log_sections(deployment: Deployment) -> list[tuple[str, str]]:
    sections = []
    try:
        staging = "\n".join(deployment.staging_log())
    except Exception as exc:  # noqa: BLE001 - a report must not fail because the platform is gone
        staging = f"(could not read: {exc})"
    sections.append((f"staging log of {deployment.name}", staging or "(empty)"))
    try:
        runtime = "\n".join(f"{line.tag} {line.stream} {line.message}" for line in deployment.runtime_log())
    except Exception as exc:  # noqa: BLE001
        runtime = f"(could not read: {exc})"
    sections.append((f"runtime log of {deployment.name}", runtime or "(empty)"))
    return sections


def pytest_runtest_setup(item: pytest.Item) -> None:
    for platform in item.config.stash.get(_PLATFORMS, []):
        platform.touched.clear()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport,
                                                                                         pytest.TestReport]:
    """A failed test's report gets the staging and runtime logs of every app the test used."""
    report = yield
    if report.when == "call" and report.failed:
        for platform in item.config.stash.get(_PLATFORMS, []):
            for deployment in list(platform.touched):
                report.sections.extend(_log_sections(deployment))
    return report
