"""A small test harness for buildpack authors, usable from any pytest suite.

- `sidecarlab.testing.plugin`: the pytest plugin (`-p sidecarlab.testing.plugin`): the `platform`
  fixture chosen by `--target local|cf`, clean-up, logs in failure reports;
- `Platform.deploy`: the deploy builder (`with_buildpacks`, `with_env`, `without_internet_access`,
  `execute(name, fixture_dir)`), giving a `Deployment` or raising `DeployFailed`;
- matchers that read like the claims they check (`staging_logged`, `sidecar_running_in_instance`, ...).
"""

from __future__ import annotations

from .harness import Deploy, DeployFailed, Deployment, Platform, unique_name
from .matchers import (
    ClaimFailed,
    answers,
    claim,
    sidecar_registered,
    sidecar_running_in_instance,
    staging_failed_with,
    staging_logged,
    staging_not_logged,
)

__all__ = [
    "ClaimFailed",
    "Deploy",
    "DeployFailed",
    "Deployment",
    "Platform",
    "answers",
    "claim",
    "sidecar_registered",
    "sidecar_running_in_instance",
    "staging_failed_with",
    "staging_logged",
    "staging_not_logged",
    "unique_name",
]
