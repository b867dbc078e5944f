"""The claims of Parts 2 and 3: the sidecar supply buildpack ran at staging, its sidecar runs and
logs, the droplet holds what it installed, and a failed download says which URL and status."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ..supply_buildpack import SUPPLY_MARKER, find_in_droplet
from ..targets import LogLine, Target
from .core import check, fail
from .core import poll as _poll
from .core import short as _short

__all__ = [
    "download_error_line",
    "download_failed",
    "droplet_holds",
    "latest_build",
    "sidecar_logged",
    "staging_failed",
    "staging_log",
    "supply_ran",
]

# Texts of the buildpack lifecycle (CF-BEHAVIOUR.md section 1) that say the buildpacks are in the
# wrong order: a supply-only buildpack listed last, or a final-only one listed before it.
_LAST_NOT_MULTI = ("Warning: the last buildpack is not compatible with multi-buildpack apps and cannot "
                   "make use of any dependencies supplied by the buildpacks specified before it")
_NOT_SUPPLY = ("Error: one of the buildpacks chosen to supply dependencies does not support "
               "multi-buildpack apps")
_CONTAINER_CREATED = "creating container for instance"
STAGING_LOG_DEADLINE = 10.0


def download_error_line(url: str, status: int | str) -> str:
    """The line the Part 3 buildpack prints when a download fails: `Could not download URL: HTTP CODE`."""
    return f"Could not download {url}: HTTP {status}"


def latest_build(target: Target, app: str) -> dict[str, Any] | None:
    """The app's newest build (`/v3/apps/GUID/builds`), with its `state` and `error`, or None."""
    builds = target.curl_all(f"/v3/apps/{target.app_guid(app)}/builds?order_by=created_at&per_page=5000")
    # Sorting is stable: builds created in the same second keep the API's (creation) order.
    return sorted(builds, key=lambda b: str(b.get("created_at", "")))[-1] if builds else None


def staging_log(target: Target, app: str) -> list[LogLine]:
    """The `[STG]` lines of the app's latest staging in `cf logs --recent` (from its container's start)."""
    lines = [line for line in target.recent_logs(app) if line.source == "STG"]
    starts = [i for i, line in enumerate(lines) if _CONTAINER_CREATED in line.message]
    return lines[starts[-1]:] if starts else lines


def _staging_log_with(target: Target, app: str, needles: Sequence[str], deadline: float) -> list[LogLine]:
    """The latest staging's lines, waiting briefly until each needle appears (logs may lag the API)."""
    seen: list[LogLine] = []

    def probe() -> bool:
        seen[:] = staging_log(target, app)
        return all(any(n in line.message for line in seen) for n in needles)

    _poll(deadline, probe)
    return seen


def _staging_hint(app: str, lines: Sequence[LogLine]) -> str:
    text = "\n".join(line.message for line in lines)
    if _LAST_NOT_MULTI in text or _NOT_SUPPLY in text or (
            "Failed to compile droplet" in text and "bin/compile" in text):
        return ("The buildpacks are in the wrong order. Only the LAST buildpack in `buildpacks:` is the final "
                "one: it runs finalize (or compile) and decides how the app starts. Every buildpack before it "
                "must be a supply buildpack (bin/supply). List the sidecar buildpack first and "
                "python_buildpack last, then push again.")
    if "Could not download" in text:
        return ("bin/supply could not download the sidecar: the [STG] line above names the URL and the HTTP "
                "status. Check the URL in the buildpack's .downloadurl (upload the binary again if it is "
                "missing) and that anyone may read it.")
    return (f"Read the [STG] lines of `cf logs {app} --recent`: the buildpack that failed printed why just "
            "before `Exit status`.")


def _tail_messages(lines: Sequence[LogLine], count: int = 6) -> str:
    if not lines:
        return "no [STG] lines at all"
    return " | ".join(line.message.strip() for line in lines[-count:])


@check("the latest staging of {app} ran the sidecar buildpack's bin/supply (its lines are in [STG/0])")
def supply_ran(target: Target, app: str, marker: str = SUPPLY_MARKER,
               deadline: float = STAGING_LOG_DEADLINE) -> tuple[str, Any]:
    """The newest build is STAGED and its staging log holds the sidecar buildpack's own lines."""
    build = latest_build(target, app)
    if build is None:
        fail(f"a build of {app}", "no build at all", "Push the app first (the push cell above).")
    lines = _staging_log_with(target, app, [marker], deadline if build.get("state") == "STAGED" else 0.0)
    ours = [line for line in lines if marker in line.message]
    if build.get("state") != "STAGED":
        fail(f"a successful staging whose [STG] lines include {marker!r}",
             f"the latest build is {build.get('state')} ({build.get('error')}); its log ends: "
             f"{_short(_tail_messages(lines), 600)}",
             _staging_hint(app, lines))
    if not ours:
        fail(f"[STG] lines containing {marker!r} (printed by bin/supply)",
             f"none among the {len(lines)} [STG] lines of the latest staging; it ends: "
             f"{_short(_tail_messages(lines), 600)}",
             "The sidecar buildpack did not run, or printed other lines. Is it listed under `buildpacks:` in "
             "the manifest, first, before python_buildpack? Does its bin/supply echo lines starting with "
             f"{marker!r}?")
    return (f"the latest staging of {app} succeeded and ran the sidecar buildpack's bin/supply "
            f"({len(ours)} line(s), e.g. {ours[0].message.strip()!r})"), ours


@check("staging of {app} failed with {error!r}, and the staging log says why")
def staging_failed(target: Target, app: str, error: str, log_contains: Sequence[str] = (),
                   deadline: float = STAGING_LOG_DEADLINE) -> tuple[str, Any]:
    """The newest build FAILED with a Cloud Controller error starting with `error`, and its staging
    log has lines containing each of `log_contains` (e.g. the URL and HTTP status of a download)."""
    build = latest_build(target, app)
    if build is None:
        fail(f"a failed build of {app}", "no build at all", "Run the push cell above first.")
    if build.get("state") != "FAILED":
        fail(f"the latest build FAILED with {error!r}", f"the latest build is {build.get('state')}",
             "Run the push cell with the broken setting just above first: that push must fail (the "
             "`--no-check` in `%cf --no-check push` lets the notebook go on).")
    seen_error = str(build.get("error") or "")
    if not seen_error.startswith(error):
        fail(f"the error {error!r}", f"the error {seen_error!r}",
             "Staging failed, but for another reason than this step expects: read the [STG] lines of "
             f"`cf logs {app} --recent`.")
    lines = _staging_log_with(target, app, list(log_contains), deadline)
    missing = [n for n in log_contains if not any(n in line.message for line in lines)]
    if missing:
        fail(f"[STG] lines containing {missing}",
             f"the latest staging's log ends: {_short(_tail_messages(lines, 10), 900)}",
             "A failing buildpack should say what failed, with the URL and the HTTP status for a download. "
             "Does bin/supply print `Could not download <url>: HTTP <code>` when curl fails?")
    said = [next(line.message.strip() for line in lines if n in line.message) for n in log_contains]
    why = f"; the log says {' / '.join(repr(s) for s in dict.fromkeys(said))}" if said else ""
    return f"staging of {app} failed with {seen_error!r}{why}", build


@check("the logs of {app} have lines from its sidecar {sidecar}")
def sidecar_logged(target: Target, app: str, sidecar: str, text: str | None = None, process_type: str = "web",
                   index: int = 0, deadline: float = 30.0) -> tuple[str, Any]:
    """`cf logs --recent` has lines tagged `[APP/PROC/<TYPE>/SIDECAR/<NAME>/<index>]` (containing `text`)."""
    source = f"APP/PROC/{process_type.upper()}/SIDECAR/{sidecar.upper()}"
    seen: list[LogLine] = []

    def probe() -> list[LogLine]:
        seen[:] = target.recent_logs(app)
        return [line for line in seen if line.source == source and line.instance == str(index)
                and (text is None or text in line.message)]

    found = _poll(deadline, probe)
    if not found:
        tags = sorted({line.tag for line in seen})
        of_sidecar = [line.message for line in seen if line.source == source]
        what = f"lines tagged [{source}/{index}]" + (f" containing {text!r}" if text else "")
        fail(what,
             f"its lines: {_short(' | '.join(of_sidecar[-5:]), 500)}" if of_sidecar else
             f"no [{source}/{index}] lines; tags present: {', '.join(tags) or 'none'}",
             f"A sidecar's output is tagged with its name in capitals. If it has no lines, it did not start: "
             f"is `{sidecar}` under `sidecars:` in the manifest, and did the buildpack install the file its "
             f"command runs? See `cf logs {app} --recent`.")
    return (f"{len(found)} line(s) tagged [{source}/{index}] in the logs of {app}, e.g. "
            f"{found[-1].message!r}"), found


@check("the droplet of {app} holds {path}")
def droplet_holds(target: Target, app: str, path: str, sha256: str | None = None) -> tuple[str, Any]:
    """The app's current droplet (`cf download-droplet`) has the file `path`, executable, with `sha256`."""
    print(f"$ cf download-droplet {app} --path .   # then: tar -tzvf droplet_*.tgz | grep {path.strip('/')}",
          flush=True)
    found, siblings = find_in_droplet(target, app, path)
    folder = path.strip("/").rsplit("/", 1)[0] if "/" in path.strip("/") else "."
    if found is None:
        fail(f"a file {path} in the droplet",
             f"no such file; files under {folder}/: {_short(', '.join(siblings), 500) or 'none'}",
             "What bin/supply writes into BUILD_DIR (its first argument) ends up under app/ in the droplet, "
             "and $DEPS_DIR/$DEPS_IDX under deps/IDX/; anything written elsewhere is dropped. Check where "
             "the buildpack writes the file, then push again.")
    if "x" not in found.mode:
        fail(f"{path} executable", f"mode {found.mode}",
             "The sidecar's command runs the file, so bin/supply must `chmod +x` it.")
    if sha256 is not None and found.sha256 != sha256:
        fail(f"{path} with SHA-256 {sha256}", f"{path} with SHA-256 {found.sha256} ({found.size} bytes)",
             "The droplet holds another binary than the one uploaded: the buildpack downloaded another object "
             "(check .downloadurl: an older version?), or the binary was uploaded again after staging. "
             f"Restage (`cf restage {app}`) to download it again.")
    how = f"SHA-256 {found.sha256[:16]}..., the uploaded binary's" if sha256 else f"mode {found.mode}"
    return f"the droplet of {app} holds {found.path} ({found.size} bytes, {how})", found


@check("staging of {app} failed because the sidecar download failed, and says which URL and which HTTP status")
def download_failed(target: Target, app: str, url: str, status: int | str | None = None,
                    error: str = "StagingError", deadline: float = STAGING_LOG_DEADLINE) -> tuple[str, Any]:
    """The newest build FAILED (`error`, a failed supply buildpack), and its staging log has
    `Could not download <url>: HTTP <status>` (any 3-digit status when `status` is None)."""
    prefix = download_error_line(url, "")
    build = latest_build(target, app)
    if build is None or build.get("state") != "FAILED":
        state = "no build at all" if build is None else f"the latest build is {build.get('state')}"
        fail(f"the latest build FAILED with {error!r}", state,
             "Run the push cell with the broken .downloadurl just above first: that push must fail (the "
             "`--no-check` in `%cf --no-check push` lets the notebook go on).")
    seen_error = str(build.get("error") or "")
    lines = _staging_log_with(target, app, [prefix], deadline)
    said = [line.message.strip() for line in lines if prefix in line.message]
    if not seen_error.startswith(error):
        fail(f"the error {error!r}", f"the error {seen_error!r}", _staging_hint(app, lines))
    if not said:
        fail(f"an [STG] line {prefix}<code>",
             f"the latest staging's log ends: {_short(_tail_messages(lines, 10), 900)}",
             "bin/supply should print which URL failed and the HTTP status curl got: "
             "`echo \"Could not download $url: HTTP $code\"` with code from `curl -w '%{http_code}'`.")
    codes = [re.match(r"(\d{3})", line.split(prefix, 1)[1]) for line in said]
    found = [m.group(1) for m in codes if m]
    if not found or (status is not None and str(status).zfill(3) not in found):
        fail(download_error_line(url, status if status is not None else "<3-digit status>"), said[-1],
             "The message must carry the HTTP status curl got (`-w '%{http_code}'`): 404 means the object "
             "is missing, 403 that it is not public, 000 that nothing answered.")
    return f"staging of {app} failed with {seen_error!r}; the log says {said[-1]!r}", said
