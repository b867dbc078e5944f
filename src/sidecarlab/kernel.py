"""The kernel the kit runs notebooks on: its kernelspec, its transport, and what it says about itself.

Headless runs (papermill, nbclient) start the kernel through `IpcKernelManager`: the kernel and
the runner talk over Unix domain sockets in Jupyter's runtime directory (readable by this user
only) instead of TCP ports on 127.0.0.1. Nothing then listens on the network, no port can be
taken by another process between choosing and binding it, and ipykernel has no reason to warn
that the "Kernel is running over TCP without encryption".

Each kernel's sockets get a path of their own (`<tmp>/sidecarlab-kernels-XXXX/<random>-N`, in a
directory only this user can enter, removed when the process exits): jupyter_client's default for
the `ipc` transport is `kernel-ipc-N` in the current directory, which two runs started in one
directory (two notebooks executed at once from `notebooks/`) would both take.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from typing import Any

from jupyter_client.manager import AsyncKernelManager
from traitlets import default

__all__ = ["IpcKernelManager", "language_info"]


_sockets_dir: str | None = None


def _socket_prefix() -> str:
    """A path prefix for one kernel's sockets, in this process's private directory (short enough
    for a Unix socket's 108 bytes)."""
    global _sockets_dir
    if _sockets_dir is None:
        _sockets_dir = tempfile.mkdtemp(prefix="sidecarlab-kernels-")
        atexit.register(shutil.rmtree, _sockets_dir, ignore_errors=True)
    return os.path.join(_sockets_dir, uuid.uuid4().hex[:12])


class IpcKernelManager(AsyncKernelManager):
    """An nbclient/papermill kernel manager whose kernels use the `ipc` transport."""

    @default("transport")
    def _default_transport(self) -> str:
        return "ipc"

    @default("ip")
    def _default_ip(self) -> str:
        return _socket_prefix()


def language_info(kernel_name: str = "python3", timeout: float = 60) -> dict[str, Any]:
    """The `language_info` a running kernel reports (what Jupyter writes into a notebook's metadata)."""
    from jupyter_client.manager import KernelManager

    manager = KernelManager(kernel_name=kernel_name, transport="ipc", ip=_socket_prefix())
    manager.start_kernel()
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=timeout)
        reply = client.kernel_info(reply=True, timeout=timeout)
        return dict(reply["content"]["language_info"])
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
