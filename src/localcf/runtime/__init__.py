"""Containers: one per app instance or staging task, in `namespaces` or `process` mode.

`namespaces` (Linux, unprivileged): user, pid, net, mount and uts namespaces made by `unshare`,
with our init (`localcf.container_init`) as PID 1. Each container has a root filesystem of its
own (the stack's system directories and the interpreter read-only, the droplet at /home/vcap, a
private /tmp, its own /etc/passwd) and runs its processes as vcap (uid 2000) without
capabilities; nothing maps to host root (run as root, containers map to `CONTAINER_HOST_ID`).
`ps aux` inside lists the container's processes only, and ports inside are unreachable from the
host except through the init: the routed port's relay (a unix socket, like Diego's envoy) and
`Container.connect` (a socket opened inside and handed over, like `cf ssh -L`).

`process` (macOS, hosts that forbid namespaces, or `LOCALCF_RUNTIME=process`): the same init runs
as a plain supervisor; processes share the host's network and filesystem, the droplet stays in
the container's host directory, and the routed port is a free host port (`allocate_port`).

Before `create`, the caller asks the runtime where the container will be: `home_root(id)` for
HOME, TMPDIR, DEPS_DIR..., and `allocate_port()` for PORT and `ContainerSpec.routed_port`.

If the daemon dies, even by SIGKILL, its containers die with it: `unshare` (or the process-mode
init) gets PR_SET_PDEATHSIG, `unshare --kill-child` passes it on to the init, the init kills
everything when its control socket closes, and a PID namespace dies with its PID 1.
`Runtime.reclaim()` removes the folders such a death leaves.

The parts: `base` (errors, specs, constants), `probe` (the namespaces check and the root
filesystem's config), `core` (`Runtime`), `container` (`Container`), `exec_process`
(`ExecProcess`, cf ssh), `tasks` (staging tasks), `procfs` (the host's process table).
"""

from __future__ import annotations

from .base import (
                   HOME_INSIDE,
                   MODES,
                   ROUTED_PORT,
                   ContainerError,
                   ContainerSpec,
                   ExitCallback,
                   IsolationUnavailable,
                   OutputCallback,
                   ProcessDef,
                   TaskOutputCallback,
                   free_port,
)
from .container import Container
from .core import Runtime
from .exec_process import ExecProcess
from .probe import CONTAINER_HOST_ID, INIT_SCRIPT, SYSTEM_DIRS, NamespaceSupport, interpreter_paths, namespace_support

__all__ = [
    "CONTAINER_HOST_ID", "HOME_INSIDE", "INIT_SCRIPT", "MODES", "ROUTED_PORT", "SYSTEM_DIRS", "Container",
    "ContainerError", "ContainerSpec", "ExecProcess", "ExitCallback", "IsolationUnavailable", "NamespaceSupport",
    "OutputCallback", "ProcessDef", "Runtime", "TaskOutputCallback", "free_port", "interpreter_paths",
    "namespace_support",
]
