"""What the node says about itself: Describe's NodeInfo and WatchStatus's NodeStatus.

Both messages are built here from plain inputs: the facts fixed at start (`NodeFacts`), a
reading of memory and power (`Probe`), the engine's models and the busy meter's seconds. The
builders are pure apart from the clock, so the servicer only gathers the inputs (off the event
loop where they block) and what the controller is told can be read and tested on its own.
`on_disk` is the one part that reads the disk; Describe runs it in a thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from node_agent import models
from node_agent.hardware import Memory
from node_agent.proto import pb
from node_agent.types import (
    AGENT_CAPABILITIES,
    CostProfile,
    DiskModel,
    Hardware,
    ModelInfo,
    ModelStatus,
)
from node_agent.wire import cost_pb, disk_model_pb, model_info_pb, model_status_pb


@dataclass(frozen=True, kw_only=True)
class NodeFacts:
    """What Describe reports that does not change while the agent runs."""

    node_id: str
    name: str
    agent_version: str
    protocol_version: str
    engines: tuple[str, ...]
    hardware: Hardware
    cost: CostProfile


@dataclass(frozen=True)
class Probe:
    """A reading of the machine's memory and power."""

    memory: Memory
    power_watts: float | None


class BusyMeter:
    """Node-wide seconds during which at least one generation was running."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._running = 0
        self._since = 0.0
        self._total = 0.0

    def enter(self) -> None:
        """A generation started."""
        if self._running == 0:
            self._since = self._clock()
        self._running += 1

    def leave(self) -> None:
        """A generation ended, however it ended."""
        self._running -= 1
        if self._running == 0:
            self._total += self._clock() - self._since

    def seconds(self) -> float:
        """Busy seconds so far, counting the current stretch."""
        ongoing = self._clock() - self._since if self._running else 0.0
        return self._total + ongoing


def on_disk(data_dir: Path, loaded: list[ModelInfo]) -> list[DiskModel]:
    """The models on this node's disk, loaded local directories included."""
    paths = {m.source: Path(m.source) for m in loaded if m.source.startswith(("/", "~", "."))}
    return models.models_on_disk(
        data_dir, {s: p.expanduser() for s, p in paths.items() if p.expanduser().is_dir()}
    )


def node_info(
    facts: NodeFacts, memory: Memory, loaded: list[ModelInfo], disk: list[DiskModel] | None = None
) -> pb.NodeInfo:
    """Describe's answer."""
    hw, c = facts.hardware, facts.cost
    return pb.NodeInfo(
        node_id=facts.node_id,
        hostname=facts.name,
        agent_version=facts.agent_version,
        protocol_version=facts.protocol_version,
        engines=list(facts.engines),
        accelerator=pb.Accelerator(
            kind=hw.accelerator_kind,
            name=hw.accelerator_name,
            memory_bytes=hw.accelerator_memory_bytes,
            count=hw.accelerator_count,
        ),
        memory_total_bytes=memory.total,
        memory_available_bytes=memory.available,
        cost=cost_pb(c),
        models=[model_info_pb(m) for m in loaded],
        os=hw.os,
        arch=hw.arch,
        disk_models=[disk_model_pb(d) for d in disk or ()],
        capabilities=sorted(AGENT_CAPABILITIES),
    )


def node_status(
    node_id: str, statuses: list[ModelStatus], probe: Probe, *, uptime: float, busy: float
) -> pb.NodeStatus:
    """One WatchStatus message."""
    mem = probe.memory
    return pb.NodeStatus(
        node_id=node_id,
        unix_ms=int(time.time() * 1000),
        models=[model_status_pb(s) for s in statuses],
        memory_used_bytes=max(mem.total - mem.available, 0),
        memory_available_bytes=mem.available,
        power_watts=probe.power_watts or 0.0,
        power_measured=probe.power_watts is not None,
        uptime_seconds=uptime,
        busy_seconds=busy,
    )
