"""The init of a localcf container: PID 1 in namespaces mode, the supervisor in process mode.

The runtime (`localcf.runtime`) starts it as `python -I -S container_init.py CONFIG`, under
`unshare` in namespaces mode. It is on the start path of every container, so it uses the standard
library only, imports little, and knows nothing about Cloud Foundry: it sets the container up,
then starts, signals and reaps the processes the runtime asks for.

In namespaces mode it first builds the container's root filesystem (`Rootfs`: a tmpfs with the
system directories, the interpreter and a few /etc files read-only, its own passwd, the droplet at
/home/vcap, a private /tmp, /dev and /proc) and pivots into it; run by root, it then leaves host
root for an unprivileged host id (`_drop_to`). Every process it starts joins the container's
vcap namespace (uid 2000, no capabilities) before exec.

Three kinds, chosen by the config's `kind`:

- `container`: set up, say `ready` over the control socket, then serve requests (spawn, signal,
  stop, exec, connect) and report output lines and exits until the control socket closes.
- `task`: set up, run `argv` with the inherited stdout/stderr and exit with its status.
- `probe`: set up, print what worked as JSON and exit (the runtime's one-time check).

The control socket carries frames: 8 bytes (header length, body length, big endian), a JSON
header, a raw body (an output line), and file descriptors as SCM_RIGHTS on the frame's first byte.
"""

import errno
import fcntl
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

_HEAD = struct.Struct(">II")
_MAX_FDS = 4
# Longer lines are cut into pieces of this size, as loggregator splits long messages.
MAX_LINE = 60 * 1024

# mount(2), prctl(2), umount2(2) constants (Linux).
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 0x2, 0x4, 0x8
_MS_BIND, _MS_REC, _MS_PRIVATE = 0x1000, 0x4000, 1 << 18
_MNT_DETACH = 2
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "arm64": 41, "riscv64": 41, "ppc64le": 203,
                   "s390x": 217, "i686": 217, "armv7l": 218}


# --- framing (also used by the runtime) -----------------------------------------------------

def send_frame(sock: socket.socket, header: dict, body: bytes = b"", fds: "list[int] | tuple" = ()) -> None:
    """Send one frame; the caller serialises concurrent senders."""
    head = json.dumps(header, separators=(",", ":")).encode()
    data = _HEAD.pack(len(head), len(body)) + head + body
    if fds:
        sent = socket.send_fds(sock, [data], list(fds))
        if sent < len(data):
            sock.sendall(data[sent:])
    else:
        sock.sendall(data)


def recv_frame(sock: socket.socket) -> "tuple[dict, bytes, list[int]] | None":
    """Receive one frame as (header, body, fds), or None at end of stream."""
    fds: list = []
    head = _recv_exact(sock, _HEAD.size, fds)
    if head is None:
        return None
    hlen, blen = _HEAD.unpack(head)
    rest = _recv_exact(sock, hlen + blen, fds) if hlen + blen else b""
    if rest is None:
        return None
    return json.loads(rest[:hlen]), rest[hlen:], fds


def _recv_exact(sock, n, fds):
    # Never read past the frame: descriptors ride on the first byte of the frame they belong to.
    buf = bytearray()
    flags = getattr(socket, "MSG_CMSG_CLOEXEC", 0)
    while len(buf) < n:
        data, anc, _, _ = sock.recvmsg(n - len(buf), socket.CMSG_SPACE(_MAX_FDS * 4), flags)
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                count = len(cdata) // 4
                fds.extend(struct.unpack("%di" % count, cdata[:count * 4]))
        if not data:
            return None
        buf += data
    return bytes(buf)


def exit_status(wait_status: int) -> int:
    """Diego's exit status: the code of a normal exit, 128+N for a kill by signal N."""
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


# --- namespace setup ------------------------------------------------------------------------

class _Libc:
    def __init__(self):
        import ctypes  # only where needed: it costs a few ms

        self._ctypes = ctypes
        self.lib = ctypes.CDLL(None, use_errno=True)

    def _check(self, result, what):
        if result != 0:
            err = self._ctypes.get_errno()
            raise OSError(err, "%s: %s" % (what, os.strerror(err)))

    def mount(self, src, target, fstype, flags, data=None):
        enc = lambda v: v.encode() if isinstance(v, str) else v  # noqa: E731
        what = "mount %s on %s" % (fstype or "--bind %s" % src, target)
        self._check(self.lib.mount(enc(src), enc(target), enc(fstype), flags, enc(data)), what)

    def umount(self, target):
        self._check(self.lib.umount2(target.encode(), _MNT_DETACH), "umount %s" % target)

    def sethostname(self, name):
        raw = name.encode()[:64]
        self._check(self.lib.sethostname(raw, len(raw)), "sethostname %s" % name)

    def prctl(self, option, arg):
        self._check(self.lib.prctl(option, arg, 0, 0, 0), "prctl %d" % option)

    def unshare(self, flags):
        self._check(self.lib.unshare(flags), "unshare")

    def pivot_root(self, new, old):
        number = _SYS_PIVOT_ROOT.get(os.uname().machine)
        if number is None:
            raise OSError(errno.ENOSYS, "pivot_root: unknown system call number on %s" % os.uname().machine)
        self._check(self.lib.syscall(number, new.encode(), old.encode()), "pivot_root")


def _loopback_up():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        res = fcntl.ioctl(s, _SIOCGIFFLAGS, struct.pack("16sh22x", b"lo", 0))
        flags = struct.unpack("16sh22x", res)[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags | _IFF_UP))


# What a container's /etc holds besides its own passwd, group, hosts and hostname: read-only
# views of the host's files that programs need to run (libraries, certificates, name service,
# time zone), and nothing that says who uses the host.
ETC_ENTRIES = (
    "alternatives", "bash.bashrc", "ca-certificates", "ca-certificates.conf", "crypto-policies",
    "debian_version", "gai.conf", "host.conf", "inputrc", "ld.so.cache", "ld.so.conf", "ld.so.conf.d",
    "localtime", "magic", "mime.types", "nsswitch.conf", "os-release", "pki", "profile", "protocols",
    "resolv.conf", "services", "ssl", "terminfo", "timezone",
)
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
VCAP_UID = 2000
# Where garden puts its init in every container, and PID 1's command line on a Diego cell
# (guardian's bundle rules bind the init binary there and run it as the container's process).
INIT_TITLE = "/tmp/garden-init"

_CLONE_NEWUSER = 0x10000000
_MS_RDONLY, _MS_REMOUNT, _MS_NOATIME, _MS_NODIRATIME, _MS_RELATIME = 0x1, 0x20, 0x400, 0x800, 1 << 21
_ST_TO_MS = ((0x1, _MS_RDONLY), (0x2, _MS_NOSUID), (0x4, _MS_NODEV), (0x8, _MS_NOEXEC),
             (0x400, _MS_NOATIME), (0x800, _MS_NODIRATIME), (0x1000, _MS_RELATIME))
_PR_SET_DUMPABLE, _PR_SET_NO_NEW_PRIVS = 4, 38


def _passwd(cfg):
    return ("root:x:0:0:root:/root:/usr/sbin/nologin\n"
            "vcap:x:%d:%d::/home/vcap:/bin/bash\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n" % (VCAP_UID, VCAP_UID))


def _group(cfg):
    return "root:x:0:\nvcap:x:%d:\nnogroup:x:65534:\n" % VCAP_UID


def _write(path, text, mode=0o644):
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, mode)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _mount_flags(path):
    """The flags of the mount `path` is on, as mount(2) flags (a remount must keep locked ones)."""
    flags = os.statvfs(path).f_flag
    return sum(ms for st, ms in _ST_TO_MS if flags & st)


def _mkpoint(path, is_dir):
    """Make `path` (and its parents) in the new root, as a mount point for a directory or a file."""
    if is_dir:
        os.makedirs(path, 0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
        if not os.path.lexists(path):
            _write(path, "")


class Rootfs:
    """Builds a container's root filesystem on a tmpfs and pivots into it.

    The stack's system directories, the interpreter and the host /etc files of ETC_ENTRIES are
    read-only views of the host's; /home/vcap is the container's own directory, /tmp a private
    tmpfs; nothing else of the host is there.
    """

    def __init__(self, libc, cfg):
        self.libc, self.cfg = libc, cfg
        self.new = cfg["rootfs"]  # an empty host directory, the mount point of the new root

    def inside(self, path):
        return self.new + "/" + path.lstrip("/")

    def bind(self, src, dst, readonly, recursive=True):
        is_dir = os.path.isdir(src)
        target = self.inside(dst)
        _mkpoint(target, is_dir)
        self.libc.mount(src, target, None, _MS_BIND | (_MS_REC if recursive else 0))
        if readonly:
            flags = _mount_flags(target) | _MS_RDONLY
            self.libc.mount(None, target, None, _MS_BIND | _MS_REMOUNT | flags)

    def build(self):
        libc, cfg = self.libc, self.cfg
        libc.mount("tmpfs", self.new, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=755")
        for path in cfg.get("system") or ():
            if os.path.islink(path):
                os.symlink(os.readlink(path), self.inside(path))
            elif os.path.isdir(path):
                self.bind(path, path, readonly=True)
        os.makedirs(self.inside("/etc"), 0o755)
        for name in ETC_ENTRIES:
            src = "/etc/" + name
            if not os.path.exists(src):
                continue
            if os.path.islink(src) and os.path.isdir(src):
                src = os.path.realpath(src)
            self.bind(src, "/etc/" + name, readonly=True)
        _write(self.inside("/etc/passwd"), _passwd(cfg))
        _write(self.inside("/etc/group"), _group(cfg))
        hostname = cfg.get("hostname") or "localhost"
        _write(self.inside("/etc/hostname"), hostname + "\n")
        _write(self.inside("/etc/hosts"), "127.0.0.1 localhost %s\n::1 localhost ip6-localhost\n" % hostname)
        # /tmp first: the views below may lie under it (an interpreter, a linked buildpack).
        tmp = self.inside("/tmp")
        os.makedirs(tmp, 0o755, exist_ok=True)
        libc.mount("tmpfs", tmp, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=1777")
        for src, dst in cfg.get("readonly") or ():
            self.bind(src, dst, readonly=True)
        self.bind(cfg["root"], "/home/vcap", readonly=False)
        for host, inside, readonly in cfg.get("binds") or ():
            self.bind(host, inside, readonly=bool(readonly))
        self.dev()
        proc = self.inside("/proc")
        os.makedirs(proc, 0o755, exist_ok=True)
        libc.mount("proc", proc, "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
        # Everything but /home/vcap, /tmp and /dev/shm is read-only, as a stack is.
        libc.mount(None, self.new, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)
        self.pivot()

    def dev(self):
        libc = self.libc
        dev = self.inside("/dev")
        os.makedirs(dev, 0o755, exist_ok=True)
        libc.mount("tmpfs", dev, "tmpfs", _MS_NOSUID | _MS_NOEXEC, "mode=755")
        for name in DEV_NODES:
            if os.path.exists("/dev/" + name):
                _write(dev + "/" + name, "")
                libc.mount("/dev/" + name, dev + "/" + name, None, _MS_BIND)
        for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
            os.symlink(target, dev + "/" + name)
        os.mkdir(dev + "/pts", 0o755)
        try:
            # Terminals of its own: exec sessions (cf ssh) get theirs here.
            libc.mount("devpts", dev + "/pts", "devpts", _MS_NOSUID | _MS_NOEXEC,
                       "newinstance,ptmxmode=0666,mode=620")
            os.symlink("pts/ptmx", dev + "/ptmx")
        except OSError:
            # A kernel that refuses a new devpts here: exec sessions get a terminal opened by
            # the runtime outside (programs inside cannot open new ones).
            global _own_pts
            _own_pts = False
        os.mkdir(dev + "/shm", 0o755)
        libc.mount("tmpfs", dev + "/shm", "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=1777")

    def pivot(self):
        os.chdir(self.new)
        # pivot_root(".", "."): the old root ends up on top of the new one, then goes.
        self.libc.pivot_root(".", ".")
        self.libc.umount(".")
        os.chdir("/")


def _drop_to(libc, uid, gid):
    """Leave host root for a user namespace whose root is host `uid`:`gid` (unprivileged).

    Called by the init when localcf runs as root, once the root filesystem is built. A child,
    still host root, writes our id maps; then we become that namespace's root.
    """
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    parent = os.getpid()
    child = os.fork()
    if child == 0:
        code = 1
        try:
            os.close(ready_w)
            os.close(done_r)
            if os.read(ready_r, 1) == b"u":
                for name, text in (("uid_map", "0 %d 1\n" % uid), ("gid_map", "0 %d 1\n" % gid)):
                    _write("/proc/%d/%s" % (parent, name), text)
                code = 0
        except BaseException:
            code = 1
        finally:
            os.write(done_w, b"ok" if code == 0 else b"no")
            os._exit(code)
    os.close(ready_r)
    os.close(done_w)
    try:
        libc.unshare(_CLONE_NEWUSER)
    except OSError:
        os.write(ready_w, b"x")
        os.waitpid(child, 0)
        raise
    os.write(ready_w, b"u")
    answer = os.read(done_r, 2)
    os.waitpid(child, 0)
    os.close(ready_w)
    os.close(done_r)
    if answer != b"ok":
        raise OSError(errno.EPERM, "cannot map the container's root to host id %d" % uid)
    os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    # A change of credentials clears the parent-death signal: arm it again (unshare --kill-child).
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def setup(cfg):
    """Set the container up; returns the droplet's path as the processes see it.

    In namespaces mode: a root filesystem of its own, the hostname, loopback up, then (when
    localcf runs as host root) the drop to the container's unprivileged host id.
    """
    root = cfg.get("root")
    if not cfg.get("ns"):
        return root
    libc = _Libc()
    libc.mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    if cfg.get("hostname"):
        libc.sethostname(cfg["hostname"])
    if cfg.get("net"):
        _loopback_up()
    Rootfs(libc, cfg).build()
    drop = cfg.get("drop")
    if drop:
        _drop_to(libc, int(drop[0]), int(drop[1]))
    # Processes inside (same host id) may neither trace the init nor read its descriptors.
    libc.prctl(_PR_SET_DUMPABLE, 0)
    global _vcap_ns
    _vcap_ns = _vcap_namespace(libc)
    _set_title(libc, INIT_TITLE)
    return "/home/vcap"


def _set_title(libc, title):
    """Make our command line read `title` (what `ps` shows for PID 1), as setproctitle does.

    The kernel shows the memory of our original argv; we write `title` over it. With the last
    byte of that area no longer NUL, the kernel reads the title up to its own NUL, so nothing of
    the old command line (the host's paths of the interpreter, this script and its config) is
    left. Where /proc/self/stat gives no addresses, the command line stays as it was.
    """
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        # arg_start and arg_end are fields 48 and 49 of proc(5); fields[0] is field 3.
        start, end = int(fields[45]), int(fields[46])
    except (OSError, IndexError, ValueError):
        return
    raw = title.encode()[: max(0, end - start - 2)] + b"\0"
    if start <= 0 or end - start < len(raw) + 1:
        return
    ctypes = libc._ctypes
    ctypes.memset(start + len(raw), 0, end - start - len(raw))
    ctypes.memset(end - 1, 0x20, 1)  # not NUL: the title ends at its own NUL
    ctypes.memmove(start, raw, len(raw))


def _vcap_namespace(libc):
    """Make the one user namespace every process of the container runs in, where vcap (uid
    2000) is the container's root; returns a descriptor to join it with (`_become_vcap`).

    One namespace for all, as one user on a cell: `ps`, `kill` and reading /proc/PID/fd of one
    another work between them, as they do between processes of the same user anywhere.
    """
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    child = os.fork()
    if child == 0:
        ok = b"no"
        try:
            os.close(ready_r)
            os.close(done_w)
            # The init is not dumpable, so this fork's /proc/self would belong to host root.
            libc.prctl(_PR_SET_DUMPABLE, 1)
            libc.unshare(_CLONE_NEWUSER)
            _write("/proc/self/uid_map", "%d 0 1\n" % VCAP_UID)
            _write("/proc/self/setgroups", "deny")
            _write("/proc/self/gid_map", "%d 0 1\n" % VCAP_UID)
            ok = b"ok"
        except BaseException:
            pass
        try:
            os.write(ready_w, ok)
            os.read(done_r, 1)  # stay until the init holds the namespace
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    try:
        if os.read(ready_r, 2) != b"ok":
            raise OSError(errno.EPERM, "cannot make the user namespace of vcap (uid %d)" % VCAP_UID)
        return os.open("/proc/%d/ns/user" % child, os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(done_w)
        os.close(ready_r)
        os.waitpid(child, 0)


_vcap_ns = None  # the descriptor of the container's vcap namespace, once setup() made it
_own_pts = True  # whether the container has terminals of its own (a devpts instance)


def _become_vcap(libc):
    """In a forked child: join the container's vcap namespace, where it is uid 2000; after exec
    it holds no capability at all."""
    if _vcap_ns is None:
        raise OSError(errno.EINVAL, "the container has no vcap namespace")
    if libc.lib.setns(_vcap_ns, _CLONE_NEWUSER) != 0:
        err = libc._ctypes.get_errno()
        raise OSError(err, "setns: %s" % os.strerror(err))
    libc.prctl(_PR_SET_NO_NEW_PRIVS, 1)


def _child_setup(session=False, tty=False, pdeathsig=False, libc=None, vcap=False):
    import termios  # resolved here, in the parent: imports after fork can deadlock

    tiocsctty = termios.TIOCSCTTY

    def setup_child():
        if session:
            os.setsid()
        else:
            os.setpgid(0, 0)
        if tty:
            fcntl.ioctl(0, tiocsctty, 0)
        if pdeathsig and libc is not None:
            libc.lib.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if vcap:
            _become_vcap(libc)

    return setup_child


# --- the container supervisor ---------------------------------------------------------------

class _Proc:
    def __init__(self, name, popen, kind):
        self.name, self.popen, self.pid, self.kind = name, popen, popen.pid, kind
        self.pipes = []


class Init:
    """The supervisor loop of a `container` init."""

    def __init__(self, cfg, ctrl):
        self.cfg, self.ctrl = cfg, ctrl
        self.ns = bool(cfg.get("ns"))
        self.libc = _Libc() if sys.platform.startswith("linux") else None
        self.sel = selectors.DefaultSelector()
        self.by_pid = {}       # pid -> _Proc (app processes and exec'd ones)
        self.by_name = {}      # process name -> _Proc while it runs
        self.pipes = {}        # fd -> [proc name, "OUT"|"ERR", pending bytes]
        self.groups = set()    # process groups we made (process mode: what stop signals)
        self.stop_waiters = [] # stop requests to answer once nothing runs
        self.kill_at = None    # when a stop turns to SIGKILL
        self.halted = False    # a stop came: start nothing more
        self.quit = False
        self.home = cfg.get("root")

    # Outbound -----------------------------------------------------------------------------
    def send(self, header, body=b"", fds=()):
        try:
            send_frame(self.ctrl, header, body, fds)
        except OSError:
            self.quit = True  # the runtime is gone

    def reply(self, req, **fields):
        fields["re"] = req.get("id")
        self.send(fields)

    def fail(self, req, exc):
        if isinstance(exc, OSError) and exc.errno:
            self.reply(req, error=exc.strerror or str(exc), errno=exc.errno, filename=exc.filename)
        else:
            self.reply(req, error=str(exc), errno=0)

    # Setup and loop ---------------------------------------------------------------------------
    def run(self):
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        if self.libc is not None and not self.ns:
            # Orphans of our processes come back to us instead of escaping to the host's init.
            try:
                self.libc.prctl(_PR_SET_CHILD_SUBREAPER, 1)
            except OSError:
                pass
        relay = None
        if self.cfg.get("relay_fd") is not None:
            # The runtime made the listening socket, in a host directory no container sees.
            relay = socket.socket(fileno=int(self.cfg["relay_fd"]))
            os.set_inheritable(relay.fileno(), False)
            relay.setblocking(False)
            self.sel.register(relay, selectors.EVENT_READ, "relay")
        try:
            self.home = setup(self.cfg)
        except OSError as exc:
            self.send({"ev": "failed", "error": str(exc)})
            return 1
        self.sel.register(self.ctrl, selectors.EVENT_READ, "ctrl")
        self.sel.register(wake_r, selectors.EVENT_READ, "wake")
        self.send({"ev": "ready", "home": self.home, "pid": os.getpid(), "pts": _own_pts})
        while not self.quit:
            timeout = None
            if self.kill_at is not None:
                timeout = max(0.0, self.kill_at - time.monotonic())
            for key, _ in self.sel.select(timeout):
                what = key.data
                if what == "ctrl":
                    self._on_request()
                elif what == "wake":
                    self._drain_wakeups(wake_r)
                elif what == "relay":
                    self._accept_relay(relay)
                else:
                    self._on_pipe(key.fd)
                if self.quit:
                    break
            if self.kill_at is not None and time.monotonic() >= self.kill_at:
                self._signal_all(signal.SIGKILL)
                self.kill_at = None
            self._check_stopped()
        self._kill_everything()
        return 0

    def _on_signal(self, signum, frame):
        if signum != signal.SIGCHLD:
            self.quit = True

    def _drain_wakeups(self, fd):
        try:
            while os.read(fd, 512):
                pass
        except BlockingIOError:
            pass
        self._reap()

    # Requests ------------------------------------------------------------------------------
    def _on_request(self):
        try:
            frame = recv_frame(self.ctrl)
        except (OSError, ValueError):
            frame = None
        if frame is None:
            self.quit = True  # the runtime closed the socket or died: the container goes too
            return
        req, _body, fds = frame
        op = req.get("op")
        try:
            handler = getattr(self, "_op_" + str(op), None)
            if handler is None:
                raise ValueError("unknown request %r" % op)
            handler(req, fds)
        except Exception as exc:  # every request gets an answer, whatever went wrong
            for fd in fds:
                _close(fd)
            self.fail(req, exc)

    def _popen(self, argv, env, cwd, stdin, stdout, stderr, session=False, tty=False):
        return subprocess.Popen(
            argv, stdin=stdin, stdout=stdout, stderr=stderr, env=env, cwd=cwd, close_fds=True,
            preexec_fn=_child_setup(session, tty, pdeathsig=not self.ns, libc=self.libc, vcap=self.ns),
        )

    def _op_spawn(self, req, fds):
        name = req["name"]
        if self.halted:
            # A codependent process ended while the others were still being started.
            self.reply(req, error="the container is stopping: %r not started" % name, errno=0, halted=True)
            return
        if name in self.by_name:
            raise ValueError("a process named %r is already running" % name)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            popen = self._popen(req["argv"], req.get("env") or {}, req.get("cwd"),
                                subprocess.DEVNULL, out_w, err_w)
        except BaseException:
            for fd in (out_r, err_r):
                _close(fd)
            raise
        finally:
            _close(out_w)
            _close(err_w)
        proc = _Proc(name, popen, "proc")
        for fd, stream in ((out_r, "OUT"), (err_r, "ERR")):
            os.set_blocking(fd, False)
            self.pipes[fd] = [name, stream, b""]
            proc.pipes.append(fd)
            self.sel.register(fd, selectors.EVENT_READ, "pipe")
        self.by_pid[proc.pid] = proc
        self.by_name[name] = proc
        self.groups.add(proc.pid)
        self.reply(req, pid=proc.pid)

    def _op_exec(self, req, fds):
        tty = bool(req.get("tty"))
        master = None
        try:
            if tty and fds:
                stdin = stdout = stderr = fds[0]  # a terminal the runtime opened outside
            elif tty:
                # The terminal is the container's own (its /dev/pts), so `tty` inside names it;
                # its master side goes back to the runtime with the reply.
                master, slave = os.openpty()
                fds = list(fds) + [slave]
                stdin = stdout = stderr = slave
            else:
                stdin, stdout, stderr = fds[0], fds[1], fds[2]
            popen = self._popen(req["argv"], req.get("env") or {}, req.get("cwd") or self.home,
                                stdin, stdout, stderr, session=True, tty=tty)
        except BaseException:
            if master is not None:
                _close(master)
            raise
        finally:
            for fd in fds:
                _close(fd)
        proc = _Proc(req.get("xid"), popen, "exec")
        self.by_pid[proc.pid] = proc
        self.groups.add(proc.pid)
        if master is None:
            self.reply(req, pid=proc.pid)
            return
        try:
            self.send({"re": req.get("id"), "pid": proc.pid}, fds=[master])
        finally:
            _close(master)

    def _op_signal(self, req, fds):
        proc = self.by_name.get(req["name"])
        if proc is None:
            raise ProcessLookupError(errno.ESRCH, "no running process named %r" % req["name"])
        os.kill(proc.pid, int(req["sig"]))
        self.reply(req, ok=True)

    def _op_xsignal(self, req, fds):
        for proc in self.by_pid.values():
            if proc.kind == "exec" and proc.name == req["xid"]:
                if req.get("group"):
                    _kill(-proc.pid, int(req["sig"]))  # an exec leads its own session and group
                else:
                    os.kill(proc.pid, int(req["sig"]))
                break
        self.reply(req, ok=True)

    def _op_stop(self, req, fds):
        self.halted = True
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + float(req.get("graceful", 10.0))
        self.kill_at = deadline if self.kill_at is None else min(self.kill_at, deadline)
        self.stop_waiters.append(req)
        self._check_stopped()

    def _op_connect(self, req, fds):
        s = socket.create_connection(("127.0.0.1", int(req["port"])), timeout=float(req.get("timeout", 2.0)))
        s.settimeout(None)  # the descriptor's flags travel with it: hand over a blocking socket
        try:
            self.reply_fd(req, s.fileno())
        finally:
            s.close()

    def reply_fd(self, req, fd):
        self.send({"re": req.get("id"), "ok": True}, fds=[fd])

    # Processes -----------------------------------------------------------------------------
    def _signal_all(self, sig):
        if self.ns:
            # As PID 1 of the namespace, -1 reaches every process but us, orphans included.
            _kill(-1, sig)
            return
        # Each process leads its own group; its children stay in it even after it exits.
        for pgid in self.groups | set(self.by_pid):
            _kill(-pgid, sig)

    def _check_stopped(self):
        if self.stop_waiters and not self.by_pid:
            waiters, self.stop_waiters = self.stop_waiters, []
            self.kill_at = None
            for req in waiters:
                self.reply(req, ok=True)

    def _reap(self):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            proc = self.by_pid.pop(pid, None)
            if proc is None:
                continue  # an orphan we inherited
            proc.popen.returncode = status  # so subprocess never waits for it again
            code = exit_status(status)
            if proc.kind == "exec":
                self.send({"ev": "xexit", "xid": proc.name, "status": code})
                continue
            if self.by_name.get(proc.name) is proc:
                del self.by_name[proc.name]
            # Its last words come before its exit, as on Diego.
            for fd in list(proc.pipes):
                self._on_pipe(fd, final=True)
            self.send({"ev": "exit", "name": proc.name, "status": code})

    def _on_pipe(self, fd, final=False):
        entry = self.pipes.get(fd)
        if entry is None:
            return
        name, stream, pending = entry
        eof = False
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                eof = True
                break
            pending += data
            if not final:
                break
        lines = pending.split(b"\n")
        pending = lines.pop()
        for line in lines:
            self._send_line(name, stream, line)
        while len(pending) > MAX_LINE:
            self._send_line(name, stream, pending[:MAX_LINE])
            pending = pending[MAX_LINE:]
        if pending and (eof or final):
            self._send_line(name, stream, pending)
            pending = b""
        entry[2] = pending
        if eof:
            self.sel.unregister(fd)
            del self.pipes[fd]
            _close(fd)

    def _send_line(self, name, stream, line):
        if line.endswith(b"\r"):
            line = line[:-1]
        while len(line) > MAX_LINE:
            self.send({"ev": "out", "name": name, "stream": stream}, line[:MAX_LINE])
            line = line[MAX_LINE:]
        self.send({"ev": "out", "name": name, "stream": stream}, line)

    def _kill_everything(self):
        self._signal_all(signal.SIGKILL)
        if self.libc is not None and not self.ns:
            # Orphans that left their process group came back to us as subreaper.
            for _ in range(50):
                kids = _children()
                if not kids:
                    break
                for pid in kids:
                    _kill(pid, signal.SIGKILL)
                try:
                    os.waitpid(-1, 0)
                except ChildProcessError:
                    break

    # The routed port's relay (Diego's envoy in front of 8080) -------------------------------
    def _accept_relay(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            client.setblocking(True)
            port = int(self.cfg.get("relay_port") or 8080)
            threading.Thread(target=_relay, args=(client, port), daemon=True).start()


def _relay(client, port):
    try:
        upstream = socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError:
        client.close()  # the router sees the endpoint fail, as with a refused connection
        return
    upstream.settimeout(None)
    upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        splice(client, upstream)
    finally:
        upstream.close()
        client.close()


def splice(a, b, read_a=None, linger=None):
    """Copy bytes both ways between connected sockets `a` and `b` until both directions end
    (each end passes on as a half-close); the caller closes them. `read_a(n)` reads from `a`
    instead of `a.recv`, for a buffered reader that already holds a's first bytes. Waits at
    most `linger` seconds for the a-to-b direction once b-to-a ended (None: until it ends).

    The one splicer of localcf: the routed port's relay here, `cf ssh -L` in localcf.ssh.
    """
    other = threading.Thread(target=_pump, args=(a, b, read_a), daemon=True)
    other.start()
    _pump(b, a)
    other.join(linger)


def _pump(src, dst, read=None):
    try:
        if read is not None:
            while True:
                data = read(65536)
                if not data:
                    break
                dst.sendall(data)
        else:
            buf = bytearray(65536)
            view = memoryview(buf)
            while True:
                n = src.recv_into(buf)
                if not n:
                    break
                dst.sendall(view[:n])
    except OSError:
        pass
    for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
        try:
            s.shutdown(how)
        except OSError:
            pass


def _children():
    try:
        with open("/proc/self/task/%d/children" % os.getpid()) as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _kill(pid, sig):
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _close(fd):
    try:
        os.close(fd)
    except OSError:
        pass


# --- tasks and probes -----------------------------------------------------------------------

def run_task(cfg):
    """Run one staging task to its end; our exit status is the task's."""
    libc = _Libc() if sys.platform.startswith("linux") else None
    if libc is not None and not cfg.get("ns"):
        try:
            libc.prctl(_PR_SET_CHILD_SUBREAPER, 1)
        except OSError:
            pass
    try:
        setup(cfg)
    except OSError as exc:
        sys.stderr.write("localcf: cannot set the staging container up: %s\n" % exc)
        return 1
    try:
        popen = subprocess.Popen(
            cfg["argv"], stdin=subprocess.DEVNULL, close_fds=True,
            cwd=cfg.get("cwd") or ("/home/vcap" if cfg.get("ns") else None),
            preexec_fn=_child_setup(pdeathsig=not cfg.get("ns"), libc=libc, vcap=bool(cfg.get("ns"))),
        )
    except OSError as exc:
        sys.stderr.write("localcf: cannot run %s: %s\n" % (cfg["argv"][0], exc))
        return 127 if isinstance(exc, FileNotFoundError) else 126

    def stop(signum, frame):
        _kill(-popen.pid, signal.SIGKILL)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    status = None
    while status is None:
        try:
            pid, wstatus = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid == popen.pid:
            popen.returncode = wstatus
            status = exit_status(wstatus)
    _kill(-popen.pid, signal.SIGKILL)  # whatever the task left behind
    if libc is not None and not cfg.get("ns"):
        for pid in _children():
            _kill(pid, signal.SIGKILL)
    return 1 if status is None else status


def probe(cfg):
    """Try the whole setup and a process as vcap; print what happened, exit 0 when all worked."""
    try:
        setup(cfg)
        popen = subprocess.Popen(["/bin/sh", "-c", "id -u"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, close_fds=True,
                                 preexec_fn=_child_setup(libc=_Libc(), vcap=True))
        out, err = popen.communicate(timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        print(json.dumps({"ok": False, "error": str(exc)}))
        return 1
    if out.strip() != str(VCAP_UID).encode():
        why = err.decode(errors="replace").strip() or "a process did not run as vcap (uid %d)" % VCAP_UID
        print(json.dumps({"ok": False, "error": why}))
        return 1
    print(json.dumps({"ok": True}))
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.stderr.write("usage: container_init.py CONFIG_FILE|CONFIG_JSON (started by localcf's runtime)\n")
        return 2
    if argv[0].startswith("{"):
        cfg = json.loads(argv[0])
    else:
        with open(argv[0]) as f:
            cfg = json.load(f)
    kind = cfg.get("kind")
    if kind == "task":
        return run_task(cfg)
    if kind == "probe":
        return probe(cfg)
    ctrl = socket.socket(fileno=int(cfg["ctrl"]))
    os.set_inheritable(ctrl.fileno(), False)
    return Init(cfg, ctrl).run()


if __name__ == "__main__":
    sys.exit(main())
