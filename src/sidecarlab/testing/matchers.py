"""Matchers that read like the claims they check.

Each takes a `Deployment` (or the `DeployFailed` of one that did not deploy) and returns what it saw,
or raises `ClaimFailed`: an AssertionError whose message names the claim, says what was seen, and
shows the deployment's staging log, so a failing integration test explains itself:

    staging_logged(app, "Download [")
    sidecar_running_in_instance(app, "config-server")
    sidecar_registered(app, "config-server", origin="buildpack")
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from ..targets import HttpResponse, TargetError
from .harness import TAIL_LINES, DeployFailed, Deployment, _tail

__all__ = [
    "ClaimFailed",
    "answers",
    "claim",
    "sidecar_registered",
    "sidecar_running_in_instance",
    "staging_failed_with",
    "staging_logged",
    "staging_not_logged",
]

T = TypeVar("T")


class ClaimFailed(AssertionError):
    """A claim about a deployment does not hold: the claim, what was seen, and the staging log."""

    def __init__(self, claim_text: str, seen: str, staging_log: list[str]) -> None:
        self.claim = claim_text
        self.seen = seen
        self.staging_log = staging_log
        super().__init__(f"claim failed: {claim_text}\n  seen: {seen}\n"
                         f"staging log (last {TAIL_LINES} lines):\n{_tail(staging_log)}")


def _staging(subject: Deployment | DeployFailed) -> list[str]:
    if isinstance(subject, DeployFailed):
        return subject.staging_log
    try:
        return subject.staging_log()
    except TargetError as exc:
        return [f"(the staging log could not be read: {exc})"]


def claim(text: str, subject: Deployment | DeployFailed, probe: Callable[[Deployment], T]) -> T:
    """Check one claim: `probe` returns what it saw, or raises ClaimFailed/AssertionError/TargetError.
    A deployment that did not deploy fails every claim that needs it running, with its staging log."""
    if isinstance(subject, DeployFailed):
        raise ClaimFailed(text, f"{subject.name} did not deploy: `{subject.result.shown}` exited "
                                f"{subject.result.returncode}", subject.staging_log) from None
    try:
        return probe(subject)
    except ClaimFailed:
        raise
    except (AssertionError, TargetError) as exc:
        raise ClaimFailed(text, str(exc), _staging(subject)) from None


def _not_so(seen: str) -> AssertionError:
    return AssertionError(seen)


def answers(subject: Deployment | DeployFailed, path: str = "/", *, status: int = 200,
            contains: str | None = None, json_equal: Any = None) -> HttpResponse:
    """`GET path` answers `status` (and its body contains `contains`, or its JSON equals `json_equal`)."""
    wanted = f"GET {path} answers {status}"
    if contains is not None:
        wanted += f" with a body containing {contains!r}"
    if json_equal is not None:
        wanted += f" with the JSON {json.dumps(json_equal, sort_keys=True)}"

    def probe(d: Deployment) -> HttpResponse:
        response = d.get(path)
        body = response.body[:500]
        if response.status != status:
            raise _not_so(f"{response.status} from {response.url}: {body!r}")
        if contains is not None and contains not in response.body:
            raise _not_so(f"a body without {contains!r}: {body!r}")
        if json_equal is not None:
            try:
                document = json.loads(response.body)
            except ValueError:
                raise _not_so(f"a body that is not JSON: {body!r}") from None
            if document != json_equal:
                raise _not_so(f"the JSON {json.dumps(document, sort_keys=True)[:500]}")
        return response

    return claim(wanted, subject, probe)


def staging_logged(subject: Deployment | DeployFailed, text: str) -> str:
    """Staging logged a line containing `text`; returns that line."""
    lines = _staging(subject)
    found = next((line for line in lines if text in line), None)
    if found is None:
        raise ClaimFailed(f"staging logged {text!r}", "no staging line contains it", lines)
    return found


def staging_not_logged(subject: Deployment | DeployFailed, text: str) -> None:
    """No staging line contains `text`."""
    lines = _staging(subject)
    found = next((line for line in lines if text in line), None)
    if found is not None:
        raise ClaimFailed(f"staging did not log {text!r}", f"the line {found!r}", lines)


def staging_failed_with(subject: Deployment | DeployFailed, text: str) -> str:
    """The push failed in staging, and a staging line (or cf push's output) contains `text`."""
    wanted = f"staging failed with {text!r}"
    if not isinstance(subject, DeployFailed):
        raise ClaimFailed(wanted, f"{subject.name} staged and started", _staging(subject))
    found = next((line for line in [*subject.staging_log, *subject.output.splitlines()] if text in line), None)
    if found is None:
        raise ClaimFailed(wanted, f"`{subject.result.shown}` failed, but no line contains it", subject.staging_log)
    return found


def sidecar_running_in_instance(subject: Deployment | DeployFailed, command: str = "config-server",
                                index: int = 0) -> str:
    """`ps` over `cf ssh` in instance `index` lists a process whose command contains `command`
    (the sidecar runs in the same container as the app); returns that `ps` line."""

    def probe(d: Deployment) -> str:
        output = d.ssh("ps -eo pid,args", index=index).output
        found = [line.strip() for line in output.splitlines()[1:]
                 if command in line and not line.split(None, 1)[-1].startswith(("ps ", "sh -c", "/bin/sh -c",
                                                                                 "bash -c", "/bin/bash -c"))]
        if not found:
            raise _not_so(f"no process with {command!r} in `ps` inside instance {index}:\n{output.strip()[:1500]}")
        return found[0]

    return claim(f"the sidecar ({command}) is running in instance {index} of the app", subject, probe)


def sidecar_registered(subject: Deployment | DeployFailed, name: str = "config-server", *,
                       origin: str | None = None, process_type: str = "web") -> dict[str, Any]:
    """`/v3/apps/GUID/sidecars` lists the sidecar `name` for `process_type` (with `origin`, when given)."""
    wanted = f"the sidecar {name!r} is registered for {process_type}" + (f" with origin {origin!r}" if origin else "")

    def probe(d: Deployment) -> dict[str, Any]:
        sidecars = d.sidecars()
        seen = json.dumps([{k: s.get(k) for k in ("name", "process_types", "origin")} for s in sidecars]) \
            if sidecars else "no sidecars"
        found = next((s for s in sidecars if s.get("name") == name), None)
        if found is None or process_type not in (found.get("process_types") or []) or \
                (origin is not None and found.get("origin") != origin):
            raise _not_so(seen)
        return found

    return claim(wanted, subject, probe)
