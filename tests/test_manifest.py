"""localcf.manifest: parsing, ((vars)), validation with file:line:field, round trips."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from localcf import manifest as mf
from localcf.manifest import AppManifest, ManifestError, ProcessSpec, RouteSpec, SidecarSpec

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "manifests"
TOO_LARGE = 'The memory allocation defined is too large to run with the dependent "web" process'


def write(tmp_path: Path, text: str, name: str = "manifest.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(text: str, **kwargs) -> ManifestError:
    with pytest.raises(ManifestError) as caught:
        mf.loads(text, "manifest.yml", ".", **kwargs)
    return caught.value


# --- sizes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value, mb", [
    ("256M", 256), ("256m", 256), ("1G", 1024), ("1g", 1024), ("2GB", 2048), ("512MB", 512),
    ("512mb", 512), ("1024", 1024), (1024, 1024), (" 64 M ", 64), ("1T", 1024 * 1024),
])
def test_parse_memory_accepts_cf_forms(value, mb):
    assert mf.parse_memory(value, "memory") == mb


@pytest.mark.parametrize("value", ["lots", "1.5G", "256K", "-1G", "0", 0, True, None, "G"])
def test_parse_memory_rejects_with_the_accepted_forms(value):
    with pytest.raises(ManifestError) as caught:
        mf.parse_memory(value, "-m/--memory")
    text = str(caught.value)
    assert text.startswith("-m/--memory: ")
    assert "256M, 1G, 512MB or 1024" in text


# --- the tutorial's manifest -----------------------------------------------------------------


def test_sidecar_app_fixture_parses_every_field():
    manifest = mf.load(FIXTURES / "sidecar-app.yml")
    assert manifest.source == str(FIXTURES / "sidecar-app.yml")
    [app] = manifest.apps
    assert app.name == "app-using-config-server"
    assert app.path == FIXTURES  # `path: .` is the manifest's own folder, made absolute
    assert app.memory == 256 and app.disk_quota == 512 and app.instances == 1
    assert app.buildpacks == ["python_buildpack"]
    assert app.env == {"CONFIG_SERVER_PORT": "8082"}
    assert app.sidecars == [SidecarSpec(name="config-server", command="./config-server",
                                        process_types=["web"], memory=32)]
    assert manifest.warnings == []


def test_full_fixture_reads_processes_routes_and_health_checks():
    manifest = mf.load(FIXTURES / "full.yml")
    [app] = manifest.apps
    assert app.buildpacks == ["sidecar_buildpack", "python_buildpack"]
    assert app.stack == "cflinuxfs4" and app.command == "python app.py"
    assert (app.memory, app.disk_quota, app.instances) == (1024, 2048, 2)
    assert (app.health_check_type, app.health_check_http_endpoint, app.timeout) == ("http", "/health", 60)
    assert app.random_route is False and app.no_route is False and app.default_route is None
    assert [r.route for r in app.routes] == ["full.localcf.dev", "full.localcf.dev/api"]
    assert app.routes[1].protocol == "http1"
    assert (app.routes[1].host, app.routes[1].path, app.routes[1].port) == ("full.localcf.dev", "/api", None)
    [worker] = app.processes
    assert worker == ProcessSpec(type="worker", command="python worker.py", memory=512, instances=0,
                                 health_check_type="process", health_check_invocation_timeout=5)
    assert [s.name for s in app.sidecars_for("worker")] == ["config-server"]
    assert [s.name for s in app.sidecars_for("web")] == ["config-server", "logger"]
    assert app.sidecars[1].memory is None


def test_env_values_are_stringified_as_cf_does():
    app = mf.load(FIXTURES / "full.yml").apps[0]
    assert app.env == {"FLAG": "true", "OFF": "false", "RATIO": "1.50", "COUNT": "007", "NAME": "plain text"}


def test_where_gives_the_line_of_any_field():
    manifest = mf.load(FIXTURES / "sidecar-app.yml")
    source = str(FIXTURES / "sidecar-app.yml")
    assert manifest.where(0, "sidecars", 0, "memory") == f"{source}:17"
    assert manifest.where(0, "sidecars", 0) == f"{source}:14"
    assert manifest.where(0, "buildpacks", 0) == f"{source}:10"
    assert manifest.where(0) == f"{source}:4"
    # a field the manifest lacks is cited at its nearest ancestor
    assert manifest.where(0, "sidecars", 0, "no-such-field") == f"{source}:14"


def test_where_accepts_dashed_or_underscored_names(tmp_path):
    manifest = mf.load(write(tmp_path, "applications:\n- name: a\n  health-check-type: port\n  disk_quota: 1G\n"))
    assert manifest.line_of(0, "health_check_type") == 3
    assert manifest.line_of(0, "health-check-type") == 3
    assert manifest.line_of(0, "disk-quota") == 4


def test_error_helper_cites_file_line_and_field_for_checks_made_elsewhere():
    manifest = mf.load(FIXTURES / "full.yml")
    err = manifest.error(0, "buildpacks", 0, message='Buildpack "sidecar_buildpack" must be an existing admin buildpack or a valid git URI',
                         hint="create it with localcf create-buildpack")
    assert (err.file, err.line, err.field) == (str(FIXTURES / "full.yml"), 7, "applications[0].buildpacks[0]")
    assert str(err) == (f"{FIXTURES / 'full.yml'}:7: applications[0].buildpacks[0]: Buildpack \"sidecar_buildpack\" "
                        "must be an existing admin buildpack or a valid git URI; create it with localcf create-buildpack")


def test_unknown_keys_are_ignored_with_a_warning_that_guesses():
    manifest = mf.loads("ignored: 1\napplications:\n- name: a\n  sidcars: []\n  services: [db]\n", "m.yml", ".")
    assert manifest.apps[0].sidecars == []
    assert manifest.warnings == [
        "m.yml:4: applications[0].sidcars: unknown app key 'sidcars' is ignored, as cf ignores it; did you mean 'sidecars'?",
        "m.yml:5: applications[0].services: localcf does not support 'services' and ignores it",
    ]


def test_app_name_lookup():
    manifest = mf.loads("applications:\n- name: a\n- name: b\n", "m.yml", ".")
    assert manifest.app("b").name == "b"
    with pytest.raises(KeyError, match="no app named 'c'; the manifest has: a, b"):
        manifest.app("c")


# --- ((vars)) ----------------------------------------------------------------------------------


def test_vars_from_a_vars_file_keep_their_types():
    manifest = mf.load(FIXTURES / "vars.yml", vars_files=[FIXTURES / "vars-file.yml"])
    [app] = manifest.apps
    assert app.name == "from-file"
    assert app.memory == 512 and app.instances == 2
    assert app.env == {"CONFIG_SERVER_PORT": "8082", "GREETING": "hello world"}
    assert app.routes == [RouteSpec(route="from-file.localcf.dev")]
    # lines of substituted values are those of the ((var)) they replaced
    assert manifest.line_of(0, "routes", 0, "route") == 10


def test_var_flags_win_over_vars_files_and_are_typed_like_yaml(tmp_path):
    later = write(tmp_path, "who: later file\n", "later.yml")
    manifest = mf.load(FIXTURES / "vars.yml", vars=mf.parse_var_flags(["app_name=flagged", "instances=3"]),
                       vars_files=[FIXTURES / "vars-file.yml", later])
    [app] = manifest.apps
    assert app.name == "flagged"
    assert app.instances == 3  # `--var instances=3` is text; as a plain YAML value it reads as a number
    assert app.env["GREETING"] == "hello later file"


def test_quoted_var_stays_a_string_and_dotted_names_look_inside_maps():
    manifest = mf.loads('applications:\n- name: "((n))"\n  env: {A: ((db.port))}\n', "m.yml", ".",
                        vars={"n": "123", "db": {"port": 5432}})
    assert manifest.apps[0].name == "123"
    assert manifest.apps[0].env == {"A": "5432"}


def test_unresolved_vars_are_an_error_naming_them_all():
    err = error_of("applications:\n- name: a\n  memory: ((mem))\n  env:\n    X: ((x))-((mem))\n")
    assert str(err) == ("manifest.yml:3: applications[0].memory: Expected to find variables: mem, x; "
                        "give each with --var NAME=VALUE or in a --vars-file")


def test_bad_var_flag_says_how_to_write_it():
    with pytest.raises(ManifestError, match=r"--var: 'port' is not NAME=VALUE; write it as --var NAME=VALUE"):
        mf.parse_var_flags(["port"])
    assert mf.parse_var_flags(["a=b=c", "e="]) == {"a": "b=c", "e": ""}


def test_bad_vars_file_cites_its_own_line(tmp_path):
    bad = write(tmp_path, "a: 1\nb: [\n", "vars.yml")
    with pytest.raises(ManifestError) as caught:
        mf.load(FIXTURES / "vars.yml", vars_files=[bad])
    assert caught.value.file == str(bad) and caught.value.line == 3
    assert "invalid YAML" in str(caught.value)


# --- validation errors: file, line, field, what to do -----------------------------------------


def test_sidecar_without_command_names_file_line_and_field():
    with pytest.raises(ManifestError) as caught:
        mf.load(FIXTURES / "sidecar-no-command.yml")
    err = caught.value
    assert (err.line, err.field) == (5, "applications[0].sidecars[0]")
    assert str(err) == (f"{FIXTURES / 'sidecar-no-command.yml'}:5: applications[0].sidecars[0]: 'command' is required; "
                        "add the command that starts the sidecar, e.g. command: ./config-server")


def test_sidecar_memory_must_be_below_the_process_memory_with_cf_text():
    with pytest.raises(ManifestError) as caught:
        mf.load(FIXTURES / "sidecar-too-big.yml")
    err = caught.value
    assert err.message == TOO_LARGE
    assert (err.line, err.field) == (9, "applications[0].sidecars[0].memory")
    assert str(err).startswith(f"{FIXTURES / 'sidecar-too-big.yml'}:9: applications[0].sidecars[0].memory: {TOO_LARGE}; ")


def test_sidecars_together_must_leave_memory_for_the_process():
    text = ("applications:\n- name: a\n  memory: 256M\n  sidecars:\n"
            "  - {name: one, process_types: [web], command: x, memory: 128M}\n"
            "  - {name: two, process_types: [web], command: y, memory: 128M}\n")
    err = error_of(text)
    assert err.message == TOO_LARGE and err.field == "applications[0].sidecars[1].memory" and err.line == 6


def test_sidecar_memory_is_checked_against_each_process_type_it_joins():
    text = ("applications:\n- name: a\n  memory: 1G\n  processes:\n  - {type: worker, memory: 64M}\n"
            "  sidecars:\n  - {name: s, process_types: [web, worker], command: x, memory: 64M}\n")
    err = error_of(text)
    assert err.message == 'The memory allocation defined is too large to run with the dependent "worker" process'
    # a processes: web entry's memory wins over the app-level one
    text2 = ("applications:\n- name: a\n  memory: 1G\n  processes:\n  - {type: web, memory: 64M}\n"
             "  sidecars:\n  - {name: s, process_types: [web], command: x, memory: 100M}\n")
    assert error_of(text2).message == TOO_LARGE
    # unknown process memory: nothing to check in the manifest
    ok = mf.loads("applications:\n- name: a\n  sidecars:\n  - {name: s, process_types: [web], command: x, memory: 4G}\n", "m", ".")
    assert ok.apps[0].sidecars[0].memory == 4096


def test_bad_yaml_gives_line_and_column():
    with pytest.raises(ManifestError) as caught:
        mf.load(FIXTURES / "bad-yaml.yml")
    err = caught.value
    assert (err.line, err.column) == (6, 4)
    assert str(err).startswith(f"{FIXTURES / 'bad-yaml.yml'}:6:4: invalid YAML: ")


def test_tabs_get_a_specific_hint():
    assert "indent with spaces" in str(error_of("applications:\n\t- name: a\n"))


@pytest.mark.parametrize("text, expected", [
    ("", "manifest.yml:1: the manifest is empty; "),
    ("apps: []\n", "manifest.yml:1: 'applications' is missing; "),
    ("applications: {name: a}\n", "manifest.yml:1: applications: 'applications' must be a list with at least one app; "),
    ("applications:\n- memory: 1G\n", "manifest.yml:2: applications[0]: 'name' is required; "),
    ("applications:\n- name: a\n  memory: lots\n", "manifest.yml:3: applications[0].memory: 'lots' is not a size localcf understands; write it as 256M, 1G, 512MB or 1024"),
    ("applications:\n- name: a\n  disk_quota: 1.5G\n", "manifest.yml:3: applications[0].disk_quota: '1.5G' is not a size"),
    ("applications:\n- name: a\n  instances: -1\n", "manifest.yml:3: applications[0].instances: -1 is not a whole number of 0 or more"),
    ("applications:\n- name: a\n  buildpack: x\n  buildpacks: [y]\n", "manifest.yml:3: applications[0].buildpack: Buildpack and Buildpacks fields cannot be used together.; "),
    ("applications:\n- name: a\n  health-check-type: tcp\n", 'manifest.yml:3: applications[0].health-check-type: Health check type must be "port", "process", or "http"; '),
    ("applications:\n- name: a\n  health-check-type: port\n  health-check-http-endpoint: /h\n", 'manifest.yml:4: applications[0].health-check-http-endpoint: Health check type must be "http" to set a health check HTTP endpoint; '),
    ("applications:\n- name: a\n  no-route: yes please\n", "manifest.yml:3: applications[0].no-route: No-route must be a boolean; "),
    ("applications:\n- name: a\n  routes: [a.b.c]\n", "manifest.yml:3: applications[0].routes: Routes must be a list of route objects; "),
    ("applications:\n- name: a\n  routes:\n  - route: http://a.localcf.dev\n", "manifest.yml:4: applications[0].routes[0].route: The route 'http://a.localcf.dev' is not a properly formed URL; "),
    ("applications:\n- name: a\n  env:\n    VCAP_SERVICES: x\n", "manifest.yml:4: applications[0].env.VCAP_SERVICES: Env cannot start with VCAP_; "),
    ("applications:\n- name: a\n  env:\n    PORT: 1\n", "manifest.yml:4: applications[0].env.PORT: Env cannot set PORT; "),
    ("applications:\n- name: a\n  env: [A]\n", "manifest.yml:3: applications[0].env: Env must be an object of keys and values; "),
    ("applications:\n- name: a\n  env:\n    A: {b: 1}\n", "manifest.yml:4: applications[0].env.A: an env value must be text, a number or a boolean, not a map; "),
    ("applications:\n- name: a\n  processes:\n  - command: x\n", "manifest.yml:4: applications[0].processes[0]: 'type' is required; "),
    ("applications:\n- name: a\n  processes:\n  - type: web\n  - type: web\n", 'manifest.yml:5: applications[0].processes[1].type: Process "web" may only be present once; '),
    ("applications:\n- name: a\n  sidecars: {name: s}\n", "manifest.yml:3: applications[0].sidecars: Sidecars must be an array of sidecar configurations; "),
    ("applications:\n- name: a\n  sidecars:\n  - name: s\n    command: x\n", "manifest.yml:4: applications[0].sidecars[0]: 'process_types' is required; "),
    ("applications:\n- name: a\n  sidecars:\n  - name: s\n    command: x\n    process_types: []\n", "manifest.yml:6: applications[0].sidecars[0].process_types: 'process_types' must be a list of at least one process type; "),
    ("applications:\n- name: a\n  sidecars:\n  - {process_types: [web], command: x}\n", "manifest.yml:4: applications[0].sidecars[0]: 'name' is required; "),
    ("applications:\n- name: a\n  sidecars:\n  - {name: s, process_types: [web], command: x}\n  - {name: s, process_types: [web], command: y}\n", "manifest.yml:5: applications[0].sidecars[1].name: sidecar 's' is already sidecars[0]; "),
    ("applications:\n- name: a\n  sidecars:\n  - {name: s, process_types: [web], command: x, memory: big}\n", "manifest.yml:4: applications[0].sidecars[0].memory: 'big' is not a size"),
    ("applications:\n- name: a\n- name: a\n", "manifest.yml:3: applications[1].name: app 'a' is already applications[0]; "),
    ("applications:\n- name: a\n  memory: 1G\n  memory: 2G\n", "manifest.yml:4: applications[0].memory: 'memory' is given twice (first on line 3); "),
    ("applications:\n- name: 42\n", 'manifest.yml:2: applications[0].name: \'name\' must be text, not 42; put it in quotes: name: "42"'),
    ("applications:\n- name: a\n  path: no-such-dir\n", "manifest.yml:3: applications[0].path: 'no-such-dir' does not exist"),
])
def test_each_error_names_line_field_and_what_to_do(text, expected):
    err = error_of(text)
    assert str(err).startswith(expected), str(err)
    assert err.file == "manifest.yml" and isinstance(err.line, int)
    assert "; " in err.one_line()  # every error says what to do


def test_all_problems_are_reported_at_once_in_line_order():
    err = error_of("applications:\n- name: a\n  memory: huge\n  instances: many\n  sidecars:\n  - name: s\n")
    assert [p.line for p in err.problems] == [3, 4, 6, 6]
    assert len(str(err).splitlines()) == 4


def test_missing_manifest_and_folder_are_explained(tmp_path):
    with pytest.raises(ManifestError, match="no such manifest; give the path of a manifest file with -f"):
        mf.load(tmp_path / "manifest.yml")
    with pytest.raises(ManifestError, match="is a folder, not a manifest"):
        mf.load(tmp_path)


# --- deprecated and special forms -------------------------------------------------------------


def test_deprecated_buildpack_and_autodetect(tmp_path):
    manifest = mf.load(write(tmp_path, "applications:\n- name: a\n  buildpack: binary_buildpack\n- name: b\n  buildpack: default\n- name: c\n  buildpacks: []\n"))
    assert [a.buildpacks for a in manifest.apps] == [["binary_buildpack"], [], []]
    assert manifest.warnings[0].startswith(f"{tmp_path / 'manifest.yml'}:3: applications[0].buildpack: 'buildpack' is deprecated")


def test_health_check_none_is_process_and_path_resolves_against_manifest_dir(tmp_path):
    (tmp_path / "src").mkdir()
    manifest = mf.load(write(tmp_path, "applications:\n- name: a\n  path: src\n  health-check-type: none\n"))
    assert manifest.apps[0].health_check_type == "process"
    assert manifest.apps[0].path == (tmp_path / "src").resolve()


def test_yaml_anchors_and_merge_keys_work(tmp_path):
    text = ("defaults: &defaults\n  memory: 256M\n  env: {A: b}\n"
            "applications:\n- name: one\n  <<: *defaults\n- name: two\n  <<: *defaults\n  memory: 512M\n")
    manifest = mf.loads(text, "m.yml", ".")
    assert [(a.memory, a.env) for a in manifest.apps] == [(256, {"A": "b"}), (512, {"A": "b"})]


def test_only_the_first_yaml_document_counts():
    manifest = mf.loads("applications:\n- name: first\n---\napplications:\n- name: second\n", "m.yml", ".")
    assert [a.name for a in manifest.apps] == ["first"]


# --- overrides, process specs and the JSON sent to the daemon ---------------------------------


def test_process_specs_fold_app_settings_into_web():
    app = mf.load(FIXTURES / "full.yml").apps[0]
    web, worker = app.process_specs()
    assert web == ProcessSpec(type="web", command="python app.py", memory=1024, disk_quota=2048, instances=2,
                              health_check_type="http", health_check_http_endpoint="/health", timeout=60)
    assert worker.type == "worker" and worker.memory == 512
    assert app.process_memory("web") == 1024 and app.process_memory("nope") is None


def test_with_overrides_applies_cf_push_flags_without_touching_the_original():
    app = mf.load(FIXTURES / "sidecar-app.yml").apps[0]
    changed = app.with_overrides(memory="1G", instances=3, buildpacks=["binary_buildpack"], no_route=True,
                                 health_check_type="none", command=None)
    assert (changed.memory, changed.instances, changed.buildpacks, changed.no_route) == (1024, 3, ["binary_buildpack"], True)
    assert changed.health_check_type == "process"
    assert app.memory == 256 and app.instances == 1  # the original is untouched
    assert changed.sidecars == app.sidecars


def test_with_overrides_also_sets_a_processes_web_entry():
    app = mf.loads("applications:\n- name: a\n  processes:\n  - {type: web, memory: 64M}\n", "m", ".").apps[0]
    assert app.with_overrides(memory="2G").process_memory("web") == 2048


def test_with_overrides_checks_values_and_sidecar_memory():
    app = mf.load(FIXTURES / "sidecar-app.yml").apps[0]
    with pytest.raises(ManifestError, match=r"^-m/--memory: 'huge' is not a size"):
        app.with_overrides(memory="huge")
    with pytest.raises(ManifestError) as caught:
        app.with_overrides(memory="32M")
    assert caught.value.message == TOO_LARGE and caught.value.field == "-m/--memory"
    with pytest.raises(ManifestError, match=r"-u/--health-check-type: Health check type must be"):
        app.with_overrides(health_check_type="tcp")
    with pytest.raises(TypeError, match="unknown cf push flag"):
        app.with_overrides(colour="blue")


def test_wire_shape_is_json_complete_and_round_trips():
    for name in ("full.yml", "sidecar-app.yml"):
        app = mf.load(FIXTURES / name).apps[0]
        data = mf.to_wire(app)
        assert list(data) == [
            "name", "path", "buildpacks", "stack", "command", "memory", "disk_quota", "instances",
            "health_check_type", "health_check_http_endpoint", "timeout", "health_check_invocation_timeout",
            "env", "processes", "sidecars", "routes", "random_route", "no_route", "default_route",
        ]
        again = mf.from_wire(json.loads(json.dumps(data)))
        assert again == app
        assert mf.to_wire(again) == data
    assert data["sidecars"] == [{"name": "config-server", "command": "./config-server",
                                 "process_types": ["web"], "memory": 32}]
    assert data["path"] == str(FIXTURES)


def test_from_wire_tolerates_missing_keys():
    app = mf.from_wire({"name": "bare"})
    assert app == AppManifest(name="bare")
    assert mf.to_wire(app)["routes"] is None and mf.to_wire(app)["env"] == {}


def test_route_spec_parts():
    route = RouteSpec(route="*.apps.localcf.dev:1024/x/y")
    assert (route.host, route.port, route.path) == ("*.apps.localcf.dev", 1024, "/x/y")


BAD_HOST = ('Failed to create default route from app name: Host must be either "*" or contain only '
            'alphanumeric characters, "_", or "-"')


def test_default_route_host_rules() -> None:
    assert mf.default_route_host("Sidecar_App-2") == "sidecar_app-2"
    for bad in ("", "a.b", "a/b", "é", "a b", "a\u0663"):  # \u0663: an Arabic-Indic digit, not ASCII
        with pytest.raises(mf.ManifestError) as e:
            mf.default_route_host(bad)
        assert e.value.message == BAD_HOST
    assert mf.default_route_host("a" * 63) == "a" * 63
    with pytest.raises(mf.ManifestError, match="cannot exceed 63"):
        mf.default_route_host("a" * 64)


def test_wire_shape_is_the_typed_dict_and_round_trips() -> None:
    m = mf.loads(textwrap.dedent("""\
        applications:
        - name: w
          memory: 256M
          env: {A: 1}
          processes: [{type: worker, instances: 2}]
          sidecars: [{name: s, command: ./s, process_types: [web], memory: 16M}]
          routes: [{route: w.apps.localhost}]
        """), check_paths=False)
    wire = mf.to_wire(m.apps[0])
    assert list(wire) == list(mf.AppWire.__annotations__)
    assert json.loads(json.dumps(mf.manifest_to_wire(m.apps))) == {"applications": [wire]}
    assert mf.from_wire(json.loads(json.dumps(wire))) == m.apps[0]
    assert mf.manifest_from_wire({"applications": [wire]}) == m.apps
    assert mf.to_wire(m.apps[0]) == wire and mf.from_wire(wire) == m.apps[0]
