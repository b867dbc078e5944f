"""The kernel the kit runs notebooks on: its kernelspec, its transport, and what it says about itself.

Headless runs (papermill, nbclient) start the kernel through `IpcKernelManager`: the kernel and
the runner talk over Unix domain sockets in Jupyter's runtime directory (readable by this user
only) instead of TCP ports on 127.0.0.1. Nothing then listens on the network, no port can be
taken by another process between choosing and binding it, and ipykernel has no reason to warn
that the "Kernel is running over TCP without encryption".
"""

from __future__ import annotations

from typing import Any

from jupyter_client.manager import AsyncKernelManager
from traitlets import default

__all__ = ["IpcKernelManager", "language_info"]


class IpcKernelManager(AsyncKernelManager):
    """An nbclient/papermill kernel manager whose kernels use the `ipc` transport."""

    @default("transport")
    def _default_transport(self) -> str:
        return "ipc"


def language_info(kernel_name: str = "python3", timeout: float = 60) -> dict[str, Any]:
    """The `language_info` a running kernel reports (what Jupyter writes into a notebook's metadata)."""
    from jupyter_client.manager import KernelManager

    manager = KernelManager(kernel_name=kernel_name, transport="ipc")
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
