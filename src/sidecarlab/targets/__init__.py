"""Targets: the platform a notebook drives, through cf verbs and the /v3 JSON only.

`LocalTarget` drives the embedded Cloud Foundry (the `localcf` command, started on first use);
`CFTarget` drives the real `cf` binary against a foundation. The target owns every platform
difference (how a verb runs, how an app is reached, how a buildpack is made available, what the
droplet file is called), so notebooks and checks never branch on the target.

Creating a target does not touch the notebook's `%cf` magic: whoever creates the target for a
notebook points the magic at it (`sidecarlab.notebook.target_from_params`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import learner as _learner
from .base import CommandResult, Event, HttpResponse, Instance, Isolation, LogLine, Target, parse_log_line
from .cf import CFTarget, default_cf_home
from .errors import ApiError, CommandError, SshNotAllowed, TargetError
from .local import LocalTarget
from .localcf_cli import LOCAL_CLIS, LocalCFWithCLI, choose_local_cli, local_cf_home

__all__ = [
    "ApiError",
    "CFTarget",
    "CommandError",
    "CommandResult",
    "Event",
    "LOCAL_CLIS",
    "HttpResponse",
    "Instance",
    "Isolation",
    "LocalCFWithCLI",
    "LocalTarget",
    "LogLine",
    "SshNotAllowed",
    "Target",
    "TargetError",
    "choose_local_cli",
    "default_cf_home",
    "local_cf_home",
    "parse_log_line",
    "target_from_params",
]


def target_from_params(
    target: str = "local",
    cf_api: str | None = None,
    cf_org: str | None = None,
    cf_space: str | None = None,
    cf_skip_ssl_validation: bool = False,
    cf_apps_url: str | None = None,
    localcf_home: str | None = None,
    cf_home: str | None = None,
    local_cli: str = "localcf",
    learner: str = "",
    **_other_params: Any,
) -> Target:
    """The Target a notebook's parameters name.

    Extra parameters (app_name, config_server_port, ...) are accepted and ignored, so a notebook
    can pass all of its parameters. The cf target gets the kit's own CF_HOME (`default_cf_home()`)
    unless `cf_home` names another. The local target runs localcf's own verbs, or with
    `local_cli` "cf" (or "auto" where a cf CLI v7+ is installed) the real cf CLI against localcf.
    `learner` (checked first, see `sidecarlab.learner`) names the learner on a shared foundation: their
    staging verbs then wait while another learner's run has air-gapped the foundation.
    """
    checked_learner = _learner.check_learner(learner)
    made = _target(target, cf_api, cf_org, cf_space, cf_skip_ssl_validation, cf_apps_url, localcf_home, cf_home,
                   local_cli)
    made.learner = checked_learner
    return made


def _target(target: str, cf_api: str | None, cf_org: str | None, cf_space: str | None, cf_skip_ssl_validation: bool,
            cf_apps_url: str | None, localcf_home: str | None, cf_home: str | None, local_cli: str) -> Target:
    kind = (target or "").strip().lower()
    if kind == "local":
        local = LocalTarget(home=Path(localcf_home) if localcf_home else None)
        home = Path(cf_home) if cf_home else local_cf_home()
        client, why = choose_local_cli(local_cli, cf_home=home)
        if client == "localcf":
            local.client_choice = why
            return local
        return LocalCFWithCLI(local, why=why, cf_home=home)
    if kind == "cf":
        return CFTarget(cf_api or "", cf_org or "", cf_space or "", skip_ssl_validation=cf_skip_ssl_validation,
                        cf_home=Path(cf_home) if cf_home else default_cf_home(), apps_url=cf_apps_url or "")
    raise TargetError(
        f"Unknown target {target!r}: the `target` parameter must be 'local' (the embedded "
        "Cloud Foundry) or 'cf' (a real foundation). Fix it in the notebook's parameters cell "
        "or pass -p target local to `sidecarlab run`."
    )
