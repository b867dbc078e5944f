"""The builder (CF's v2 buildpack lifecycle), run as the program the daemon runs, with real
buildpacks (fixtures/buildpacks and the system buildpacks) on real apps (fixtures/staging)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from localcf import builder

REPO = Path(__file__).resolve().parents[1]
TEST_BUILDPACKS = REPO / "fixtures" / "buildpacks"
APPS = REPO / "fixtures" / "staging"
SYSTEM_BUILDPACKS = REPO / "src" / "localcf" / "system_buildpacks"
PYTHON_BP = SYSTEM_BUILDPACKS / "python_buildpack"
BINARY_BP = SYSTEM_BUILDPACKS / "binary_buildpack"


@dataclass
class Staging:
    returncode: int
    stdout: str
    stderr: str
    build_dir: Path
    work_dir: Path
    droplet: Path
    metadata: Path

    @property
    def result(self) -> dict:
        return json.loads(self.metadata.read_text())

    def names(self) -> list[str]:
        with tarfile.open(self.droplet) as tar:
            return tar.getnames()

    def extract(self, dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(self.droplet) as tar:
            tar.extractall(dest, filter="tar")
        return dest

    def staging_info(self) -> dict:
        with tarfile.open(self.droplet) as tar:
            return json.loads(tar.extractfile("./staging_info.yml").read())


class Stager:
    """Runs `python -m localcf.builder` the way the daemon does, one staging per call."""

    def __init__(self, root: Path):
        self.root = root
        self.buildpacks_dir = root / "buildpacks"
        self.cache_dir = root / "cache"
        self.runs = 0

    def buildpack(self, name: str, *, rename: str | None = None, files: dict | None = None,
                  source: Path | None = None) -> Path:
        """A private copy of a test buildpack, optionally renamed or with extra files."""
        src = source or TEST_BUILDPACKS / name
        dest = self.root / "bp-src" / (rename or name)
        shutil.copytree(src, dest, symlinks=True)
        if rename:
            (dest / "NAME").write_text(rename)
        for rel, text in (files or {}).items():
            (dest / rel).write_text(text)
        return dest

    def stage(self, app: Path, buildpacks: list[tuple[str, Path]], *, skip_detect: bool = True,
              env: dict[str, str | None] | None = None) -> Staging:
        self.runs += 1
        run = self.root / f"run{self.runs}"
        for key, src in buildpacks:
            dest = self.buildpacks_dir / hashlib.md5(key.encode()).hexdigest()
            if not dest.exists():
                shutil.copytree(src, dest, symlinks=True)
        build_dir = run / "build"
        shutil.copytree(app, build_dir, symlinks=True)
        droplet, metadata, work = run / "out" / "droplet.tgz", run / "out" / "result.json", run / "work"
        args = [sys.executable, "-m", "localcf.builder", "--build-dir", str(build_dir),
                "--buildpacks-dir", str(self.buildpacks_dir),
                "--buildpack-order", ",".join(k for k, _ in buildpacks),
                "--build-artifacts-cache-dir", str(self.cache_dir),
                "--output-droplet", str(droplet), "--output-metadata", str(metadata),
                "--work-dir", str(work)]
        if skip_detect:
            args.append("--skip-detect")
        full_env = dict(os.environ)
        for name, value in (env or {}).items():  # None: unset
            if value is None:
                full_env.pop(name, None)
            else:
                full_env[name] = value
        proc = subprocess.run(args, capture_output=True, text=True, timeout=120, env=full_env)
        return Staging(proc.returncode, proc.stdout, proc.stderr, build_dir, work, droplet,
                       metadata)


@pytest.fixture
def stager(tmp_path: Path) -> Stager:
    return Stager(tmp_path)


def lines(text: str) -> list[str]:
    return text.splitlines()


# -- detection --------------------------------------------------------------------------------

def test_detection_runs_in_order_and_first_match_stages_alone(stager: Stager) -> None:
    s = stager.stage(APPS / "plain-app", [
        ("never-detects", TEST_BUILDPACKS / "never-detects"),
        ("detect-not-executable", TEST_BUILDPACKS / "detect-not-executable"),
        ("first", stager.buildpack("legacy", rename="first")),
        ("second", stager.buildpack("legacy", rename="second")),
    ], skip_detect=False)
    assert s.returncode == 0, s.stderr
    assert builder.DETECT_NOT_EXECUTABLE_WARN in lines(s.stdout)
    assert (s.build_dir / "compile-args-first").exists()
    assert not (s.build_dir / "compile-args-second").exists()
    assert not (s.build_dir / "compiled-by-never-detects").exists()
    assert not (s.build_dir / "compiled-by-detect-not-executable").exists()
    # No config.yml: the detected name is detect's stdout, trimmed.
    meta = s.result["lifecycle_metadata"]
    assert s.result["detected_buildpack"] == "first"
    assert meta == {"buildpack_key": "first", "detected_buildpack": "first",
                    "buildpacks": [{"key": "first", "name": "first", "version": ""}]}
    # A single buildpack never gets the multi-buildpack warning.
    assert builder.MISSING_FINALIZE_WARN_MSG not in s.stderr


def test_no_buildpack_detects_fails_with_222(stager: Stager) -> None:
    s = stager.stage(APPS / "plain-app", [("never-detects", TEST_BUILDPACKS / "never-detects")],
                     skip_detect=False)
    assert s.returncode == 222
    assert lines(s.stderr)[-1] == "None of the buildpacks detected a compatible application"
    assert not s.droplet.exists()


def test_python_buildpack_detects_python_apps_and_binary_never_does(stager: Stager) -> None:
    order = [("binary_buildpack", BINARY_BP), ("python_buildpack", PYTHON_BP)]
    s = stager.stage(APPS / "python-app", order, skip_detect=False)
    assert s.returncode == 0, s.stderr
    assert s.result["detected_buildpack"] == "python"
    assert s.result["lifecycle_metadata"]["buildpack_key"] == "python_buildpack"
    assert stager.stage(APPS / "plain-app", order, skip_detect=False).returncode == 222


# -- supply, finalize, compile ----------------------------------------------------------------

def test_two_supply_buildpacks_then_a_final_one(stager: Stager) -> None:
    alpha = stager.buildpack("supplier", rename="alpha")
    beta = stager.buildpack("supplier", rename="beta")
    s = stager.stage(APPS / "plain-app", [("alpha", alpha), ("beta", beta),
                                          ("finalizer", TEST_BUILDPACKS / "finalizer")])
    assert s.returncode == 0, s.stderr
    out = lines(s.stdout)
    order = [out.index(f"-----> {m}") for m in (
        "alpha supplying into deps/0", "beta supplying into deps/1", "finalizer supply",
        "finalizer finalize")]
    assert order == sorted(order)
    assert "alpha says: supply output on stderr" in s.stderr  # scripts' stderr is passed on
    deps, build, cache = s.work_dir / "deps", s.build_dir, stager.cache_dir
    key_cache = {k: cache / hashlib.md5(k.encode()).hexdigest() for k in ("alpha", "beta")}
    assert (deps / "0" / "supply-args").read_text().split() == [
        "4", str(build), str(key_cache["alpha"]), str(deps), "0"]
    assert (deps / "1" / "supply-args").read_text().split() == [
        "4", str(build), str(key_cache["beta"]), str(deps), "1"]
    # The final buildpack: supply with the "final" cache, then finalize with a 5th argument.
    assert (deps / "2" / "supply-args").read_text().split() == [
        "4", str(build), str(cache / "final"), str(deps), "2"]
    assert (build / "finalize-args").read_text().split() == [
        "5", str(build), str(cache / "final"), str(deps), "2", str(s.work_dir / "profile.d")]
    assert s.result["process_types"] == {"web": "finalizer-web"}
    assert s.result["lifecycle_metadata"]["buildpacks"] == [
        {"key": "alpha", "name": "alpha", "version": "0.0.1"},
        {"key": "beta", "name": "beta", "version": "0.0.1"},
        {"key": "finalizer", "name": "finalizer", "version": "3.1.4"}]
    assert s.result["detected_buildpack"] == "finalizer"
    names = s.names()
    for name in ("./deps/0/bin/alpha", "./deps/1/bin/beta", "./deps/0/config.yml",
                 "./profile.d/finalizer.sh", "./app/finalize-args"):
        assert name in names


def test_supplied_tools_are_on_path_at_runtime_with_python_buildpack_final(
        stager: Stager, tmp_path: Path) -> None:
    alpha = stager.buildpack("supplier", rename="alpha")
    beta = stager.buildpack("supplier", rename="beta")
    s = stager.stage(APPS / "python-app", [("alpha", alpha), ("beta", beta),
                                           ("python_buildpack", PYTHON_BP)])
    assert s.returncode == 0, s.stderr
    assert s.staging_info() == {"detected_buildpack": "python", "start_command": "python app.py"}
    home = s.extract(tmp_path / "home")
    # What the launcher does: cd app, source ../profile.d/*, run the command.
    script = ('cd app && for f in ../profile.d/*; do . "$f"; done; '
              'command -v alpha; command -v beta; alpha; echo "home=$ALPHA_HOME"; '
              'echo "suppliers=$SUPPLIERS"; '
              'python -c "import sys, yaml; print(sys.prefix); print(sys.base_prefix); print(yaml.__file__)"')
    env = {"PATH": "/usr/bin:/bin", "DEPS_DIR": str(home / "deps"), "HOME": str(home / "app")}
    run = subprocess.run(["bash", "-c", script], cwd=home, env=env, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    out = lines(run.stdout)
    assert out[0] == f"{home}/deps/0/bin/alpha"
    assert out[1] == f"{home}/deps/1/bin/beta"
    assert out[2] == "alpha tool"
    assert out[3] == f"home={home}/deps/0/home"  # env/ files become exports, with $DEPS_DIR
    assert out[4] == "suppliers=alpha,beta"  # deps/*/profile.d scripts are sourced in order
    # the app's python is the interpreter the kit runs on, as a virtual environment in the
    # droplet (as the real python_buildpack puts CPython in deps/IDX), with the kit's packages
    assert out[5] == f"{home}/deps/2"
    assert out[6] == sys.base_prefix
    import yaml
    assert out[7] == yaml.__file__


def test_final_buildpack_without_finalize_compiles_with_the_warning(stager: Stager) -> None:
    s = stager.stage(APPS / "plain-app", [("alpha", stager.buildpack("supplier", rename="alpha")),
                                          ("legacy", TEST_BUILDPACKS / "legacy")])
    assert s.returncode == 0, s.stderr
    assert builder.MISSING_FINALIZE_WARN_MSG in lines(s.stderr)
    assert (s.build_dir / "compile-args-legacy").read_text().split() == [
        "2", str(s.build_dir), str(stager.cache_dir / "final")]
    assert (s.work_dir / "deps" / "0" / "bin" / "alpha").exists()
    assert not (s.work_dir / "deps" / "1").exists()  # the compile buildpack's deps dir is dropped
    assert s.result["process_types"] == {"web": "./legacy-web --port $PORT",
                                         "worker": "./legacy-worker"}


def test_non_final_buildpack_without_supply_fails_with_225(stager: Stager) -> None:
    s = stager.stage(APPS / "plain-app", [("legacy", TEST_BUILDPACKS / "legacy"),
                                          ("finalizer", TEST_BUILDPACKS / "finalizer")])
    assert s.returncode == 225
    assert lines(s.stderr)[-1] == ("Error: one of the buildpacks chosen to supply dependencies "
                                   "does not support multi-buildpack apps")
    assert "finalizer" not in s.stdout  # nothing ran


def test_deps_idx_is_zero_padded_with_ten_or_more_buildpacks(stager: Stager) -> None:
    supplier = TEST_BUILDPACKS / "supplier"
    order = [(f"s{i}", supplier) for i in range(10)] + [("finalizer", TEST_BUILDPACKS / "finalizer")]
    s = stager.stage(APPS / "plain-app", order)
    assert s.returncode == 0, s.stderr
    deps = s.work_dir / "deps"
    assert sorted(p.name for p in deps.iterdir()) == [f"{i:02d}" for i in range(11)]
    assert (deps / "03" / "supply-args").read_text().split()[-1] == "03"
    assert (s.build_dir / "finalize-args").read_text().split()[-2] == "10"


def test_deps_idx_width_counts_the_final_buildpack_too(stager: Stager) -> None:
    """Nine supply buildpacks and a final one: ten in all, so CF pads DEPS_IDX to two digits (00..09)."""
    supplier = TEST_BUILDPACKS / "supplier"
    order = [(f"s{i}", supplier) for i in range(9)] + [("finalizer", TEST_BUILDPACKS / "finalizer")]
    s = stager.stage(APPS / "plain-app", order)
    assert s.returncode == 0, s.stderr
    deps = s.work_dir / "deps"
    assert sorted(p.name for p in deps.iterdir()) == [f"{i:02d}" for i in range(10)]
    assert (deps / "08" / "supply-args").read_text().split()[-1] == "08"
    assert (s.build_dir / "finalize-args").read_text().split()[-2] == "09"


def test_caches_persist_between_stagings(stager: Stager) -> None:
    order = [("alpha", stager.buildpack("supplier", rename="alpha")),
             ("legacy", TEST_BUILDPACKS / "legacy")]
    first = stager.stage(APPS / "plain-app", order)
    second = stager.stage(APPS / "plain-app", order)
    assert first.returncode == second.returncode == 0, second.stderr
    assert (first.work_dir / "deps" / "0" / "runs-seen-in-cache").read_text().strip() == "1"
    assert (second.work_dir / "deps" / "0" / "runs-seen-in-cache").read_text().strip() == "2"
    alpha_cache = stager.cache_dir / hashlib.md5(b"alpha").hexdigest()
    assert (alpha_cache / "runs").read_text().strip() == "2"
    assert (stager.cache_dir / "final" / "compiled-by-legacy").exists()


# -- release, launch.yml, Procfile -----------------------------------------------------------

def test_launch_yml_sidecar_and_merge_order(stager: Stager, tmp_path: Path) -> None:
    app = tmp_path / "app"
    shutil.copytree(APPS / "plain-app", app, symlinks=True)
    (app / "Procfile").write_text("clock: procfile-clock\n")
    s = stager.stage(app, [("sidecar-supplier", TEST_BUILDPACKS / "sidecar-supplier"),
                           ("finalizer", TEST_BUILDPACKS / "finalizer")])
    assert s.returncode == 0, s.stderr
    r = s.result
    assert r["sidecars"] == [{"name": "config-server", "command": "config-server --port 8082",
                              "process_types": ["web"], "memory": 32}]
    # supply launch.yml, then the final buildpack's release (web), then the Procfile (clock)
    assert r["process_types"] == {"web": "finalizer-web", "worker": "launch-worker",
                                  "clock": "procfile-clock"}
    assert r["lifecycle_metadata"]["buildpacks"][0] == {
        "key": "sidecar-supplier", "name": "sidecar-supplier", "version": "2.0.0"}


def test_final_launch_yml_replaces_release(stager: Stager) -> None:
    launch = ("processes:\n- type: web\n  command: from-final-launch\n"
              "- type: helper\n  command: helper --listen 9000\n  limits: {memory: 16M}\n"
              "  platforms: {cloudfoundry: {sidecar_for: [web, worker]}}\n")
    final = stager.buildpack("finalizer", files={"launch.yml": launch})
    s = stager.stage(APPS / "plain-app", [("finalizer", final)])
    assert s.returncode == 0, s.stderr
    assert s.result["process_types"] == {"web": "from-final-launch"}  # no finalizer-web
    assert s.result["sidecars"] == [{"name": "helper", "command": "helper --listen 9000",
                                     "process_types": ["web", "worker"], "memory": 16}]
    assert s.staging_info()["start_command"] == "from-final-launch"


def test_procfile_replaces_release_commands(stager: Stager, tmp_path: Path) -> None:
    app = tmp_path / "app"
    shutil.copytree(APPS / "plain-app", app, symlinks=True)
    (app / "Procfile").write_text("web: ./run.sh --from-procfile\n")
    s = stager.stage(app, [("legacy", TEST_BUILDPACKS / "legacy")])
    assert s.returncode == 0, s.stderr
    assert s.result["process_types"] == {"web": "./run.sh --from-procfile",
                                         "worker": "./legacy-worker"}


def test_no_web_process_warns_but_stages(stager: Stager) -> None:
    s = stager.stage(APPS / "plain-app", [("binary_buildpack", BINARY_BP)])
    assert s.returncode == 0, s.stderr
    err = lines(s.stderr)
    i = err.index("No start command specified by buildpack or via Procfile.")
    assert err[i + 1] == "App will not start unless a command is provided at runtime."
    assert s.result["process_types"] == {}
    assert s.staging_info() == {"detected_buildpack": "binary", "start_command": ""}


def test_binary_buildpack_takes_web_from_the_procfile(stager: Stager, tmp_path: Path) -> None:
    app = tmp_path / "app"
    shutil.copytree(APPS / "plain-app", app, symlinks=True)
    (app / "Procfile").write_text("web: ./run.sh\n")
    s = stager.stage(app, [("binary_buildpack", BINARY_BP)])
    assert s.returncode == 0, s.stderr
    assert s.result["process_types"] == {"web": "./run.sh"}
    assert "No start command" not in s.stderr


def test_invalid_procfile_fails_with_cf_message(stager: Stager) -> None:
    s = stager.stage(APPS / "procfile-invalid", [("legacy", TEST_BUILDPACKS / "legacy")])
    assert s.returncode == 1
    assert lines(s.stderr)[-1] == "Failed to read command from Procfile: invalid YAML"


# -- failures ----------------------------------------------------------------------------------

@pytest.mark.parametrize("fail, code, message", [
    ("finalize", 223, "Failed to compile droplet: Failed to run finalize script: "
                      "bin/finalize of buildpack 'failing' exited with status 7"),
    ("supply", 223, "Failed to compile droplet: Failed to run all supply scripts: "
                    "bin/supply of buildpack 'failing' exited with status 7"),
    ("signal-finalize", 223, "Failed to compile droplet: Failed to run finalize script: "
                             "bin/finalize of buildpack 'failing' was killed by signal SIGKILL"),
    ("release", 224, "Failed to build droplet release: "
                     "bin/release of buildpack 'failing' exited with status 7"),
    ("release-yaml", 224, "Failed to build droplet release: buildpack's release output invalid: "
                         "line 2, column 1: expected ',' or ']'"),
    ("release-not-a-map", 224, "Failed to build droplet release: buildpack's release output "
                               "invalid: expected a YAML map"),
])
def test_final_buildpack_failures(stager: Stager, fail: str, code: int, message: str) -> None:
    failing = stager.buildpack("failing", files={"FAIL": fail})
    s = stager.stage(APPS / "plain-app", [("failing", failing)])
    assert s.returncode == code, s.stderr
    assert lines(s.stderr)[-1].startswith(message)
    assert not s.droplet.exists() and not s.metadata.exists()


@pytest.mark.parametrize("fail, detail", [
    ("supply", "exited with status 7"),
    ("signal-supply", "was killed by signal SIGKILL"),
])
def test_failing_non_final_supply_fails_with_225(stager: Stager, fail: str, detail: str) -> None:
    failing = stager.buildpack("failing", files={"FAIL": fail})
    s = stager.stage(APPS / "plain-app", [("failing", failing),
                                          ("finalizer", TEST_BUILDPACKS / "finalizer")])
    assert s.returncode == 225
    assert lines(s.stderr)[-1] == (f"Failed to run all supply scripts: bin/supply of buildpack "
                                   f"'failing' {detail}")
    assert "finalizer" not in s.stdout


def test_legacy_compile_failure_is_223(stager: Stager, tmp_path: Path) -> None:
    bp = stager.buildpack("legacy")
    (bp / "bin" / "compile").write_text("#!/bin/sh\necho 'compile is broken' >&2\nexit 3\n")
    s = stager.stage(APPS / "plain-app", [("legacy", bp)])
    assert s.returncode == 223
    assert "compile is broken" in s.stderr
    assert lines(s.stderr)[-1] == ("Failed to compile droplet: bin/compile of buildpack "
                                   "'legacy' exited with status 3")


def test_non_executable_script_says_so(stager: Stager) -> None:
    bp = stager.buildpack("finalizer")
    (bp / "bin" / "finalize").chmod(0o644)
    s = stager.stage(APPS / "plain-app", [("finalizer", bp)])
    assert s.returncode == 223
    assert "bin/finalize of buildpack 'finalizer' is not executable (chmod +x" in s.stderr


def test_buildpack_without_bin_is_malformed(stager: Stager, tmp_path: Path) -> None:
    empty = tmp_path / "no-bin"
    (empty / "lib").mkdir(parents=True)
    (empty / "README").write_text("not a buildpack\n")
    s = stager.stage(APPS / "plain-app", [("no-bin", empty)])
    assert s.returncode == 225
    err = lines(s.stderr)
    assert "malformed buildpack does not contain a /bin dir: no-bin" in err
    assert err[-1] == ("Failed to run all supply scripts: "
                       "malformed buildpack does not contain a /bin dir: no-bin")
    # While detecting, a malformed buildpack is reported and skipped.
    s = stager.stage(APPS / "plain-app", [("no-bin", empty), ("legacy", TEST_BUILDPACKS / "legacy")],
                     skip_detect=False)
    assert s.returncode == 0, s.stderr
    assert "malformed buildpack does not contain a /bin dir: no-bin" in lines(s.stderr)


def test_buildpack_nested_in_a_single_folder_is_found(stager: Stager, tmp_path: Path) -> None:
    nested = tmp_path / "github-zip-style"
    shutil.copytree(TEST_BUILDPACKS / "legacy", nested / "legacy-main")
    s = stager.stage(APPS / "plain-app", [("legacy", nested)])
    assert s.returncode == 0, s.stderr
    assert (s.build_dir / "compile-args-legacy").exists()


# -- droplet and environment ------------------------------------------------------------------

def test_droplet_layout_keeps_modes_and_symlinks(stager: Stager, tmp_path: Path) -> None:
    s = stager.stage(APPS / "plain-app", [("legacy", TEST_BUILDPACKS / "legacy")])
    assert s.returncode == 0, s.stderr
    names = s.names()
    for name in ("./app", "./app/index.txt", "./app/sub/nested.txt", "./profile.d", "./tmp",
                 "./logs", "./staging_info.yml", "./deps"):
        assert name in names
    with tarfile.open(s.droplet) as tar:
        link = tar.getmember("./app/current")
        assert link.issym() and link.linkname == "index.txt"
        assert tar.getmember("./app/run.sh").mode & 0o111
    home = s.extract(tmp_path / "home")
    assert os.readlink(home / "app" / "current") == "index.txt"
    assert os.access(home / "app" / "run.sh", os.X_OK)
    assert s.staging_info() == {"detected_buildpack": "",
                                "start_command": "./legacy-web --port $PORT"}
    assert s.result == {
        "detected_buildpack": "",
        "process_types": {"web": "./legacy-web --port $PORT", "worker": "./legacy-worker"},
        "sidecars": [],
        "lifecycle_type": "buildpack",
        "lifecycle_metadata": {"buildpack_key": "legacy", "detected_buildpack": "",
                               "buildpacks": [{"key": "legacy", "name": "", "version": ""}]},
        "execution_metadata": "",
    }


def test_scripts_see_cf_stack_and_the_kit_python(stager: Stager) -> None:
    bp = stager.buildpack("legacy")
    (bp / "bin" / "compile").write_text(
        '#!/bin/sh\necho "stack=$CF_STACK python=$LOCALCF_PYTHON"\n')
    s = stager.stage(APPS / "plain-app", [("legacy", bp)],
                     env={"CF_STACK": None, "LOCALCF_PYTHON": None})
    assert s.returncode == 0, s.stderr
    assert f"stack=cflinuxfs4 python={sys.executable}" in lines(s.stdout)


def test_build_is_importable(tmp_path: Path) -> None:
    buildpacks = tmp_path / "bps"
    shutil.copytree(TEST_BUILDPACKS / "never-detects",
                    buildpacks / builder.buildpack_dir_name("never-detects"))
    build_dir = tmp_path / "build"
    shutil.copytree(APPS / "plain-app", build_dir, symlinks=True)
    config = builder.BuilderConfig(
        build_dir=build_dir, buildpacks_dir=buildpacks, buildpack_order=["never-detects"],
        build_artifacts_cache_dir=tmp_path / "cache", output_droplet=tmp_path / "d.tgz",
        output_metadata=tmp_path / "r.json", work_dir=tmp_path / "work")
    with pytest.raises(builder.StagingError) as e:
        builder.build(config)
    assert e.value.exit_code == 222
    assert str(e.value) == builder.DETECT_FAIL_MSG


def test_bad_arguments_exit_1(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "localcf.builder", "--build-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "--buildpacks-dir" in proc.stderr


# -- python_buildpack -------------------------------------------------------------------------

def test_python_buildpack_with_empty_requirements(stager: Stager) -> None:
    s = stager.stage(APPS / "python-app", [("python_buildpack", PYTHON_BP)], skip_detect=False)
    assert s.returncode == 0, s.stderr
    assert "-----> requirements.txt lists nothing: no packages to install" in lines(s.stdout)
    assert s.staging_info() == {"detected_buildpack": "python", "start_command": "python app.py"}
    assert s.result["lifecycle_metadata"]["buildpacks"] == [
        {"key": "python_buildpack", "name": "python", "version": "1.0.0"}]
    assert not (s.work_dir / "deps" / "0" / "site-packages").exists()


def test_python_buildpack_installs_nothing_when_requirements_are_met(
        stager: Stager, tmp_path: Path) -> None:
    # PIP_NO_INDEX would make any pip install of PyYAML fail: pip must not run at all.
    s = stager.stage(APPS / "python-app-installed-req", [("python_buildpack", PYTHON_BP)],
                     env={"PIP_NO_INDEX": "1"})
    assert s.returncode == 0, s.stderr
    assert ("-----> Requirements already satisfied by the Python environment: nothing to install"
            in lines(s.stdout))
    assert not (s.work_dir / "deps" / "0" / "site-packages").exists()
    home = s.extract(tmp_path / "home")
    run = subprocess.run(
        ["bash", "-c", 'cd app && for f in ../profile.d/*; do . "$f"; done; python app.py'],
        cwd=home, env={"PATH": "/usr/bin:/bin", "DEPS_DIR": str(home / "deps")},
        capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "ok: true\n"


def _tiny_wheel(path: Path) -> Path:
    """A real, minimal wheel of a package the kit's Python does not have."""
    wheel = path / "localcf_tinydep-1.0-py3-none-any.whl"
    files = {
        "localcf_tinydep/__init__.py": "VALUE = 'tinydep works'\n",
        "localcf_tinydep-1.0.dist-info/METADATA":
            "Metadata-Version: 2.1\nName: localcf-tinydep\nVersion: 1.0\n",
        "localcf_tinydep-1.0.dist-info/WHEEL":
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in files) + "localcf_tinydep-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
        zf.writestr("localcf_tinydep-1.0.dist-info/RECORD", record)
    return wheel


def test_python_buildpack_pip_installs_missing_requirements(stager: Stager, tmp_path: Path) -> None:
    app = tmp_path / "app"
    shutil.copytree(APPS / "python-app", app)
    (app / "vendor").mkdir()
    wheel = _tiny_wheel(app / "vendor")
    (app / "requirements.txt").write_text(f"./vendor/{wheel.name}\n")
    (app / "Procfile").write_text("web: python -c 'import localcf_tinydep as t; print(t.VALUE)'\n")
    s = stager.stage(app, [("python_buildpack", PYTHON_BP)], env={"PIP_NO_INDEX": "1"})
    assert s.returncode == 0, s.stderr + s.stdout
    assert "-----> Installing requirements with pip" in lines(s.stdout)
    assert (s.work_dir / "deps" / "0" / "site-packages" / "localcf_tinydep").is_dir()
    home = s.extract(tmp_path / "home")
    command = s.staging_info()["start_command"]
    run = subprocess.run(
        ["bash", "-c", f'cd app && for f in ../profile.d/*; do . "$f"; done; {command}'],
        cwd=home, env={"PATH": "/usr/bin:/bin", "DEPS_DIR": str(home / "deps")},
        capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "tinydep works\n"


def test_python_buildpack_pip_failure_fails_staging(stager: Stager, tmp_path: Path) -> None:
    app = tmp_path / "app"
    shutil.copytree(APPS / "python-app", app)
    (app / "requirements.txt").write_text("localcf-no-such-package-anywhere==0.0.1\n")
    s = stager.stage(app, [("python_buildpack", PYTHON_BP)], env={"PIP_NO_INDEX": "1"})
    assert s.returncode == 223
    assert "python_buildpack: pip could not install requirements.txt" in s.stderr
    assert lines(s.stderr)[-1].startswith("Failed to compile droplet: Failed to run all supply "
                                          "scripts: bin/supply of buildpack 'python_buildpack'")


def test_python_release_uses_app_py_without_procfile(stager: Stager, tmp_path: Path) -> None:
    app = tmp_path / "app"
    shutil.copytree(APPS / "python-app", app)
    (app / "Procfile").unlink()
    s = stager.stage(app, [("python_buildpack", PYTHON_BP)])
    assert s.returncode == 0, s.stderr
    assert s.result["process_types"] == {"web": "python app.py"}


def test_system_buildpacks_share_one_finalize() -> None:
    # The two copies must not drift: each buildpack is zipped on its own, so it cannot be shared.
    assert (PYTHON_BP / "bin" / "finalize").read_bytes() == (BINARY_BP / "bin" / "finalize").read_bytes()


def test_invalid_launch_yml_names_the_file(stager: Stager) -> None:
    final = stager.buildpack("finalizer", files={"launch.yml": "processes: {web: oops}\n"})
    s = stager.stage(APPS / "plain-app", [("finalizer", final)])
    assert s.returncode == 1
    last = lines(s.stderr)[-1]
    assert last.startswith("Failed to read launch.yml ") and "deps/0/launch.yml" in last
    assert "written by buildpack 'finalizer'" in last


# -- processes: nothing left behind -----------------------------------------------------------

def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has exited, it only waits to be reaped


def _kill(pid: int) -> None:
    import signal

    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _wait_for(path: Path, proc: subprocess.Popen | None = None) -> str:
    import time

    while not (path.exists() and path.read_text().strip()):
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"builder exited early: {proc.communicate()}")
        time.sleep(0.02)
    return path.read_text().strip()


def test_processes_a_script_leaves_behind_are_stopped(stager: Stager, tmp_path: Path) -> None:
    pid_file = tmp_path / "bg.pid"
    bp = stager.buildpack("legacy")
    (bp / "bin" / "compile").write_text(
        f"#!/bin/sh\nsleep 300 >/dev/null 2>&1 &\necho $! > {pid_file}\n")
    s = stager.stage(APPS / "plain-app", [("legacy", bp)])
    pid = int(_wait_for(pid_file))
    try:
        assert s.returncode == 0, s.stderr
        assert not _alive(pid)
    finally:
        _kill(pid)


def test_a_signal_while_a_script_is_being_started_stops_that_script(stager: Stager, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler can run after the script has started but before the builder holds it (inside
    Popen, or just after): the signal is held until then and stops that script, never orphaning it.
    The timing is forced: the signal's handler runs right after the script's process is created."""
    import signal

    started: list[subprocess.Popen[bytes]] = []
    original = builder.Builder._start_script

    def start_then_signal(self: builder.Builder, *args: object) -> subprocess.Popen[bytes]:
        proc = original(self, *args)  # type: ignore[arg-type]
        started.append(proc)
        self.cancel(signal.SIGTERM)  # what the SIGTERM handler calls
        return proc

    monkeypatch.setattr(builder.Builder, "_start_script", start_then_signal)
    bp = stager.buildpack("legacy")
    (bp / "bin" / "compile").write_text("#!/bin/sh\nexec sleep 300\n")
    build_dir = tmp_path / "build"
    shutil.copytree(APPS / "plain-app", build_dir, symlinks=True)
    bps = tmp_path / "bps"
    shutil.copytree(bp, bps / builder.buildpack_dir_name("legacy"))
    config = builder.parse_args([
        "--build-dir", str(build_dir), "--buildpacks-dir", str(bps), "--buildpack-order", "legacy", "--skip-detect",
        "--build-artifacts-cache-dir", str(tmp_path / "cache"), "--output-droplet", str(tmp_path / "d.tgz"),
        "--output-metadata", str(tmp_path / "r.json"), "--work-dir", str(tmp_path / "work")])
    with pytest.raises(builder._Cancelled):
        builder.Builder(config, env=dict(os.environ)).run()
    try:
        assert len(started) == 1, "staging went on after the signal"
        assert started[0].wait(timeout=10) == -signal.SIGKILL
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert not (tmp_path / "d.tgz").exists()


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_sigterm_stops_the_running_script(stager: Stager, tmp_path: Path) -> None:
    import signal

    pid_file = tmp_path / "script.pid"
    bp = stager.buildpack("legacy")
    (bp / "bin" / "compile").write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 300\n")
    build_dir = tmp_path / "build"
    shutil.copytree(APPS / "plain-app", build_dir, symlinks=True)
    bps = tmp_path / "bps"
    shutil.copytree(bp, bps / builder.buildpack_dir_name("legacy"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "localcf.builder", "--build-dir", str(build_dir),
         "--buildpacks-dir", str(bps), "--buildpack-order", "legacy",
         "--build-artifacts-cache-dir", str(tmp_path / "cache"),
         "--output-droplet", str(tmp_path / "d.tgz"), "--output-metadata", str(tmp_path / "r.json"),
         "--work-dir", str(tmp_path / "work")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    script_pid = 0
    try:
        script_pid = int(_wait_for(pid_file, proc))
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if script_pid and _alive(script_pid):
            _kill(script_pid)
            pytest.fail("the script outlived the builder")
    assert proc.returncode == 128 + signal.SIGTERM
    assert "Staging cancelled (SIGTERM)" in err
    assert not _alive(script_pid)
    assert not (tmp_path / "d.tgz").exists()
