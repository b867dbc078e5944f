"""The one-time check of unprivileged namespaces here, and the config of a container's root
filesystem (what is shown read-only inside, which host id a container maps to)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from localcf import container_init

INIT_SCRIPT = Path(container_init.__file__).resolve()


_NS_FLAGS = ["--pid", "--kill-child", "--mount", "--propagation", "private", "--uts"]


# Run by an ordinary user, the container's root is that user (the only id it may map). Run by
# root, the init builds the root filesystem as host root, then leaves for a user namespace whose
# root is this unprivileged host id: nothing in a container is ever host root.
CONTAINER_HOST_ID = 200000


SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


@dataclass(frozen=True)
class NamespaceSupport:
    """What the one-time probe found about unprivileged namespaces on this host."""

    ok: bool
    reason: str | None = None         # why namespaces cannot be used
    home: bool = False                # /home/vcap can be made inside
    home_reason: str | None = None    # why it cannot


# The probe answers a question about the host, which does not change while we run.
_probe_lock = threading.Lock()


_probe_result: NamespaceSupport | None = None


def _init_argv(cfg: dict, where: Path) -> list[str]:
    """The init's command line; its config goes to a file so `ps` inside stays readable."""
    config = where / "init.json"
    config.write_text(json.dumps(cfg))
    # -I: neither the environment nor the script's directory (src/localcf) shapes sys.path;
    # -S: no site import, the init needs the standard library only (and starts faster).
    return [sys.executable, "-I", "-S", str(INIT_SCRIPT), str(config)]


def _ns_flags() -> list[str]:
    """unshare's options: a user namespace of our own unless we are root (the init drops later)."""
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    return [*user, *_NS_FLAGS]


def _host_ids() -> tuple[int, int] | None:
    """The host uid:gid that a container's root maps to when localcf runs as root, else None."""
    return (CONTAINER_HOST_ID, CONTAINER_HOST_ID) if os.geteuid() == 0 else None


def _chown_tree(path: Path, ids: tuple[int, int] | None) -> None:
    """Hand a container's own directory to its host id (run as root only)."""
    if ids is None:
        return
    uid, gid = ids
    os.lchown(path, uid, gid)
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                os.lchown(os.path.join(top, name), uid, gid)
            except FileNotFoundError:
                pass


def _covered(path: str, by: list[str]) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in by)


def interpreter_paths() -> list[str]:
    """Directories a container sees read-only besides the stack's: the Python localcf runs with,
    which the system buildpacks give apps and the staging builder runs on."""
    found: list[str] = []
    for raw in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                os.path.dirname(os.path.realpath(sys.executable))):
        path = os.path.realpath(raw)
        if os.path.isdir(path) and path != "/" and not _covered(path, list(SYSTEM_DIRS)):
            found.append(path)
    found.sort(key=len)
    out: list[str] = []
    for path in found:
        if not _covered(path, out):
            out.append(path)
    return out


def _interpreter_binds() -> list[list[str]]:
    """[host path, path inside] of the interpreter's views: each real directory at its own path,
    and again at the path the interpreter is known by when a symlink leads there (a venv in a
    linked project folder, say), so that `sys.executable` works inside as it is written."""
    real = interpreter_paths()
    out = [[path, path] for path in real]
    aliases: list[tuple[str, str]] = []
    for raw in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                os.path.dirname(sys.executable)):
        alias = os.path.abspath(raw)
        target = os.path.realpath(alias)
        if alias != target and os.path.isdir(target) and _covered(target, real) and \
                not _covered(alias, real + list(SYSTEM_DIRS)):
            aliases.append((alias, target))
    chosen: list[str] = []
    for alias, target in sorted(set(aliases), key=lambda pair: len(pair[0])):
        if not _covered(alias, chosen):
            chosen.append(alias)
            out.append([target, alias])
    return out


def _rootfs_cfg(where: Path, root: Path) -> dict:
    """The root filesystem part of an init's config (namespaces mode)."""
    rootfs = where / "rootfs"
    rootfs.mkdir(exist_ok=True)
    ids = _host_ids()
    # The init's own program shows at garden's path, which is PID 1's command line inside.
    readonly = [*_interpreter_binds(), [str(INIT_SCRIPT), container_init.INIT_TITLE]]
    return {"rootfs": str(rootfs), "root": str(root), "system": [d for d in SYSTEM_DIRS if os.path.lexists(d)],
            "readonly": readonly, "drop": list(ids) if ids else None}


def _unshare() -> str | None:
    return shutil.which("unshare") or next(
        (p for p in ("/usr/bin/unshare", "/bin/unshare") if os.access(p, os.X_OK)), None)


def namespace_support(scratch: Path) -> NamespaceSupport:
    """Whether unprivileged namespaces work here: checked once per process, by trying them."""
    global _probe_result
    with _probe_lock:
        if _probe_result is None:
            _probe_result = _probe(Path(scratch))
        return _probe_result


def _probe(scratch: Path) -> NamespaceSupport:
    if not sys.platform.startswith("linux"):
        return NamespaceSupport(False, f"Linux namespaces do not exist on {sys.platform}")
    unshare = _unshare()
    if unshare is None:
        return NamespaceSupport(False, "the unshare command (util-linux) is not installed")
    scratch.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".probe-", dir=scratch))
    try:
        (tmp / "vcap").mkdir()
        _chown_tree(tmp / "vcap", _host_ids())
        cfg = {"kind": "probe", "ns": True, "net": True, "hostname": "localcf-probe",
               **_rootfs_cfg(tmp, tmp / "vcap")}
        try:
            done = subprocess.run([unshare, *_ns_flags(), "--net", *_init_argv(cfg, tmp)],
                                  capture_output=True, text=True, timeout=20,
                                  stdin=subprocess.DEVNULL, cwd=tmp)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return NamespaceSupport(False, f"unshare could not run: {exc}")
        try:
            found = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            err = done.stderr.strip().splitlines()
            return NamespaceSupport(False, err[-1] if err else f"unshare exited with {done.returncode}")
        if not found.get("ok"):
            return NamespaceSupport(False, found.get("error") or "the namespace setup failed")
        return NamespaceSupport(True, None, True, None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
