"""Application security groups: rules validation, the `/v3/security_groups` resource, every cf verb
with its texts, default bindings, and staging egress that follows the staging groups, through the
real `localcf` command and real staging containers.

Binding changes are global to a daemon, so these tests run their own daemons (never the session's).
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import FIXTURES, LocalCF

from localcf.client import ClientError
from localcf.security_groups import (
    DEFAULT_GROUPS,
    PROCESS_MODE_NOTICE,
    SecurityGroupError,
    SecurityGroupNameTaken,
    SecurityGroups,
    StagingEgress,
    opens_egress,
    parse_ports,
    validate_rules,
)
from localcf.store import Store

TIP = ("TIP: If Dynamic ASG's are enabled, changes will automatically apply for running and staging "
       "applications. Otherwise, changes will require an app restart (for running) or restage (for staging) "
       "to apply to existing applications.")
BAD_PORTS = ("ports must be a valid single port, comma separated list of ports, or range or ports, "
             "formatted as a string")

# ------------------------------------------------------------------------------ rules validation

@pytest.mark.parametrize("rules, expected", [
    ({"protocol": "tcp"}, ["Rules must be an array"]),
    (["tcp"], ["Rules[0]: must be an object"]),
    ([{"protocol": "tcp", "destination": "10.0.0.0/8", "ports": "80"},
      {"protocol": "sctp", "destination": "10.0.0.1"}],
     ["Rules[1]: protocol must be 'tcp', 'udp', 'icmp', or 'all'"]),
    ([{"protocol": "all", "destination": "10.0.0.300"}],
     ["Rules[0]: destination must be a valid CIDR, IP address, or IP address range"]),
    ([{"protocol": "all", "destination": "10.0.0.9-10.0.0.1"}],
     ["Rules[0]: destination must be a valid CIDR, IP address, or IP address range"]),
    ([{"protocol": "all", "destination": "10.0.0.1 "}], ["Rules[0]: destination must not contain whitespace"]),
    ([{"protocol": "all"}], ["Rules[0]: destination must be a valid CIDR, IP address, or IP address range"]),
    ([{"protocol": "all", "destination": 10}], ["Rules[0]: destination must be a string"]),
    ([{"protocol": "udp", "destination": "0.0.0.0/0", "ports": "0"}], [f"Rules[0]: {BAD_PORTS}"]),
    ([{"protocol": "tcp", "destination": "0.0.0.0/0"}],
     ["Rules[0]: ports are required for protocols of type TCP and UDP", f"Rules[0]: {BAD_PORTS}"]),
    ([{"protocol": "all", "destination": "0.0.0.0/0", "ports": "80"}],
     ["Rules[0]: ports are not allowed for protocols of type all"]),
    ([{"protocol": "icmp", "destination": "0.0.0.0/0", "type": 0, "code": 256}],
     ["Rules[0]: code must be an integer between -1 and 255 (inclusive)"]),
    ([{"protocol": "all", "destination": "0.0.0.0/0", "log": "yes", "description": 7, "port": "80"}],
     ['Rules[0]: unknown field(s): ["port"]', "Rules[0]: description must be a string",
      "Rules[0]: log must be a boolean"]),
])
def test_invalid_rules_are_named_by_index_and_field(rules: object, expected: list[str]) -> None:
    assert validate_rules(rules) == expected


def test_valid_rules_pass() -> None:
    assert validate_rules([
        {"protocol": "tcp", "destination": "10.0.11.0/24", "ports": "80,443", "description": "web", "log": True},
        {"protocol": "udp", "destination": "10.0.0.1-10.0.0.9", "ports": "8000-9000"},
        {"protocol": "icmp", "destination": "192.168.1.1", "type": -1, "code": -1},
        *[r for _, rules in DEFAULT_GROUPS for r in rules],
    ]) == []
    assert parse_ports(" 80 , 443") == [(80, 80), (443, 443)]
    assert parse_ports("9000-8000") is None
    assert parse_ports("65536") is None


def test_what_opens_staging_egress() -> None:
    assert opens_egress({"protocol": "all", "destination": "0.0.0.0/0"})
    assert opens_egress({"protocol": "tcp", "destination": "10.0.0.0/8", "ports": "53,443"})
    assert opens_egress({"protocol": "tcp", "destination": "10.0.0.0/8", "ports": "50-60"})
    assert not opens_egress({"protocol": "udp", "destination": "0.0.0.0/0", "ports": "53"})
    assert not opens_egress({"protocol": "icmp", "destination": "0.0.0.0/0", "type": 0, "code": 0})


def test_records_defaults_and_egress_decision(tmp_path: Path) -> None:
    """A real store: defaults seeded once, all-or-nothing changes, the decision per binding."""
    store = Store(tmp_path / "db.sqlite")
    groups = SecurityGroups(store)
    assert [(g.name, g.staging, g.running) for g in groups.all()] == [
        ("public_networks", True, True), ("dns", True, True)]
    egress = groups.staging_egress("namespaces")
    assert (egress.network, egress.opened_by, egress.notice) == ("host", ["public_networks"], None)

    pn = groups.by_name("public_networks")
    assert pn is not None
    groups.update(pn.guid, staging=False)
    assert groups.staging_egress("namespaces").network == "none"  # dns alone opens nothing to download from
    assert groups.staging_egress("process") == StagingEgress("host", [], PROCESS_MODE_NOTICE)

    with pytest.raises(SecurityGroupError, match=r"Rules\[0\]: protocol must be"):
        groups.update(pn.guid, staging=True, rules=[{"protocol": "x", "destination": "1.1.1.1"}])
    assert groups.by_name("public_networks") == groups.get(pn.guid)
    assert not groups.get(pn.guid).staging  # nothing half-written
    with pytest.raises(SecurityGroupNameTaken, match="Security group with name 'dns' already exists."):
        groups.create("dns")

    groups.delete(pn.guid)
    store.close()
    again = SecurityGroups(Store(tmp_path / "db.sqlite"))  # a restart: records kept, no re-seeding
    assert [(g.name, g.staging) for g in again.all()] == [("dns", True)]


# ------------------------------------------------------------------------------- the cf verbs

RULES = [{"protocol": "tcp", "destination": "10.0.11.0/24", "ports": "80,443",
          "description": "Allow http and https traffic from ZoneA"}]


@pytest.fixture(scope="module")
def sgcf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCF]:
    lcf = LocalCF(tmp_path_factory.mktemp("localcf-secgroups"))
    lcf("start")
    yield lcf
    lcf("stop", check=False)


DEFAULT_LISTING = (
    "Getting security groups as admin...\n"
    "\n"
    "name              organization   space   lifecycle\n"
    "public_networks   <all>          <all>   staging\n"
    "public_networks   <all>          <all>   running\n"
    "dns               <all>          <all>   staging\n"
    "dns               <all>          <all>   running\n")


def test_fresh_localcf_binds_the_usual_defaults(sgcf: LocalCF) -> None:
    assert sgcf("security-groups").out == DEFAULT_LISTING
    for lifecycle in ("staging", "running"):
        assert sgcf(f"{lifecycle}-security-groups").out == (
            f"Getting global {lifecycle} security groups as admin...\n\nname\npublic_networks\ndns\n")
    assert sgcf("security-group", "dns").out == (
        "Getting info for security group dns as admin...\n"
        "\n"
        "name:    dns\n"
        "rules:\n"
        "[\n"
        "  {\n"
        '    "protocol": "tcp",\n'
        '    "destination": "0.0.0.0/0",\n'
        '    "ports": "53"\n'
        "  },\n"
        "  {\n"
        '    "protocol": "udp",\n'
        '    "destination": "0.0.0.0/0",\n'
        '    "ports": "53"\n'
        "  }\n"
        "]\n"
        "\n"
        "No spaces assigned\n")


def test_create_show_update_delete(sgcf: LocalCF, tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps(RULES))
    res = sgcf("create-security-group", "zone-a", str(rules))
    assert res.out == "Creating security group zone-a as admin...\n\nOK\n"
    shown = sgcf("security-group", "zone-a").out
    assert shown.startswith("Getting info for security group zone-a as admin...\n\nname:    zone-a\nrules:\n")
    assert json.loads(shown.split("rules:\n", 1)[1].rsplit("\n\nNo spaces assigned", 1)[0]) == RULES
    assert "\nzone-a\n" in sgcf("security-groups").out  # bound nowhere: a row with empty columns

    again = sgcf("create-security-group", "zone-a", str(rules))  # cf: a warning, and success
    assert again.out == "Creating security group zone-a as admin...\n\nOK\n"
    assert again.err == "Security group with name 'zone-a' already exists.\n"

    new_rules = [{"protocol": "all", "destination": "192.0.2.0/24", "log": True}]
    rules.write_text(json.dumps(new_rules))
    assert sgcf("update-security-group", "zone-a", str(rules)).out == (
        "Updating security group zone-a as admin...\n\nOK\n\n"
        "TIP: Changes require an app restart (for running) or restage (for staging) to apply to existing "
        "applications.\n")
    assert sgcf.client().get("/v3/security_groups", params={"names": "zone-a"})["resources"][0]["rules"] == new_rules

    assert sgcf("delete-security-group", "zone-a", "-f").out == (
        f"Deleting security group zone-a as admin...\nOK\n\n{TIP}\n")
    gone = sgcf("security-group", "zone-a", check=False)
    assert (gone.code, gone.out, gone.err) == (
        1, "Getting info for security group zone-a as admin...\n\n", "FAILED\nSecurity group 'zone-a' not found.\n")
    twice = sgcf("delete-security-group", "zone-a", "-f")
    assert (twice.out, twice.err) == (f"Deleting security group zone-a as admin...\nOK\n\n{TIP}\n",
                                      "Security group 'zone-a' does not exist.\n")


def test_delete_asks_first(sgcf: LocalCF, tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text("[]")
    sgcf("create-security-group", "keep-me", str(rules))
    refused = sgcf("delete-security-group", "keep-me", check=False, input="y\n")  # no terminal to ask on
    assert refused.code == 1 and "Use -f to delete without asking." in refused.err
    assert sgcf("security-group", "keep-me").out.endswith("rules:\n[]\n\nNo spaces assigned\n")
    sgcf("delete-security-group", "keep-me", "-f")


def test_bad_rules_json_fails_with_the_reason(sgcf: LocalCF, tmp_path: Path) -> None:
    syntax = tmp_path / "syntax.json"
    syntax.write_text('[{"protocol": "tcp",\n  "ports": 80,,}]')
    res = sgcf("create-security-group", "broken", str(syntax), check=False)
    assert res.code == 1
    assert res.out == "Creating security group broken as admin...\n\n"
    assert res.err == (
        f"FAILED\nIncorrect json format: {syntax}\n"
        "line 2, column 15: Expecting property name enclosed in double quotes\n"
        "\n"
        "Valid json file example:\n[\n  {\n    \"protocol\": \"tcp\",\n    \"destination\": \"10.244.1.18\",\n"
        "    \"ports\": \"3306\"\n  }\n]\n")

    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps([RULES[0], {"protocol": "tcp", "destination": "10.0.0.0/33", "ports": "1-99999"}]))
    res = sgcf("create-security-group", "broken", str(invalid), check=False)
    assert res.code == 1
    assert res.err == (
        "FAILED\nRules[1]: destination must be a valid CIDR, IP address, or IP address range, "
        "Rules[1]: ports must be a valid single port, comma separated list of ports, or range or ports, "
        "formatted as a string\n")
    assert sgcf("security-group", "broken", check=False).code == 1  # nothing created

    res = sgcf("update-security-group", "dns", str(invalid), check=False)
    assert res.code == 1 and res.err.startswith("FAILED\nRules[1]: destination must be")
    assert sgcf.client().get("/v3/security_groups", params={"names": "dns"})["resources"][0]["rules"] == \
        dict(DEFAULT_GROUPS)["dns"]  # unchanged

    missing = sgcf("create-security-group", "broken", str(tmp_path / "nope.json"), check=False)
    assert (missing.code, missing.out) == (1, "")
    assert missing.err == f"FAILED\nIncorrect Usage: The specified path '{tmp_path / 'nope.json'}' does not exist.\n"


@pytest.mark.parametrize("verb, first_line", [
    ("security-group", "Getting info for security group nope as admin...\n\n"),
    ("bind-staging-security-group", "Binding security group nope to staging as admin...\n"),
    ("bind-running-security-group", "Binding security group nope to running as admin...\n"),
])
def test_unknown_group_fails(sgcf: LocalCF, verb: str, first_line: str) -> None:
    res = sgcf(verb, "nope", check=False)
    assert (res.code, res.out, res.err) == (1, first_line, "FAILED\nSecurity group 'nope' not found.\n")


def test_update_unknown_group_fails(sgcf: LocalCF, tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text("[]")
    res = sgcf("update-security-group", "nope", str(rules), check=False)
    assert (res.code, res.err) == (1, "FAILED\nSecurity group 'nope' not found.\n")


@pytest.mark.parametrize("lifecycle", ["staging", "running"])
def test_unbinding_an_unknown_group_warns_and_succeeds(sgcf: LocalCF, lifecycle: str) -> None:
    res = sgcf(f"unbind-{lifecycle}-security-group", "nope")
    assert res.out == f"Unbinding security group nope from defaults for {lifecycle} as admin...\nOK\n"
    assert res.err == "Security group 'nope' not found.\n"


@pytest.mark.parametrize("lifecycle", ["running", "staging"])
def test_bind_and_unbind(sgcf: LocalCF, lifecycle: str) -> None:
    assert sgcf(f"unbind-{lifecycle}-security-group", "dns").out == (
        f"Unbinding security group dns from defaults for {lifecycle} as admin...\nOK\n{TIP}\n")
    assert sgcf(f"{lifecycle}-security-groups").out.endswith("\nname\npublic_networks\n")
    listed = sgcf("security-groups").out
    assert f"dns               <all>          <all>   {lifecycle}" not in listed
    assert "public_networks   <all>          <all>   staging\npublic_networks   <all>          <all>   running" in listed
    assert sgcf(f"bind-{lifecycle}-security-group", "dns").out == (
        f"Binding security group dns to {lifecycle} as admin...\nOK\n{TIP}\n")
    assert sgcf(f"{lifecycle}-security-groups").out.endswith("\nname\npublic_networks\ndns\n")
    assert sgcf("security-groups").out == DEFAULT_LISTING


def test_deleted_defaults_stay_deleted(tmp_path: Path) -> None:
    lcf = LocalCF(tmp_path / "home")
    try:
        for name in ("public_networks", "dns"):
            lcf("delete-security-group", name, "-f")
        lcf("stop")
        assert lcf("security-groups").out == "Getting security groups as admin...\n\nNo security groups found.\n"
        for lifecycle in ("staging", "running"):
            assert lcf(f"{lifecycle}-security-groups").out == (
                f"Getting global {lifecycle} security groups as admin...\n\n"
                f"No global {lifecycle} security groups found.\n")
    finally:
        lcf("stop", check=False)


def test_v3_security_groups_shape(sgcf: LocalCF) -> None:
    c = sgcf.client()
    page = c.get("/v3/security_groups", params={"globally_enabled_staging": "true"})
    assert page["pagination"]["total_results"] == 2
    dns = next(g for g in page["resources"] if g["name"] == "dns")
    assert set(dns) == {"guid", "created_at", "updated_at", "name", "rules", "globally_enabled", "relationships",
                        "links"}
    assert dns["globally_enabled"] == {"running": True, "staging": True}
    assert dns["relationships"] == {"running_spaces": {"data": []}, "staging_spaces": {"data": []}}
    assert dns["links"]["self"]["href"].endswith(f"/v3/security_groups/{dns['guid']}")
    assert c.get(f"/v3/security_groups/{dns['guid']}") == dns

    made = c.post("/v3/security_groups", {"name": "api-made", "globally_enabled": {"staging": True}})
    assert made["rules"] == [] and made["globally_enabled"] == {"running": False, "staging": True}
    patched = c.patch(f"/v3/security_groups/{made['guid']}", {"globally_enabled": {"staging": False}})
    assert patched["globally_enabled"] == {"running": False, "staging": False}
    assert [g["name"] for g in c.get("/v3/security_groups", params={"globally_enabled_staging": "false"})
            ["resources"]] == ["api-made"]
    c.delete(f"/v3/security_groups/{made['guid']}")

    with pytest.raises(ClientError) as bad:
        c.post("/v3/security_groups", {"name": "x", "rules": [{"protocol": "tcp", "destination": "1.1.1.1"}]})
    assert (bad.value.status, bad.value.title) == (422, "CF-UnprocessableEntity")
    assert bad.value.detail.startswith("Rules[0]: ports are required for protocols of type TCP and UDP")
    empty = c.post("/v3/security_groups", {"name": "with-empty-relationships",
                                           "relationships": {"staging_spaces": {"data": []}}})
    c.delete(f"/v3/security_groups/{empty['guid']}")
    with pytest.raises(ClientError) as spaces:
        c.post("/v3/security_groups", {"name": "space-bound",
                                       "relationships": {"staging_spaces": {"data": [{"guid": "x"}]}}})
    assert spaces.value.detail == ("localcf binds security groups globally only (globally_enabled.running, "
                                   "globally_enabled.staging), not to spaces")
    with pytest.raises(ClientError) as unknown:
        c.patch(f"/v3/security_groups/{dns['guid']}", {"relationships": {}, "colour": "blue"})
    assert unknown.value.detail == "Unknown field(s): 'relationships', 'colour'"
    with pytest.raises(ClientError) as missing:
        c.get(f"/v3/security_groups/{made['guid']}")
    assert (missing.value.status, missing.value.detail) == (404, "Security group not found")


# ------------------------------------------------------------------------------ staging egress

class ProbeServer:
    """An HTTP server on 127.0.0.1 that records the paths asked of it."""

    def __init__(self) -> None:
        seen: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a: object) -> None:
                pass

        self.seen = seen
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def probe() -> Iterator[ProbeServer]:
    server = ProbeServer()
    yield server
    server.httpd.shutdown()


def stage_probe(lcf: LocalCF, app: Path, url: str) -> str:
    """Push (stage only) an app whose first buildpack GETs `url` during staging; the push output."""
    (app / "manifest.yml").write_text(
        "applications:\n- name: probe\n  no-route: true\n"
        f"  buildpacks: [{app.parent / 'network-probe'}, binary_buildpack]\n"
        f"  env: {{PROBE_URL: '{url}'}}\n")
    return lcf("push", "--no-start", cwd=app, timeout=180).out


@pytest.fixture
def probe_app(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURES / "buildpacks" / "network-probe", tmp_path / "network-probe")
    app = tmp_path / "app"
    app.mkdir()
    (app / "Procfile").write_text("web: sleep 1000\n")
    return app


def test_staging_egress_follows_the_staging_groups(tmp_path: Path, probe: ProbeServer, probe_app: Path) -> None:
    """public_networks bound: staging reaches a server on the host. Unbound: staging is air-gapped, on the
    next staging and after a daemon restart. Bound again: reachable again, without a restart."""
    lcf = LocalCF(tmp_path / "home")
    lcf("start")
    try:
        if lcf.client().get("/localcf/v1/info")["runtime"] != "namespaces":
            pytest.skip("staging can only be air-gapped in namespaces mode (process mode has no network "
                        "namespace to stage in; see test_process_mode_says_staging_cannot_be_air_gapped)")
        assert "NETWORK-REACHED" in stage_probe(lcf, probe_app, probe.url("/bound"))
        assert probe.seen == ["/bound"]

        lcf("unbind-staging-security-group", "public_networks")
        out = stage_probe(lcf, probe_app, probe.url("/unbound"))
        assert "NETWORK-UNREACHABLE" in out and "NETWORK-REACHED" not in out
        assert probe.seen == ["/bound"]

        lcf("stop")
        lcf("start")
        assert lcf("staging-security-groups").out.endswith("\nname\ndns\n")  # the binding survived
        out = stage_probe(lcf, probe_app, probe.url("/after-restart"))
        assert "NETWORK-UNREACHABLE" in out and "NETWORK-REACHED" not in out
        assert probe.seen == ["/bound"]

        lcf("bind-staging-security-group", "public_networks")
        assert "NETWORK-REACHED" in stage_probe(lcf, probe_app, probe.url("/bound-again"))
        assert probe.seen == ["/bound", "/bound-again"]
    finally:
        lcf("stop", check=False)


def test_process_mode_says_staging_cannot_be_air_gapped(tmp_path: Path, probe: ProbeServer,
                                                        probe_app: Path) -> None:
    lcf = LocalCF(tmp_path / "home")
    lcf.env.update(LOCALCF_RUNTIME="process")
    try:
        res = lcf("unbind-staging-security-group", "public_networks")
        assert res.err.startswith("Notice: localcf runs in process mode, which has no network namespace")
        assert "cannot be air-gapped" in lcf("staging-security-groups").err
        out = stage_probe(lcf, probe_app, probe.url("/process"))
        assert PROCESS_MODE_NOTICE in out
        assert "NETWORK-REACHED" in out and probe.seen == ["/process"]  # honest: not air-gapped
    finally:
        lcf("stop", check=False)
