"""Security group rules: the pure half of application security groups, shared by daemon and command.

Names of the two lifecycles, the usual defaults, Cloud Controller's rule validation and texts, the
egress decision for one rule, and the order the cf CLI shows a rule's fields in. Nothing here touches
the store, so the `localcf` command can import it (records live in `localcf.security_groups`).
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any

from .jsondoc import JsonObject

STAGING, RUNNING = "staging", "running"
LIFECYCLES = (STAGING, RUNNING)

# a usual cf-deployment's defaults, bound for staging and running on a fresh foundation
DEFAULT_GROUPS: tuple[tuple[str, list[JsonObject]], ...] = (
    ("public_networks", [
        {"protocol": "all", "destination": "0.0.0.0-9.255.255.255"},
        {"protocol": "all", "destination": "11.0.0.0-169.253.255.255"},
        {"protocol": "all", "destination": "169.255.0.0-172.15.255.255"},
        {"protocol": "all", "destination": "172.32.0.0-192.167.255.255"},
        {"protocol": "all", "destination": "192.169.0.0-255.255.255.255"},
    ]),
    ("dns", [
        {"protocol": "tcp", "destination": "0.0.0.0/0", "ports": "53"},
        {"protocol": "udp", "destination": "0.0.0.0/0", "ports": "53"},
    ]),
)

RULE_KEYS = ("protocol", "destination", "ports", "type", "code", "description", "log")
NAME_MAX = 250

PROCESS_MODE_NOTICE = (
    "localcf: this staging cannot be air-gapped: no bound staging security group opens egress, "
    "but the process runtime mode has no network namespace to stage in, so it uses the host's network."
)



class SecurityGroupError(Exception):
    """Bad input for a security group: `detail` is Cloud Controller's text."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class SecurityGroupNotFound(SecurityGroupError):
    """No security group with that guid or name."""


class SecurityGroupNameTaken(SecurityGroupError):
    """Another security group has that name."""


@dataclass(frozen=True)
class SecurityGroup:
    guid: str
    name: str
    rules: list[JsonObject]
    running: bool
    staging: bool
    created_at: str
    updated_at: str

    def bound(self, lifecycle: str) -> bool:
        return self.staging if lifecycle == STAGING else self.running

# ------------------------------------------------------------------------------------ validation

def validate_rules(rules: Any) -> list[str]:
    """Cloud Controller's rule checks; one `Rules[i]: ...` text per problem, empty when valid."""
    if not isinstance(rules, list):
        return ["Rules must be an array"]
    errors: list[str] = []
    for i, rule in enumerate(rules):
        def bad(message: str, i: int = i) -> None:
            errors.append(f"Rules[{i}]: {message}")

        if not isinstance(rule, dict):
            bad("must be an object")
            continue
        unknown = [k for k in rule if k not in RULE_KEYS]
        if unknown:
            bad("unknown field(s): [" + ", ".join(json.dumps(k) for k in unknown) + "]")
        protocol = rule.get("protocol")
        if protocol not in ("tcp", "udp", "icmp", "all"):
            bad("protocol must be 'tcp', 'udp', 'icmp', or 'all'")
        problem = destination_problem(rule.get("destination"))
        if problem:
            bad(problem)
        if rule.get("description") is not None and not isinstance(rule["description"], str):
            bad("description must be a string")
        if rule.get("log") is not None and not isinstance(rule["log"], bool):
            bad("log must be a boolean")
        if protocol in ("tcp", "udp"):
            if rule.get("ports") is None:
                bad("ports are required for protocols of type TCP and UDP")
            if parse_ports(rule.get("ports")) is None:
                bad("ports must be a valid single port, comma separated list of ports, or range or ports, "
                    "formatted as a string")
        elif protocol == "icmp":
            for field in ("code", "type"):
                if rule.get(field) is None:
                    bad(f"{field} is required for protocols of type ICMP")
                value = rule.get(field)
                if not (isinstance(value, int) and not isinstance(value, bool) and -1 <= value <= 255):
                    bad(f"{field} must be an integer between -1 and 255 (inclusive)")
        elif protocol == "all" and rule.get("ports") is not None:
            bad("ports are not allowed for protocols of type all")
    return errors


def destination_problem(destination: Any) -> str | None:
    """Why a rule's destination is invalid (Cloud Controller's text), or None."""
    invalid = "destination must be a valid CIDR, IP address, or IP address range"
    if destination is None:
        return invalid
    if not isinstance(destination, str):
        return "destination must be a string"
    if re.search(r"\s", destination):
        return "destination must not contain whitespace"
    parts = destination.split("-")
    try:
        if len(parts) == 1:
            ipaddress.IPv4Network(parts[0], strict=False)
            return None
        if len(parts) == 2:
            first, last = (ipaddress.IPv4Address(p) for p in parts)
            return None if first <= last else invalid
    except ValueError:
        return invalid
    return invalid


def parse_ports(ports: Any) -> list[tuple[int, int]] | None:
    """`"443"`, `"80,443"` or `"8000-9000"` as inclusive (low, high) ranges; None when invalid."""
    if not isinstance(ports, str) or re.search(r"[^\d\s\-,]", ports):
        return None
    span = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", ports)
    if span:
        low, high = int(span.group(1)), int(span.group(2))
        return [(low, high)] if low < high and 0 < low and high < 65536 else None
    items = ports.split(",")
    if not items or not all(re.fullmatch(r"\s*\d+\s*", p) for p in items):
        return None
    values = [int(p) for p in items]
    return [(v, v) for v in values] if all(0 < v < 65536 for v in values) else None


def validate_name(name: Any) -> str | None:
    if not isinstance(name, str):
        return "Name must be a string"
    if not name:
        return "Name can't be blank"
    if len(name) > NAME_MAX:
        return f"Name is too long (maximum is {NAME_MAX} characters)"
    return None


def opens_egress(rule: JsonObject) -> bool:
    """Whether a rule opens traffic beyond name resolution (localcf's unit of staging egress)."""
    protocol = rule.get("protocol")
    if protocol == "all":
        return True
    if protocol in ("tcp", "udp"):
        return any((low, high) != (53, 53) for low, high in parse_ports(rule.get("ports")) or [])
    return False  # icmp alone cannot carry a download


def display_rule(rule: JsonObject) -> JsonObject:
    """A rule with its fields in the cf CLI's order, absent ones left out (as `cf security-group` shows it)."""
    return {k: rule[k] for k in RULE_KEYS if rule.get(k) is not None}
