"""Many learners on one foundation: names of their own, buildpacks they may delete, one air-gap at a time.

A workshop puts thirty people on one Cloud Foundry. Three things keep them out of each other's way:

- **names**: the notebooks' `learner` parameter (empty for a single user) is added to every name a
  notebook creates on the platform (apps and their routes, admin buildpacks) and to the object keys
  it uploads, so two learners never push, overwrite or delete the same thing (`learner_names`,
  `check_learner`, `scoped_s3`);
- **buildpacks**: a notebook deletes only the admin buildpacks it created. `cf create-buildpack`
  run through a Target records the new buildpack's guid in `created-buildpacks.json` of the work
  directory; `cf delete-buildpack` through a Target deletes a buildpack only when every guid of that
  name is recorded, and otherwise leaves it alone, saying so (`before_delete_buildpack`);
- **the air gap**: Part 4 unbinds the staging security group `public_networks` for the WHOLE
  foundation, which would break any other learner's staging that downloads at that moment. So the
  air gap is taken as a lease, and stagings announce themselves:

  - the lease is a security group named `sidecarlab-air-gap-lease`, unbound, whose one rule (to an
    unroutable documentation address) describes its holder. Cloud Controller refuses a second group
    of the same name (422), so creating it is atomic: whoever creates it holds the air gap
    (`acquire_air_gap`), until it is deleted after the groups are bound back (`release_air_gap`);
  - a learner's staging verb (`cf push`, `cf restage`, ...) first creates a marker group
    `sidecarlab-staging-<run>` (no rules, unbound), then reads the lease: held by someone else, it
    removes its marker and waits (printing who holds it since when); free, it stages and removes its
    marker afterwards (`staging_egress`);
  - the lease holder, after creating the lease, waits until no other run's staging marker is left
    before anything is unbound. Both sides write first and read second, so one of the two always
    sees the other: no staging of another learner runs while the foundation is air-gapped.

  A lease or a marker whose run died is broken when it is older than `STALE_LEASE_MINUTES` /
  `STALE_STAGING_MINUTES`: whoever breaks a lease binds back the groups it names, and says so.

Only learners with the admin role can create security groups; a learner without it (Part 1 on a real
foundation) takes part only by reading the lease.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import getpass
import json
import os
import re
import socket
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from .errors import KitError
from .paths import work_root

if TYPE_CHECKING:
    from .blobstore import S3Settings
    from .targets.base import Target

__all__ = [
    "LEASE_NAME",
    "STAGING_MARKER_PREFIX",
    "AirGapLease",
    "LearnerError",
    "acquire_air_gap",
    "before_delete_buildpack",
    "check_learner",
    "current_lease",
    "learner_name",
    "learner_names",
    "record_created_buildpack",
    "recorded_buildpacks",
    "release_air_gap",
    "release_leftover_lease",
    "scoped_s3",
    "staging_egress",
]

LEARNER_MAX = 20
_LEARNER = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")

LEASE_NAME = "sidecarlab-air-gap-lease"
STAGING_MARKER_PREFIX = "sidecarlab-staging-"
#: A lease older than this is taken for abandoned (its holder's kernel died) and may be broken.
STALE_LEASE_MINUTES = 30.0
#: A staging marker older than this is taken for abandoned (a push never runs that long).
STALE_STAGING_MINUTES = 15.0
#: How long a staging or an air gap waits for the other side at most (past a stale lease's age).
WAIT_MINUTES = 35.0
POLL_SECONDS = 2.0
#: How often a wait says it is still waiting.
REPORT_SECONDS = 60.0
# The lease's one rule: TCP to TEST-NET-1 (RFC 5737, never routed), and the group is bound to nothing:
# it opens no way out. Its description carries who holds the lease.
_LEASE_RULE = {"protocol": "tcp", "destination": "192.0.2.1", "ports": "9"}
#: The verbs that stage an app, and so may need staging egress.
STAGING_VERBS = frozenset({"push", "v3-push", "restage", "stage", "stage-package", "v3-stage", "start",
                           "v3-start"})

Log = Callable[[str], None]


class LearnerError(KitError):
    """A bad `learner` parameter, or a foundation-wide step that could not wait for another learner."""


# =================================================================================== names

def check_learner(learner: str | None) -> str:
    """The `learner` parameter, checked: empty (a single user) or a DNS-label-safe name of at most
    20 characters (lowercase letters, digits and inner hyphens), since it goes into app names,
    routes, buildpack names and object keys."""
    value = str(learner if learner is not None else "").strip()
    if not value:
        return ""
    if len(value) > LEARNER_MAX or not _LEARNER.match(value):
        why = (f"it has {len(value)} characters (at most {LEARNER_MAX})" if len(value) > LEARNER_MAX else
               "it may hold only lowercase letters, digits and hyphens, and must start and end with a letter "
               "or digit")
        suggestion = re.sub(r"[^a-z0-9-]+", "-", value.lower()).strip("-")[:LEARNER_MAX].strip("-") or "alice"
        raise LearnerError(
            f"learner {learner!r} cannot be used: {why}. It becomes part of app names, routes, buildpack names "
            f"and object keys, so it must be a DNS label. Set learner to e.g. {suggestion!r} in the notebook's "
            f"parameters cell or pass `-p learner {suggestion}` to `sidecarlab run` (empty: a single user).")
    return value


def learner_name(name: str, learner: str | None) -> str:
    """`name` made the learner's own: `NAME-LEARNER` (`NAME_LEARNER` for a snake_case name); `name`
    itself for a single user (learner empty), or when it already ends with the learner's name (a cell
    run twice)."""
    learner = check_learner(learner)
    if not learner:
        return name
    sep = "_" if "_" in name and "-" not in name else "-"
    suffix = f"{sep}{learner}"
    return name if name.endswith(suffix) else f"{name}{suffix}"


def learner_names(learner: str | None, *names: str) -> tuple[str, ...]:
    """Each of `names` made the learner's own (see `learner_name`)."""
    return tuple(learner_name(name, learner) for name in names)


def scoped_s3(settings: S3Settings, learner: str | None) -> S3Settings:
    """The storage settings with the object keys under the learner's own folder
    (`config-server-sidecar/<learner>/...`); unchanged for a single user."""
    learner = check_learner(learner)
    if not learner or getattr(settings, "learner", "") == learner:
        return settings
    return dataclasses.replace(settings, learner=learner)


# ============================================================================== buildpacks

def _records_path() -> Path:
    return work_root() / "created-buildpacks.json"


def _read_records() -> dict[str, dict[str, list[str]]]:
    try:
        data = json.loads(_records_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_records(records: dict[str, dict[str, list[str]]]) -> None:
    path = _records_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(records, indent=1, sort_keys=True))
    partial.replace(path)


def _platform_key(target: Target) -> str:
    return target.platform_key()


def buildpack_guids(target: Target, name: str) -> list[str]:
    """The guids of the admin buildpacks called `name` (one per stack)."""
    found = target.curl_all(f"/v3/buildpacks?names={urllib.parse.quote(name)}&per_page=5000")
    return [str(b.get("guid")) for b in found if b.get("name") == name]


def recorded_buildpacks(target: Target) -> dict[str, list[str]]:
    """The admin buildpacks this learner's notebooks created on the target: name to guids."""
    return dict(_read_records().get(_platform_key(target), {}))


def record_created_buildpack(target: Target, name: str, before: Sequence[str]) -> list[str]:
    """Record the buildpacks called `name` that exist now and did not before (`cf create-buildpack` made them)."""
    new = [g for g in buildpack_guids(target, name) if g not in before]
    if new:
        records = _read_records()
        mine = records.setdefault(_platform_key(target), {})
        mine[name] = sorted(set(mine.get(name, [])) | set(new))
        _write_records(records)
    return new


def forget_buildpack(target: Target, name: str) -> None:
    """Drop the record of `name` (it was deleted)."""
    records = _read_records()
    mine = records.get(_platform_key(target), {})
    if mine.pop(name, None) is not None:
        _write_records(records)


def not_created_here(target: Target, name: str) -> list[str]:
    """The guids of buildpacks called `name` that no notebook of this learner created."""
    ours = set(recorded_buildpacks(target).get(name, []))
    return [g for g in buildpack_guids(target, name) if g not in ours]


def before_delete_buildpack(target: Target, name: str) -> str | None:
    """None when `cf delete-buildpack NAME` may run (no such buildpack, or every one of that name was
    created by this learner's notebooks); else why it must not."""
    foreign = not_created_here(target, name)
    if not foreign:
        return None
    return (f"Not deleting the buildpack {name}: it exists on the platform, but no notebook of yours created it "
            f"(the buildpacks your notebooks create are recorded in {_records_path()}), so it may be someone "
            "else's. Delete it yourself in a terminal if you are sure it is yours.")


# ================================================================================== the lease

def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def _parse_time(text: str) -> _dt.datetime | None:
    try:
        parsed = _dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=_dt.UTC)


def _who(target: Target) -> dict[str, Any]:
    return {"learner": target.learner, "user": getpass.getuser(), "host": socket.gethostname(),
            "run": target.run_id, "pid": os.getpid()}


@dataclass(frozen=True)
class AirGapLease:
    """The foundation's air-gap lease as found on the platform."""

    guid: str
    created_at: str
    holder: dict[str, Any]

    @classmethod
    def from_group(cls, group: dict[str, Any]) -> AirGapLease:
        holder: dict[str, Any] = {}
        for rule in group.get("rules") or []:
            try:
                said = json.loads(str(rule.get("description") or ""))
            except ValueError:
                continue
            if isinstance(said, dict):
                holder = said
        return cls(str(group.get("guid", "")), str(group.get("created_at", "")), holder)

    def who(self) -> str:
        """`learner alice (bob@host)`, or `bob@host` for a single user, or `someone` for a foreign lease."""
        learner, user, host = (self.holder.get(k) for k in ("learner", "user", "host"))
        person = f"{user}@{host}" if user else ""
        if learner:
            return f"learner {learner}" + (f" ({person})" if person else "")
        return person or "someone (the lease names nobody)"

    def since(self) -> str:
        created = _parse_time(self.created_at)
        return created.strftime("%H:%M:%S UTC") if created else (self.created_at or "an unknown time")

    def age_seconds(self) -> float:
        created = _parse_time(self.created_at)
        return max(0.0, (_now() - created).total_seconds()) if created else 0.0

    def groups(self) -> list[str]:
        """The staging security groups the holder unbinds and binds back."""
        return [str(g) for g in self.holder.get("groups") or []]

    def held_by(self, target: Target) -> bool:
        """Whether this very run (this Target) holds the lease."""
        return bool(self.holder.get("run")) and self.holder.get("run") == target.run_id

    def left_by_earlier_run(self, target: Target) -> bool:
        """Whether an earlier run of the same learner, user and machine holds it, whose process is gone
        (a killed kernel's)."""
        me = _who(target)
        if not all(self.holder.get(k) == me[k] for k in ("learner", "user", "host")) or self.held_by(target):
            return False
        pid = self.holder.get("pid")
        return not (isinstance(pid, int) and psutil.pid_exists(pid) and pid != os.getpid())

    def stale(self) -> bool:
        return self.age_seconds() > STALE_LEASE_MINUTES * 60


def current_lease(target: Target) -> AirGapLease | None:
    """The air-gap lease on the target, or None when nobody holds it."""
    found = [g for g in target.curl_all(f"/v3/security_groups?names={LEASE_NAME}") if g.get("name") == LEASE_NAME]
    return AirGapLease.from_group(found[0]) if found else None


def _name_taken(exc: Exception) -> bool:
    from .targets.errors import ApiError

    return isinstance(exc, ApiError) and ("already exists" in exc.detail or "already been taken" in exc.detail
                                          or exc.title == "CF-UnprocessableEntity" and "name" in exc.detail.lower())


def _bound_for_staging(target: Target, name: str) -> bool:
    groups = target.curl_all(f"/v3/security_groups?names={urllib.parse.quote(name)}")
    return any(g.get("name") == name and (g.get("globally_enabled") or {}).get("staging") for g in groups)


def _delete_group(target: Target, guid: str) -> None:
    from .targets.errors import ApiError

    try:
        target.curl(f"/v3/security_groups/{guid}", method="DELETE")
    except ApiError as exc:
        if "not found" not in exc.detail.lower() and exc.title != "CF-ResourceNotFound":
            raise


def _break_lease(target: Target, lease: AirGapLease, log: Log) -> None:
    """Bind back what an abandoned lease's holder unbound, then delete the lease."""
    minutes = lease.age_seconds() / 60
    log(f"The air-gap lease of {lease.who()} (since {lease.since()}, {minutes:.0f} min ago) is older than "
        f"{STALE_LEASE_MINUTES:.0f} minutes: its run is taken for dead, and the lease is broken.")
    for name in lease.groups():
        if not _bound_for_staging(target, name):
            log(f"binding {name} back for staging, as that run would have")
            target.cf("bind-staging-security-group", name, echo=False, quiet=True)
    _delete_group(target, lease.guid)


class _Waiter:
    """Says once what it waits for, then every REPORT_SECONDS, and gives up after WAIT_MINUTES."""

    def __init__(self, log: Log, what: str) -> None:
        self.log, self.what = log, what
        self.started = time.monotonic()
        self.reported = 0.0
        self.waited = False

    def wait(self, why: str) -> None:
        now = time.monotonic()
        if now - self.started > WAIT_MINUTES * 60:
            raise LearnerError(
                f"Gave up after {WAIT_MINUTES:.0f} minutes: {why}. Ask the learner named there to finish their "
                f"Part 4 (or its clean-up cell), or an operator to delete the security group {LEASE_NAME} once "
                "`cf staging-security-groups` lists public_networks again; then run this cell again.")
        if not self.waited or now - self.reported >= REPORT_SECONDS:
            waited = f" (waiting for {now - self.started:.0f}s)" if self.waited else ""
            self.log(f"Waiting before {self.what}: {why}{waited}.")
            self.reported = now
        self.waited = True
        time.sleep(POLL_SECONDS)

    def done(self) -> None:
        if self.waited:
            self.log(f"{self.what[0].upper()}{self.what[1:]} goes ahead after waiting {time.monotonic() - self.started:.0f}s.")


def _lease_holds_up(target: Target, lease: AirGapLease, log: Log) -> bool:
    """True when `lease` keeps this run from going on (someone else's, not stale); a stale one is broken."""
    if lease.held_by(target):
        return False
    if lease.stale():
        _break_lease(target, lease, log)
        return False
    return True


def _stagings_of_others(target: Target, log: Log) -> list[dict[str, Any]]:
    """Other runs' staging markers, stale ones deleted."""
    found = []
    for group in target.curl_all("/v3/security_groups?per_page=5000"):
        name = str(group.get("name", ""))
        if not name.startswith(STAGING_MARKER_PREFIX) or name == _marker_name(target):
            continue
        created = _parse_time(str(group.get("created_at", "")))
        if created and (_now() - created).total_seconds() > STALE_STAGING_MINUTES * 60:
            log(f"removing {name}, a staging marker older than {STALE_STAGING_MINUTES:.0f} minutes (its run died)")
            _delete_group(target, str(group.get("guid")))
            continue
        found.append(group)
    return found


def acquire_air_gap(target: Target, groups: Sequence[str], *, log: Log = print) -> AirGapLease:
    """Take the foundation's air-gap lease for this run (waiting while another run holds it), then wait
    until no other run is staging. `groups` are the staging groups about to be unbound; the lease
    names those bound now, so whoever breaks it when this run dies binds them back."""
    waiter = _Waiter(log, "the air gap")
    while True:
        bound = [g for g in groups if _bound_for_staging(target, g)]
        holder = dict(_who(target), groups=bound)
        rule = dict(_LEASE_RULE, description=json.dumps(holder, sort_keys=True))
        try:
            made = target.curl("/v3/security_groups", method="POST", body={"name": LEASE_NAME, "rules": [rule]})
        except KitError as exc:
            if not _name_taken(exc):
                raise
            lease = current_lease(target)
            if lease is None:
                continue  # released meanwhile: try again
            if lease.held_by(target):
                break  # a cell run twice: this run holds it already
            if lease.left_by_earlier_run(target):
                log(f"An earlier run of yours left the air-gap lease (since {lease.since()}): taking it over.")
                _delete_group(target, lease.guid)
                continue
            while lease is not None and _lease_holds_up(target, lease, log):  # only read while waiting
                waiter.wait(f"{lease.who()} has air-gapped staging for the whole foundation since {lease.since()} "
                            f"(their Part 4); only one air gap at a time")
                lease = current_lease(target)
            continue
        # Between reading the groups and creating the lease, a holder may have bound its groups back.
        if [g for g in groups if _bound_for_staging(target, g)] != bound:
            _delete_group(target, str(made.get("guid")))
            continue
        break
    waiter.done()
    waiter = _Waiter(log, "the air gap")
    while True:
        others = _stagings_of_others(target, log)
        if not others:
            break
        names = ", ".join(sorted(str(g.get("name")).removeprefix(STAGING_MARKER_PREFIX) for g in others))
        waiter.wait(f"{len(others)} staging(s) of other learners still need the network ({names})")
    waiter.done()
    lease = current_lease(target)
    if lease is None or not lease.held_by(target):
        raise LearnerError(f"The air-gap lease {LEASE_NAME} this run created is gone: someone deleted it. Run the "
                           "cell again.")
    return lease


def release_air_gap(target: Target, *, log: Log = print) -> bool:
    """Delete the lease if this run holds it and the groups it names are bound for staging again;
    True if it did. While one is still unbound the lease stays, so no one stages air-gapped by mistake."""
    lease = current_lease(target)
    if lease is None or not lease.held_by(target):
        return False
    unbound = [g for g in lease.groups() if not _bound_for_staging(target, g)]
    if unbound:
        log(f"The air-gap lease stays: {', '.join(unbound)} is still unbound for staging, and other learners' "
            f"stagings wait until it is bound back (`cf bind-staging-security-group {unbound[0]}`).")
        return False
    _delete_group(target, lease.guid)
    return True


def release_leftover_lease(target: Target, *, log: Log = print) -> bool:
    """Delete a lease an earlier, killed run of this learner left (its groups are bound back by then)."""
    lease = current_lease(target)
    if lease is None or lease.held_by(target) or not lease.left_by_earlier_run(target):
        return False
    log(f"an earlier run of yours left the air-gap lease (since {lease.since()}): deleting it")
    _delete_group(target, lease.guid)
    return True


# ============================================================================= staging egress

def _marker_name(target: Target) -> str:
    return f"{STAGING_MARKER_PREFIX}{target.learner or 'user'}-{target.run_id}"


@contextmanager
def staging_egress(target: Target, verb: str, *, log: Log = print) -> Iterator[None]:
    """Around a staging verb of a learner's run: wait while another run holds the air gap, and keep a
    staging marker while the verb runs, so no one air-gaps the foundation under it."""
    marker = _marker_name(target)
    waiter = _Waiter(log, f"`cf {verb}`")
    made, can_mark = "", True
    try:
        while True:
            if can_mark and not made:
                try:
                    made = str(target.curl("/v3/security_groups", method="POST",
                                           body={"name": marker, "rules": []}).get("guid", ""))
                except KitError as exc:
                    if _name_taken(exc):
                        found = target.curl_all(f"/v3/security_groups?names={marker}")
                        made = str(found[0].get("guid", "")) if found else ""
                    else:
                        can_mark = False  # no right to create groups (no admin): the lease is only read
            lease = current_lease(target)
            if lease is None or not _lease_holds_up(target, lease, log):
                break
            if made:  # never hold up the air gap we wait for
                _delete_group(target, made)
                made = ""
            while lease is not None and _lease_holds_up(target, lease, log):  # only read while waiting
                waiter.wait(f"{lease.who()} has air-gapped staging for the whole foundation since {lease.since()} "
                            f"(their Part 4), and this staging may need to download")
                lease = current_lease(target)
        waiter.done()
        yield
    finally:
        if made:
            _delete_group(target, made)
