"""A workshop on one foundation: learners' names never collide, a notebook deletes only the buildpacks it
created, and Part 4's air gap never runs under another learner's staging (nor their staging under it).

The last test runs two learners' Parts 1 to 4 at the same time against one localcf and one embedded S3
server, through `sidecarlab run ... -p learner NAME`, as a workshop would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import nbformat
import pytest
from conftest import FIXTURES, LocalCF, install_cf_stand_in

from sidecarlab import blobstore, learner, part4
from sidecarlab.blobstore import S3Settings
from sidecarlab.learner import LearnerError, check_learner, learner_name, learner_names, scoped_s3
from sidecarlab.targets import LocalTarget, target_from_params
from sidecarlab.testing import Platform

SIDECARLAB = Path(sys.executable).parent / "sidecarlab"
PYTHON_APP = FIXTURES / "staging" / "python-app"
GROUPS = "/v3/security_groups?per_page=5000"


# ----------------------------------------------------------------------------- names (no platform)

@pytest.mark.parametrize("value", ["alice", "bob-2", "a", "0", "x" * 20, "  carol  "])
def test_a_dns_label_is_a_learner(value: str) -> None:
    assert check_learner(value) == value.strip()


@pytest.mark.parametrize("value", [None, "", "   "])
def test_no_learner_is_a_single_user(value: str | None) -> None:
    assert check_learner(value) == ""
    assert learner_name("app-using-config-server", value) == "app-using-config-server"


@pytest.mark.parametrize(("value", "why"), [
    ("Alice", "lowercase letters, digits and hyphens"),
    ("bob smith", "lowercase letters, digits and hyphens"),
    ("-bob", "start and end with a letter or digit"),
    ("bob-", "start and end with a letter or digit"),
    ("bob_1", "lowercase letters, digits and hyphens"),
    ("b.ob", "lowercase letters, digits and hyphens"),
    ("x" * 21, "21 characters (at most 20)"),
])
def test_a_learner_that_is_no_dns_label_is_refused_naming_the_parameter(value: str, why: str) -> None:
    with pytest.raises(LearnerError) as refused:
        check_learner(value)
    said = str(refused.value)
    assert said.startswith(f"learner {value!r} cannot be used: ")
    assert why in said
    assert "-p learner " in said and "parameters cell" in said


def test_the_refusal_suggests_a_name_that_passes() -> None:
    with pytest.raises(LearnerError, match=r"e\.g\. 'bob-smith'"):
        check_learner("Bob Smith")
    check_learner("bob-smith")


def test_names_carry_the_learner_once() -> None:
    assert learner_name("app-using-config-server", "alice") == "app-using-config-server-alice"
    assert learner_name("sidecar_buildpack", "alice") == "sidecar_buildpack_alice"  # snake_case stays snake_case
    assert learner_name("config-server-buildpack", "bob") == "config-server-buildpack-bob"
    # A connect cell run twice does not add the name twice.
    assert learner_name("app-using-config-server-alice", "alice") == "app-using-config-server-alice"
    assert learner_names("bob", "app", "sidecar_buildpack") == ("app-bob", "sidecar_buildpack_bob")
    with pytest.raises(LearnerError):
        learner_names("Bob!", "app")


def test_object_keys_live_in_the_learner_s_folder() -> None:
    shared = S3Settings()
    assert scoped_s3(shared, "") is shared
    alice = scoped_s3(shared, "alice")
    assert (alice.endpoint, alice.bucket, alice.region, alice.learner) == (shared.endpoint, shared.bucket,
                                                                           shared.region, "alice")
    assert blobstore.sidecar_key("0.0.1", alice.learner) == "config-server-sidecar/alice/config-server-v0.0.1"
    assert blobstore.sidecar_key("0.0.1") == "config-server-sidecar/config-server-v0.0.1"
    assert "keys under config-server-sidecar/alice/" in alice.describe()
    assert "keys under" not in shared.describe()
    with pytest.raises(LearnerError):
        scoped_s3(shared, "Alice")


def test_the_target_is_refused_before_anything_with_a_bad_learner() -> None:
    with pytest.raises(LearnerError, match="learner 'a b' cannot be used"):
        target_from_params(target="local", learner="a b", localcf_home="/nonexistent/never-started")


# ------------------------------------------------------------------------------ on one localcf

@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A work dir of this test's own (where created buildpacks are recorded)."""
    monkeypatch.setenv("SIDECARLAB_WORK", str(tmp_path / "work"))
    return tmp_path / "work"


def learner_target(localcf: LocalCF, name: str) -> LocalTarget:
    made = target_from_params(target="local", local_cli="localcf", learner=name, localcf_home=str(localcf.home))
    assert isinstance(made, LocalTarget)
    made.echo = False
    return made


def group_names(target: LocalTarget) -> list[str]:
    return [g["name"] for g in target.curl_all(GROUPS)]


def staging_bound(target: LocalTarget, name: str = part4.PUBLIC_NETWORKS) -> bool:
    return any(g["name"] == name and g["globally_enabled"]["staging"] for g in target.curl_all(GROUPS))


@pytest.fixture
def restored(localcf: LocalCF) -> Iterator[None]:
    """Whatever a test leaves: public_networks bound for staging again, no lease or marker left."""
    yield
    target = learner_target(localcf, "cleanup")
    for group in target.curl_all(GROUPS):
        if group["name"].startswith(("sidecarlab-air-gap-lease", "sidecarlab-staging-")):
            target.curl(f"/v3/security_groups/{group['guid']}", method="DELETE")
    if not staging_bound(target):
        target.cf("bind-staging-security-group", part4.PUBLIC_NETWORKS, quiet=True)


def test_a_buildpack_the_notebook_did_not_create_survives_its_clean_up(localcf: LocalCF, work: Path,
                                                                        capsys: pytest.CaptureFixture[str],
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    foreign = f"operators-buildpack-{uuid.uuid4().hex[:6]}"
    mine = f"config-server-buildpack-{uuid.uuid4().hex[:6]}"
    buildpack_dir = FIXTURES / "buildpacks" / "never-detects"
    localcf("create-buildpack", foreign, str(buildpack_dir), "50")  # made by someone else, not by a notebook
    try:
        target = learner_target(localcf, "alice")
        target.echo = True
        # Part 4's clean-up cells, as the %cf magic runs them.
        result = target.cf("delete-buildpack", foreign, "-f")
        assert result.ok
        said = capsys.readouterr().out
        assert f"$ cf delete-buildpack {foreign} -f" in said
        assert f"Not deleting the buildpack {foreign}: it exists on the platform, but no notebook of yours created it" in said
        assert foreign in localcf("buildpacks").out, "the foreign buildpack survived the clean-up"

        # One the notebook created is recorded, and its clean-up deletes it.
        target.cf("create-buildpack", mine, str(buildpack_dir), "51")
        assert mine in learner.recorded_buildpacks(target)
        records = json.loads((work / "created-buildpacks.json").read_text())
        assert records[target.platform_key()][mine] == learner.buildpack_guids(target, mine)
        target.cf("delete-buildpack", mine, "-f")
        assert mine not in localcf("buildpacks").out
        assert mine not in learner.recorded_buildpacks(target)

        # Another learner's notebook (another work dir: no record) leaves the first one's buildpack alone.
        target.cf("create-buildpack", mine, str(buildpack_dir), "51")
        other_work = work.parent / "other-work"
        monkeypatch.setenv("SIDECARLAB_WORK", str(other_work))
        other = learner_target(localcf, "bob")
        other.cf("delete-buildpack", mine, "-f")
        assert mine in localcf("buildpacks").out
        monkeypatch.setenv("SIDECARLAB_WORK", str(work))
        target.cf("delete-buildpack", mine, "-f")
        assert mine not in localcf("buildpacks").out
        assert foreign in localcf("buildpacks").out
    finally:
        localcf("delete-buildpack", foreign, "-f", check=False)
        localcf("delete-buildpack", mine, "-f", check=False)


def push_in_thread(target: LocalTarget, app: str, outcome: dict[str, object]) -> threading.Thread:
    def push() -> None:
        try:
            outcome["result"] = target.cf("push", app, "-p", str(PYTHON_APP), "-b", "python_buildpack",
                                          "-m", "64M", quiet=True)
        except Exception as exc:  # reported by the test
            outcome["error"] = exc
        outcome["finished"] = time.monotonic()

    thread = threading.Thread(target=push, daemon=True)
    thread.start()
    return thread


@pytest.mark.timeout(300)
def test_another_learner_s_push_waits_while_the_foundation_is_air_gapped(localcf: LocalCF, work: Path,
                                                                          restored: None) -> None:
    alice, bob = learner_target(localcf, "alice"), learner_target(localcf, "bob")
    app = f"waiting-app-{uuid.uuid4().hex[:6]}-bob"
    guard = part4.StagingGroupsGuard(alice, [part4.PUBLIC_NETWORKS])
    alice.cf("unbind-staging-security-group", part4.PUBLIC_NETWORKS, quiet=True)
    assert learner.LEASE_NAME in group_names(bob)
    try:
        outcome: dict[str, object] = {}
        thread = push_in_thread(bob, app, outcome)
        time.sleep(4)  # long enough for a push of this app to have created it, had it not waited
        assert "finished" not in outcome, f"bob's push ran while staging was air-gapped: {outcome}"
        assert not bob.app_exists(app), "bob's push created the app while staging was air-gapped"
        assert not [n for n in group_names(bob) if n.startswith(learner.STAGING_MARKER_PREFIX)], \
            "a waiting push keeps no staging marker (it would hold up the air gap it waits for)"
        # Alice's own staging goes ahead under her own lease.
        with learner.staging_egress(alice, "push"):
            pass
    finally:
        alice.cf("bind-staging-security-group", part4.PUBLIC_NETWORKS, quiet=True)
        released = time.monotonic()
        guard.done()
    thread.join(timeout=120)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"].ok  # type: ignore[union-attr]
    assert float(outcome["finished"]) > released  # type: ignore[arg-type]
    assert bob.app_exists(app)
    assert learner.LEASE_NAME not in group_names(bob)
    bob.cleanup(app)


@pytest.mark.timeout(300)
def test_the_air_gap_waits_for_a_staging_under_way(localcf: LocalCF, work: Path, restored: None) -> None:
    alice, bob = learner_target(localcf, "alice"), learner_target(localcf, "bob")
    made: dict[str, object] = {}
    with learner.staging_egress(bob, "push"):
        assert [n for n in group_names(bob) if n.startswith(learner.STAGING_MARKER_PREFIX + "bob-")]

        def air_gap() -> None:
            made["guard"] = part4.StagingGroupsGuard(alice, [part4.PUBLIC_NETWORKS])
            made["at"] = time.monotonic()

        thread = threading.Thread(target=air_gap, daemon=True)
        thread.start()
        time.sleep(3)
        assert "guard" not in made, "the air gap was taken while bob's staging was under way"
        staging_ends = time.monotonic()
    thread.join(timeout=60)
    assert float(made["at"]) > staging_ends  # type: ignore[arg-type]
    assert learner.LEASE_NAME in group_names(alice)
    made["guard"].done()  # type: ignore[attr-defined]
    assert learner.LEASE_NAME not in group_names(alice)
    assert staging_bound(alice)


def test_a_stale_lease_is_broken_and_its_groups_bound_back(localcf: LocalCF, work: Path, restored: None,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    carol, bob = learner_target(localcf, "carol"), learner_target(localcf, "bob")
    guard = part4.StagingGroupsGuard(carol, [part4.PUBLIC_NETWORKS])
    carol.cf("unbind-staging-security-group", part4.PUBLIC_NETWORKS, quiet=True)
    guard._active = False  # carol's kernel "dies": nothing of hers binds the group back
    monkeypatch.setattr(learner, "STALE_LEASE_MINUTES", 0.0)
    with learner.staging_egress(bob, "push"):
        said = capsys.readouterr().out
        assert "The air-gap lease of learner carol" in said and "its run is taken for dead" in said
        assert f"binding {part4.PUBLIC_NETWORKS} back for staging" in said
        assert staging_bound(bob)
        assert learner.LEASE_NAME not in group_names(bob)


def test_the_lease_stays_while_a_group_it_names_is_still_unbound(localcf: LocalCF, work: Path, restored: None,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    erin = learner_target(localcf, "erin")
    guard = part4.StagingGroupsGuard(erin, [part4.PUBLIC_NETWORKS])
    erin.cf("unbind-staging-security-group", part4.PUBLIC_NETWORKS, quiet=True)
    guard.done()  # without binding the group back first
    assert "The air-gap lease stays: public_networks is still unbound for staging" in capsys.readouterr().out
    assert learner.LEASE_NAME in group_names(erin)
    erin.cf("bind-staging-security-group", part4.PUBLIC_NETWORKS, quiet=True)
    assert learner.release_air_gap(erin)
    assert learner.LEASE_NAME not in group_names(erin)


def test_an_earlier_killed_run_s_lease_is_released_by_recover(localcf: LocalCF, work: Path, restored: None) -> None:
    first = learner_target(localcf, "dave")
    marker = work / "unbound-staging-groups.json"
    guard = part4.StagingGroupsGuard(first, [part4.PUBLIC_NETWORKS], marker=marker)
    first.cf("unbind-staging-security-group", part4.PUBLIC_NETWORKS, quiet=True)
    guard._active = False  # killed
    again = learner_target(localcf, "dave")  # the next run of the same learner: a new kernel
    assert part4.StagingGroupsGuard.recover(again, marker) == [part4.PUBLIC_NETWORKS]
    assert staging_bound(again)
    assert learner.LEASE_NAME not in group_names(again)


# -------------------------------------------- Part 5's harness: its air-gapped push takes the lease too

@pytest.mark.timeout(300)
def test_the_harness_s_air_gap_waits_for_another_learner_s_and_then_takes_the_lease(
        localcf: LocalCF, work: Path, restored: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(learner, "POLL_SECONDS", 0.2)
    alice, bob = learner_target(localcf, "alice"), learner_target(localcf, "bob")
    guard = part4.StagingGroupsGuard(bob, [part4.PUBLIC_NETWORKS])  # bob's Part 4 air-gaps the foundation
    bob.cf("unbind-staging-security-group", part4.PUBLIC_NETWORKS, quiet=True)
    platform = Platform(alice, tmp_path / "apps", "local")
    seen: dict[str, object] = {}

    def air_gapped() -> None:
        try:
            with platform.staging_air_gapped() as unbound:
                lease = learner.current_lease(alice)
                seen.update(unbound=list(unbound), holder=lease.who() if lease else None,
                            named=lease.groups() if lease else None,
                            bound=staging_bound(alice), at=time.monotonic())
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            seen["error"] = repr(exc)

    thread = threading.Thread(target=air_gapped, daemon=True)
    try:
        thread.start()
        time.sleep(3)
        assert not seen, f"alice's air gap began while bob's held: {seen}"
    finally:
        bob.cf("bind-staging-security-group", part4.PUBLIC_NETWORKS, quiet=True)
        released = time.monotonic()
        guard.done()
    thread.join(timeout=60)
    assert "error" not in seen, seen["error"]
    assert float(seen["at"]) > released  # type: ignore[arg-type]
    # The groups were read again under alice's lease (while bob held his, none was bound), and her lease
    # names them: had her run died, whoever broke the lease would bind them back.
    assert seen["unbound"] == [part4.PUBLIC_NETWORKS] and seen["bound"] is False
    assert seen["named"] == [part4.PUBLIC_NETWORKS]
    assert str(seen["holder"]).startswith("learner alice")
    assert staging_bound(alice) and learner.LEASE_NAME not in group_names(alice)


@pytest.mark.timeout(300)
def test_an_air_gapped_push_of_a_learner_through_the_harness_stages_under_its_own_lease(
        localcf: LocalCF, work: Path, restored: None, tmp_path: Path) -> None:
    """The push inside the air gap does not wait for the lease its own run holds, and leaves no lease or
    staging marker behind."""
    if "runtime: namespaces" not in localcf("status").out:
        pytest.skip("staging cannot be air-gapped in runtime mode process")
    carol = learner_target(localcf, "carol")
    platform = Platform(carol, tmp_path / "apps", "local")
    try:
        deployed = platform.deploy.without_internet_access().execute("air-gapped", PYTHON_APP)
        assert deployed.air_gapped and deployed.get("/").status == 200
    finally:
        assert platform.cleanup() == []
    assert staging_bound(carol)
    assert not [n for n in group_names(carol) if n.startswith((learner.LEASE_NAME, learner.STAGING_MARKER_PREFIX))]


def test_the_harness_refuses_a_learner_that_is_no_dns_label(tmp_path: Path) -> None:
    (tmp_path / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "sidecarlab.testing.plugin", "-p", "no:cacheprovider",
                           "-n", "0", "--learner", "Bob Smith", str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 4, proc.stdout + proc.stderr  # a usage error: nothing ran
    assert "--learner: " in proc.stderr and "lowercase letters, digits and hyphens" in proc.stderr, proc.stderr


# ------------------------------------------------------------- two learners, Parts 1 to 4 at once

def run_learner(name: str, tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    out = tmp_path / name
    out.mkdir()
    run_env = dict(env, SIDECARLAB_WORK=str(out / "work"))
    return subprocess.Popen(
        [str(SIDECARLAB), "run", "01", "02", "03", "04", "--out", str(out / "out"), "--no-progress",
         "-p", "learner", name, "-p", "local_cli", "localcf"],
        env=run_env, stdout=(out / "run.log").open("w"), stderr=subprocess.STDOUT, text=True)


def outputs(path: Path) -> str:
    executed = nbformat.read(str(path), as_version=4)
    return "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", []))


@pytest.mark.timeout(900)  # a guard against hanging, not a performance claim
def test_two_learners_run_parts_1_to_4_at_the_same_time_on_one_foundation(tmp_path: Path) -> None:
    cf = LocalCF(tmp_path / "localcf")
    cf("start")
    s3_state = tmp_path / "home" / "blobstore"
    env = dict(os.environ, LOCALCF_HOME=str(cf.home), SIDECARLAB_HOME=str(tmp_path / "home"))
    try:
        if "runtime: namespaces" not in cf("status").out:
            pytest.skip("Part 1's isolation claims need localcf's runtime mode `namespaces`")
        # One object store for both, started here, so neither notebook's clean-up stops it under the other.
        store = blobstore.start(s3_state)
        learners = ("alice", "bob")
        runs = {name: run_learner(name, tmp_path, env) for name in learners}
        codes = {name: proc.wait(timeout=840) for name, proc in runs.items()}
        logs = {name: (tmp_path / name / "run.log").read_text() for name in learners}
        for name in learners:
            assert codes[name] == 0, f"{name}'s run failed:\n{logs[name]}"
            summary = json.loads((tmp_path / name / "out" / "summary.json").read_text())
            assert summary["ok"] and len(summary["notebooks"]) == 4
            assert all(not nb["skipped_checks"] for nb in summary["notebooks"]), summary

        # Every app either learner created carries that learner's name, and only that one (the platform's
        # own record: audit.app.create events).
        events = json.loads(cf("curl", "/v3/audit_events?types=audit.app.create&per_page=5000").out)["resources"]
        created = [e["target"]["name"] for e in events]
        per_learner = {name: sorted({a for a in created if a.endswith(f"-{name}") or f"-{name}-" in a})
                       for name in learners}
        assert sorted(per_learner["alice"] + per_learner["bob"]) == sorted(set(created)), created
        assert per_learner["alice"] == sorted(a.replace("bob", "alice") for a in per_learner["bob"])
        assert "app-using-config-server-alice" in per_learner["alice"]
        assert "app-using-config-server-alice-2" in per_learner["alice"]  # Part 4's second app

        # Each Part 4 installed a system buildpack of its own.
        for name in learners:
            part4_text = outputs(tmp_path / name / "out" / "notebooks" / "04-system-and-cached-buildpack.ipynb")
            assert f"$ cf create-buildpack config-server-buildpack-{name} " in part4_text
            assert f"$ cf delete-buildpack config-server-buildpack-{name} -f" in part4_text
            other = "bob" if name == "alice" else "alice"
            assert f"cf create-buildpack config-server-buildpack-{other}" not in part4_text

        # Each learner's objects are in their own folder of the one store.
        s3 = boto3.client("s3", endpoint_url=store.endpoint_url, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=blobstore.DEFAULT_BUCKET).get("Contents", [])]
        for name in learners:
            mine = [k for k in keys if k.startswith(f"config-server-sidecar/{name}/")]
            assert f"config-server-sidecar/{name}/config-server-v0.0.1" in mine  # Part 3
            assert any(k.endswith(".tgz") for k in mine)  # Part 4's dependency
        assert all(k.split("/")[1] in learners for k in keys), keys

        # Nothing is left behind: no app, no system buildpack, no lease or marker, staging open again.
        assert not json.loads(cf("curl", "/v3/apps").out)["resources"]
        left = cf("buildpacks").out
        assert "config-server-buildpack" not in left and "python_buildpack" in left
        groups = json.loads(cf("curl", GROUPS).out)["resources"]
        assert not [g["name"] for g in groups if g["name"].startswith("sidecarlab-")]
        assert any(g["name"] == part4.PUBLIC_NETWORKS and g["globally_enabled"]["staging"] for g in groups)

        waited = [line for name in learners for line in
                  outputs(tmp_path / name / "out" / "notebooks" / "04-system-and-cached-buildpack.ipynb").splitlines()
                  + outputs(tmp_path / name / "out" / "notebooks" / "03-real-sidecar-from-buildpack.ipynb").splitlines()
                  if line.startswith("Waiting before ")]
        print("\n".join(waited) or "(neither learner had to wait)")
    finally:
        blobstore.stop(s3_state)
        cf("stop", check=False)


CF_STAND_IN = r'''#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["CF_STAND_IN_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
if args[0] == "curl" and args[1].startswith("/v3/buildpacks"):
    print(json.dumps({{"pagination": {{"next": None}}, "resources": [{{"guid": "g-1", "name": "sidecar_buildpack"}}]}}))
else:
    print("OK")
'''


def test_a_real_foundation_s_admin_buildpack_of_another_is_neither_updated_nor_deleted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts 2 and 3 on a real foundation: an admin buildpack of the same name that no notebook of this
    learner created (another learner's without `learner`, an operator's) is left alone."""
    from sidecarlab import supply_buildpack
    from sidecarlab.supply_buildpack import PLACEHOLDER_SUPPLY, BuildpackError
    from sidecarlab.targets import CFTarget

    log = install_cf_stand_in(tmp_path, monkeypatch, CF_STAND_IN.format(python=sys.executable), user="admin")
    monkeypatch.setenv("SIDECARLAB_WORK", str(tmp_path / "work"))
    cf = CFTarget("https://api.example.com", "org", "space", echo=False)
    bp = supply_buildpack.write_buildpack(tmp_path / "bp", PLACEHOLDER_SUPPLY).directory
    with pytest.raises(BuildpackError) as refused:
        supply_buildpack.install_buildpack(cf, bp, "sidecar_buildpack", tmp_path / "manifest.yml")
    assert "an admin buildpack of that name exists and no notebook of yours created it" in str(refused.value)
    assert "`learner` parameter" in str(refused.value)
    supply_buildpack.remove_buildpack(cf, "sidecar_buildpack")
    verbs = [json.loads(line)[0] for line in log.read_text().splitlines()]
    assert not {"create-buildpack", "update-buildpack", "delete-buildpack"} & set(verbs), verbs
