"""The daemon's parts, built and wired in one place.

The controller holds the rules; the cell runs instances (and staging tasks) for it; the stager runs
builds for it; both need the controller, and the controller needs both. `assemble` builds them in
order and wires them once (`Controller.wire`), so nothing is set on a part after the fact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .cell import Cell
from .controller import Controller, RoutesChanged
from .logstream import LogStream
from .paths import StateDir
from .runtime import Runtime
from .security_groups import staging_task_runner
from .stager import Stager
from .store import Store


@dataclass(frozen=True)
class Parts:
    """The parts of one daemon, wired."""

    state: StateDir
    store: Store
    logs: LogStream
    controller: Controller
    cell: Cell
    stager: Stager


def assemble(state: StateDir, *, runtime: Runtime | None = None,
             routes_changed: Sequence[RoutesChanged] = ()) -> Parts:
    """Open the store of `state` and build the controller, the cell and the stager around it.

    `runtime`: the container runtime (default: the best one this machine allows); staging egress
    follows the staging security groups, decided afresh for every staging task; `routes_changed`: more hooks told when routes change (the cell's
    own route table is always told).
    """
    store = Store(state.db)
    logs = LogStream(store)
    controller = Controller(state, store, logs)
    cell = Cell(controller, runtime)
    stager = Stager(controller, staging_task_runner(store, cell.task_runner, cell.runtime_mode))
    controller.wire(cell=cell, stager=stager, routes_changed=[cell.routes_changed, *routes_changed])
    return Parts(state=state, store=store, logs=logs, controller=controller, cell=cell, stager=stager)
