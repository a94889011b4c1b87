"""The controller: discovery and node sessions feed the inventory; gateways long-poll its table.

It starts and stops the parts (the ledger, the deployer's loop, discovery, one session per
source in `node_sessions`) and publishes the table they let the inventory derive: at once when
a node's state, models or address change, at most every `measured_push_s` when only its load
and rates do, and not before discovery has had its say. The drains and withdrawals the
deployer decides go through it to the same inventory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from cluster.control.config import ControllerConfig
from cluster.control.discovery import MdnsBrowser, peer_sightings
from cluster.control.inventory import (
    AliasesSet,
    DrainSet,
    Inventory,
    ModelWithdrawn,
    only_measured,
)
from cluster.control.node_sessions import Dialer, NodeSessions
from cluster.deployments import aliases as model_aliases
from cluster.deployments import store as deploy_store
from cluster.deployments.deployer import Deployer
from cluster.ledger import prices
from cluster.ledger import store as ledger_store
from cluster.ledger.service import LedgerService
from cluster.node_client import NodeClient
from cluster.providers import store as provider_store
from cluster.types import ModelName, NodeId, NodeState, NodeTable

logger = logging.getLogger(__name__)


def _one_line(exc: BaseException) -> str:
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Controller:
    """Discovery → node sessions → inventory → versioned node table for the gateways."""

    def __init__(
        self,
        config: ControllerConfig,
        *,
        client_factory: Callable[[str], NodeClient] | None = None,
        plaintext_factory: Callable[[str], NodeClient] = NodeClient,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._clock = clock
        self.inventory = Inventory()
        self._table = NodeTable()
        self._published_at = -math.inf  # when self._table became the gateways' table
        self._changed = asyncio.Event()
        self._browser: MdnsBrowser | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._settled = asyncio.Event()
        self._started_at = clock()
        self.ledger = LedgerService(
            path=Path(config.data_dir) / ledger_store.FILE_NAME if config.data_dir else ":memory:",
            prices=prices.load(Path(config.config_dir) if config.config_dir else None),
            provider_prices=(
                partial(provider_store.prices_by_provider, Path(config.config_dir))
                if config.config_dir
                else dict
            ),
        )
        store = deploy_store.DeployStore(
            Path(config.data_dir) / deploy_store.FILE_NAME if config.data_dir else ":memory:"
        )
        dialer = Dialer(
            client_factory or partial(NodeClient, secret=config.cluster_secret),
            plaintext_factory,
            plaintext_allowed=config.plaintext_agents,
            timeout_s=config.describe_timeout_s,
        )
        self.deployer = Deployer(
            store,
            client_factory=dialer.client_for,
            clock=clock,
            withdraw=self._withdraw,
            drain=self.set_draining,
            data_dir=Path(config.data_dir) if config.data_dir else None,
        )
        self.node_sessions = NodeSessions(
            config,
            dialer,
            inventory=self.inventory,
            ledger=self.ledger,
            deployer=self.deployer,
            refresh=self._refresh,
            clock=clock,
        )
        self._reconciler: asyncio.Task[None] | None = None
        self._aliases: dict[str, ModelName] = {}
        self.start_error: str | None = None  # why the last try to start failed, while retrying

    async def start_until_started(self, first_s: float = 1.0, most_s: float = 30.0) -> None:
        """`start`, tried again with backoff until it succeeds: a ledger locked by another
        process or a full disk may clear. Meanwhile `start_error` says why, for /health."""
        delay = first_s
        while True:
            try:
                await self.start()
            except Exception as exc:
                self.start_error = _one_line(exc)
                logger.error("the controller cannot start (trying again in %.0f s): %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, most_s)
            else:
                self.start_error = None
                return

    async def start(self) -> None:
        """Open the ledger, start browsing, connect to the static peers, keep the table fresh."""
        self._started_at = self._clock()
        await self.ledger.open()
        await self.deployer.open()
        self._aliases = await self.deployer.store.aliases()
        self.inventory.apply(AliasesSet(aliases=model_aliases.ordered(self._aliases)))
        for sighting in peer_sightings(self.config.peers):
            self.node_sessions.seen(sighting)
        if self.config.mdns:
            self._browser = MdnsBrowser(
                self.node_sessions.seen,
                self.node_sessions.gone,
                interfaces=self.config.mdns_interfaces or None,
            )
            try:
                await self._browser.start()
            except OSError as exc:
                logger.warning("mDNS browsing unavailable (%s); using --peer only", exc)
                self._browser = None
        self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())
        self._reconciler = asyncio.get_running_loop().create_task(
            self.deployer.run(self.table, self._settled)
        )

    async def stop(self) -> None:
        """Stop every session and the browser."""
        if self._browser:
            await self._browser.close()
        tasks = self.node_sessions.tasks()
        if self._ticker:
            tasks.append(self._ticker)
        if self._reconciler:
            tasks.append(self._reconciler)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.deployer.close()
        await self.ledger.close()

    def table(self) -> NodeTable:
        """The current node table."""
        return self._table

    async def wait_table(self, known_version: int, timeout_s: float = 20.0) -> NodeTable:
        """Long poll: return as soon as the table's version differs from `known_version`."""
        deadline = self._clock() + timeout_s
        await self._settled.wait()
        while self._table.version == known_version and self._clock() < deadline:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), max(0.0, deadline - self._clock()))
        return self._table

    def set_draining(self, node_id: str, draining: bool) -> None:
        """Mark a node draining (no new requests) or not."""
        self.inventory.apply(DrainSet(node_id=NodeId(node_id), draining=draining))
        self._refresh()

    def _withdraw(self, node_id: str, model: str, withdrawn: bool) -> None:
        """Take one model on one node out of routing (a replica being moved), or put it back."""
        self.inventory.apply(
            ModelWithdrawn(node_id=NodeId(node_id), model=ModelName(model), withdrawn=withdrawn)
        )
        self._refresh()

    def aliases(self) -> dict[str, ModelName]:
        """Every model alias: its name (or glob) and the model it names."""
        return dict(self._aliases)

    async def set_alias(self, name: str, model: ModelName | None) -> None:
        """Store an alias (None: forget it) and push it to the gateways with the table."""
        store = self.deployer.store
        if model is None:
            await store.delete_alias(name)
            self._aliases.pop(name, None)
        else:
            await store.put_alias(name, model, time.time())
            self._aliases[name] = model
        self.inventory.apply(AliasesSet(aliases=model_aliases.ordered(self._aliases)))
        self._refresh()

    def sessions(self) -> list[dict[str, object]]:
        """Where each known source was reached, and the last error per address tried."""
        return self.node_sessions.as_json()

    def _check_settled(self) -> None:
        """Let the first table out once discovery has had its say (see settle_max_s)."""
        waited = self._clock() - self._started_at
        answers_s = self.config.mdns_answer_s if self._browser else 0.0
        if waited >= self.config.settle_max_s or (waited >= answers_s and self._discovered()):
            self._settled.set()

    def _discovered(self) -> bool:
        """Every source tried, and every node reached past joining."""
        return self.node_sessions.all_tried() and all(
            n.state is not NodeState.JOINING for n in self._table.nodes
        )

    # -- the table -----------------------------------------------------------------------

    def _refresh(self) -> None:
        now = self._clock()
        table = self.inventory.table(now)
        if table.version != self._table.version and (
            now - self._published_at >= self.config.measured_push_s
            or not only_measured(self._table, table)
        ):
            self._table, self._published_at = table, now
            self._changed.set()
        if not self._settled.is_set():
            self._check_settled()

    async def _tick_forever(self) -> None:
        # Loss is a matter of time passing without status, so re-derive on a tick too.
        while True:
            await asyncio.sleep(self.config.tick_s)
            try:
                self._refresh()
            except Exception:
                logger.exception("refreshing the node table failed")
