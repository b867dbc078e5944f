"""Application security groups (ASGs): the platform's own switch for staging egress.

A security group is a name and a list of egress rules (`protocol` tcp/udp/icmp/all, `destination`
an IPv4 address, range `a-b` or CIDR, `ports` "443" / "80,443" / "8000-9000", `type` and `code` for
icmp, optional `log` and `description`). A group applies to every staging task while it is bound
for staging (`globally_enabled.staging`), and to running apps while bound for running, as Cloud
Controller's `/v3/security_groups` describes them. Rules are validated with Cloud Controller's
checks and texts (`Rules[0]: ports are required for protocols of type TCP and UDP`), so an error
names the rule and the field.

A fresh state dir gets a usual cf-deployment's two defaults, bound for staging and running:
`public_networks` (every public IPv4 range; the private ranges and link-local are left out) and
`dns` (tcp and udp 53 anywhere). They are created once, with the table: a group the user deletes
stays deleted.

Staging egress (`staging_egress`) is decided at the start of every staging task, so a bind or
unbind applies to the next staging without a restart. localcf does not filter per destination:

- some bound staging group has a rule that opens traffic beyond name resolution (protocol `all`,
  or tcp/udp with a port other than 53): the staging task shares the host's network, all of it;
- otherwise (no group bound, or only DNS or ICMP rules): the task stages in an empty network
  namespace with only loopback, which is how a foundation is air-gapped;
- in `process` runtime mode there is no network namespace to stage in: staging uses the host's
  network and its log says plainly that it cannot be air-gapped.

Records live in this module's own table (`security_groups`) in the store's SQLite database,
written through the store's connection and transactions.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from .jsondoc import JsonObject
from .security_group_rules import (  # noqa: F401  (re-exported: this module is where rooms look for them)
    DEFAULT_GROUPS,
    LIFECYCLES,
    NAME_MAX,
    PROCESS_MODE_NOTICE,
    RULE_KEYS,
    RUNNING,
    STAGING,
    SecurityGroup,
    SecurityGroupError,
    SecurityGroupNameTaken,
    SecurityGroupNotFound,
    destination_problem,
    display_rule,
    opens_egress,
    parse_ports,
    validate_name,
    validate_rules,
)
from .store import Store, now_iso

_SCHEMA = """
CREATE TABLE IF NOT EXISTS security_groups (
    guid TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    rules TEXT NOT NULL,
    running_default INTEGER NOT NULL DEFAULT 0,
    staging_default INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
)
"""



# ------------------------------------------------------------------------------------ records

class SecurityGroups:
    """Security group records in the store's database (one table of their own)."""

    def __init__(self, store: Store):
        self.store = store
        with store.transaction():
            existed = store.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'security_groups'")
            store.execute(_SCHEMA)
            if not existed:  # a fresh state dir: the usual defaults, once
                for name, rules in DEFAULT_GROUPS:
                    self._insert(name, rules, running=True, staging=True)

    @staticmethod
    def _record(row: Any) -> SecurityGroup:
        return SecurityGroup(guid=row["guid"], name=row["name"], rules=json.loads(row["rules"]),
                             running=bool(row["running_default"]), staging=bool(row["staging_default"]),
                             created_at=row["created_at"], updated_at=row["updated_at"])

    def _insert(self, name: str, rules: list[JsonObject], running: bool, staging: bool) -> SecurityGroup:
        guid, ts = str(uuid.uuid4()), now_iso()
        self.store.execute(
            "INSERT INTO security_groups (guid, name, rules, running_default, staging_default,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (guid, name, json.dumps(rules), int(running), int(staging), ts, ts))
        return SecurityGroup(guid, name, rules, running, staging, ts, ts)

    def all(self) -> list[SecurityGroup]:
        rows = self.store.execute("SELECT * FROM security_groups ORDER BY created_at, rowid")
        return [self._record(r) for r in rows]

    def bound(self, lifecycle: str) -> list[SecurityGroup]:
        """The groups bound (globally) for `staging` or `running`."""
        return [g for g in self.all() if g.bound(lifecycle)]

    def get(self, guid: str) -> SecurityGroup:
        rows = self.store.execute("SELECT * FROM security_groups WHERE guid = ?", (guid,))
        if not rows:
            raise SecurityGroupNotFound("Security group not found")
        return self._record(rows[0])

    def by_name(self, name: str) -> SecurityGroup | None:
        rows = self.store.execute("SELECT * FROM security_groups WHERE name = ?", (name,))
        return self._record(rows[0]) if rows else None

    def create(self, name: Any, rules: Any = None, running: bool = False, staging: bool = False) -> SecurityGroup:
        rules = [] if rules is None else rules
        problems = [p for p in [validate_name(name)] if p] + validate_rules(rules)
        if problems:
            raise SecurityGroupError(", ".join(problems))
        with self.store.transaction():
            if self.by_name(name):
                raise SecurityGroupNameTaken(f"Security group with name '{name}' already exists.")
            return self._insert(name, rules, running=running, staging=staging)

    def update(self, guid: str, *, name: Any = None, rules: Any = None, running: bool | None = None,
               staging: bool | None = None) -> SecurityGroup:
        """Change what is given (None leaves a field as it is); all or nothing."""
        problems = ([p for p in [validate_name(name)] if p] if name is not None else []) + \
            (validate_rules(rules) if rules is not None else [])
        if problems:
            raise SecurityGroupError(", ".join(problems))
        with self.store.transaction():
            group = self.get(guid)
            if name is not None and name != group.name and self.by_name(name):
                raise SecurityGroupNameTaken(f"Security group with name '{name}' already exists.")
            new = SecurityGroup(
                guid=guid, name=group.name if name is None else name,
                rules=group.rules if rules is None else rules,
                running=group.running if running is None else running,
                staging=group.staging if staging is None else staging,
                created_at=group.created_at, updated_at=now_iso())
            self.store.execute(
                "UPDATE security_groups SET name = ?, rules = ?, running_default = ?, staging_default = ?,"
                " updated_at = ? WHERE guid = ?",
                (new.name, json.dumps(new.rules), int(new.running), int(new.staging), new.updated_at, guid))
            return new

    def delete(self, guid: str) -> None:
        with self.store.transaction():
            self.get(guid)
            self.store.execute("DELETE FROM security_groups WHERE guid = ?", (guid,))

    # -------------------------------------------------------------------------- staging egress

    def staging_egress(self, runtime_mode: str) -> StagingEgress:
        """The network of the next staging task, from the groups bound for staging right now."""
        opening = [g.name for g in self.bound(STAGING) if any(opens_egress(r) for r in g.rules)]
        if opening:
            return StagingEgress("host", opening, None)
        if runtime_mode != "namespaces":
            return StagingEgress("host", [], PROCESS_MODE_NOTICE)
        return StagingEgress("none", [], None)


@dataclass(frozen=True)
class StagingEgress:
    """What a staging task gets: `host` (the host's network) or `none` (only loopback)."""

    network: str
    opened_by: list[str]  # the bound staging groups that open egress
    notice: str | None  # said in the staging log (process mode cannot air-gap)


_GROUPS: WeakKeyDictionary[Store, SecurityGroups] = WeakKeyDictionary()


def for_store(store: Store) -> SecurityGroups:
    """The security groups of a store (its table is created, and seeded, on first use)."""
    groups = _GROUPS.get(store)
    if groups is None:
        groups = _GROUPS[store] = SecurityGroups(store)
    return groups


# (argv, env, binds, network, on_output(stream, line)) -> exit status: the stager's TaskRunner
TaskRunner = Callable[[list[str], dict[str, str], dict[Path, str], str, Callable[[str, str], None]], int]


def staging_task_runner(store: Store, runner: TaskRunner, runtime_mode: str) -> TaskRunner:
    """`runner` behind the staging security groups: each staging task gets the network they allow
    at the moment it starts (a stager that asks for `none` keeps `none`)."""
    groups = for_store(store)

    def run(argv: list[str], env: dict[str, str], binds: dict[Path, str], network: str,
            on_output: Callable[[str, str], None]) -> int:
        egress = groups.staging_egress(runtime_mode)
        if egress.notice:
            on_output("OUT", egress.notice)
        return runner(argv, env, binds, "none" if network == "none" else egress.network, on_output)

    return run
