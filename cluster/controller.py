"""The controller: discovery and node sessions feed the inventory; gateways long-poll its table.

It never dies of one node's trouble: each node session catches, logs, backs off and retries,
and whatever a node does is only ever an observation for the inventory to derive state from.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from cluster import deploy_store, ledger, prices
from cluster.books import Books
from cluster.deployer import Deployer
from cluster.discovery import MdnsBrowser, Sighting, peer_sightings
from cluster.inventory import (
    DrainSet,
    Inventory,
    ModelWithdrawn,
    NodeDescribed,
    NodeGone,
    NodeRefused,
    NodeSeen,
    NodeUnreachable,
    StatusReceived,
    StreamBroken,
    only_measured,
)
from cluster.node_client import (
    PLAINTEXT_REASON,
    NodeClient,
    NodeDescription,
    NodeError,
    NodeStatusSample,
    NodeTimeout,
    NodeUnauthenticated,
)
from cluster.types import ModelName, NodeId, NodeState, NodeTable
from node_agent.trust import ClusterSecret

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ControllerConfig:
    """Knobs of the controller; defaults suit an office LAN."""

    peers: tuple[str, ...] = ()
    mdns: bool = True
    mdns_interfaces: tuple[str, ...] = ()
    status_interval_ms: int = 250
    status_silence_s: float = 2.0  # no status for this long: reconnect (a cut link is silent)
    describe_timeout_s: float = 2.0
    retry_min_s: float = 0.25
    retry_max_s: float = 2.0
    tick_s: float = 0.25
    # A table that differs from the gateways' only in nodes' load, memory and measured rates
    # reaches them at most this often; any other change at once. Under load every status sample
    # (status_interval_ms) moves those, and each new version is a call from every gateway
    # replica and the table pickled for it.
    measured_push_s: float = 1.0
    # A new controller (first start, or Serve restarting it) holds its first table until every
    # source has been tried and every node reached has reported, at most this long, so that
    # gateways keep routing on their last table rather than on a half-discovered one.
    settle_max_s: float = 5.0
    mdns_answer_s: float = 1.0  # how long mDNS answers to the first query take to arrive
    data_dir: str = ""  # where the ledger file lives; "" keeps it in memory
    config_dir: str = ""  # where a cloud_prices.json may override the shipped one
    shutdown_token: str = ""  # what `cluster up` shows to have the ledger flushed; "": never
    # With a secret, agents are dialled over TLS and must prove they hold it; None: plaintext.
    cluster_secret: ClusterSecret | None = field(default=None, repr=False)
    plaintext_agents: bool = False  # also admit agents without a join token (insecure)


@dataclass
class _Session:
    sighting: Sighting
    task: asyncio.Task[None] | None = None
    node_id: str = ""
    address: str = ""
    description: NodeDescription | None = None
    reached: dict[str, str] = field(default_factory=dict)  # address -> last error
    tried: bool = False  # every address was tried once (reached or not)
    refused: str = ""  # why the node was last rejected (to log each new reason once)
    refused_at: str = ""  # the address that answered and was rejected


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
        self._client_factory = client_factory or partial(NodeClient,
                                                         secret=config.cluster_secret)
        self._plaintext_factory = plaintext_factory
        self._plaintext: set[str] = set()  # addresses of agents admitted without the secret
        self._clock = clock
        self.inventory = Inventory()
        self._sessions: dict[str, _Session] = {}
        self._table = NodeTable()
        self._published_at = -math.inf  # when self._table became the gateways' table
        self._changed = asyncio.Event()
        self._browser: MdnsBrowser | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._settled = asyncio.Event()
        self._started_at = clock()
        self.books = Books(
            path=Path(config.data_dir) / ledger.FILE_NAME if config.data_dir else ":memory:",
            prices=prices.load(Path(config.config_dir) if config.config_dir else None))
        store = deploy_store.DeployStore(
            Path(config.data_dir) / deploy_store.FILE_NAME if config.data_dir else ":memory:")
        self.deployer = Deployer(store, client_factory=self._client_for, clock=clock,
                                 withdraw=self._withdraw, drain=self.set_draining,
                                 data_dir=Path(config.data_dir) if config.data_dir else None)
        self._reconciler: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the ledger, start browsing, connect to the static peers, keep the table fresh."""
        self._started_at = self._clock()
        await self.books.open()
        await self.deployer.open()
        for sighting in peer_sightings(self.config.peers):
            self._on_seen(sighting)
        if self.config.mdns:
            self._browser = MdnsBrowser(self._on_seen, self._on_gone,
                                        interfaces=self.config.mdns_interfaces or None)
            try:
                await self._browser.start()
            except OSError as exc:
                logger.warning("mDNS browsing unavailable (%s); using --peer only", exc)
                self._browser = None
        self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())
        self._reconciler = asyncio.get_running_loop().create_task(
            self.deployer.run(self.table, self._settled))

    async def stop(self) -> None:
        """Stop every session and the browser."""
        if self._browser:
            await self._browser.close()
        tasks = [s.task for s in self._sessions.values() if s.task]
        if self._ticker:
            tasks.append(self._ticker)
        if self._reconciler:
            tasks.append(self._reconciler)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.deployer.close()
        await self.books.close()

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
        self.inventory.apply(ModelWithdrawn(node_id=NodeId(node_id), model=ModelName(model),
                                            withdrawn=withdrawn))
        self._refresh()

    def sessions(self) -> list[dict[str, object]]:
        """Where each known source was reached, and the last error per address tried."""
        return [{"source": s.sighting.key, "via": s.sighting.via, "node_id": s.node_id,
                 "address": s.address, "errors": dict(s.reached), "rejected": s.refused}
                for s in self._sessions.values()]

    def _check_settled(self) -> None:
        """Let the first table out once discovery has had its say (see settle_max_s)."""
        waited = self._clock() - self._started_at
        answers_s = self.config.mdns_answer_s if self._browser else 0.0
        if waited >= self.config.settle_max_s or (waited >= answers_s and self._discovered()):
            self._settled.set()

    def _discovered(self) -> bool:
        """Every source tried, and every node reached past joining."""
        return all(s.tried for s in self._sessions.values()) and all(
            n.state is not NodeState.JOINING for n in self._table.nodes)

    # -- discovery callbacks -------------------------------------------------------------

    def _on_seen(self, sighting: Sighting) -> None:
        session = self._sessions.get(sighting.key)
        if session and session.sighting.addresses == sighting.addresses and session.task:
            return
        if session and session.task:
            session.task.cancel()
        session = _Session(sighting=sighting)
        self._sessions[sighting.key] = session
        session.task = asyncio.get_running_loop().create_task(self._run_session(session))

    def _on_gone(self, key: str) -> None:
        session = self._sessions.pop(key, None)
        if session is None:
            return
        if session.task:
            session.task.cancel()
        if session.node_id:
            self.inventory.apply(NodeGone(node_id=NodeId(session.node_id), at=self._clock()))
            self._refresh()
        self._withdraw_refusal(session)

    # -- one node session ----------------------------------------------------------------

    async def _run_session(self, session: _Session) -> None:
        delay = self.config.retry_min_s
        while True:
            try:
                streamed = await self._connect_and_watch(session)
            except asyncio.CancelledError:
                raise
            except Exception:  # a session must never die; log and retry
                logger.exception("node session %s failed", session.sighting.key)
                streamed = False
            delay = self.config.retry_min_s if streamed else min(delay * 2, self.config.retry_max_s)
            await asyncio.sleep(delay)

    async def _connect_and_watch(self, session: _Session) -> bool:
        client = await self._reach(session)
        session.tried = True
        if client is None:
            if session.node_id:  # known, and now unreachable everywhere: no reason to wait
                self.inventory.apply(NodeUnreachable(node_id=NodeId(session.node_id),
                                                     at=self._clock()))
                self._refresh()
            return False
        streamed = False
        try:
            async for sample in self._statuses(client):
                streamed = True
                self.inventory.apply(StatusReceived.from_sample(sample, address=client.address,
                                                                at=self._clock()))
                self.books.status(sample, client.address)
                self.deployer.status(sample, client.address)
                self._refresh()
        except NodeError as exc:
            logger.info("node %s (%s): %s", session.node_id, client.address, exc)
            self.inventory.apply(StreamBroken(node_id=NodeId(session.node_id), at=self._clock(),
                                              reason=str(exc)))
            self._refresh()
        finally:
            self.books.stream_ended(session.node_id, client.address)
            await client.close()
        return streamed

    async def _statuses(self, client: NodeClient) -> AsyncIterator[NodeStatusSample]:
        """The node's status stream, where silence counts as a break.

        A cut cable sends no reset and TCP takes minutes to give up; a live agent sends status
        every interval even under load, so a long silence is worth a reconnect to find out.
        """
        stream = client.watch_status(self.config.status_interval_ms)
        try:
            while True:
                try:  # not asyncio.wait_for: on 3.11 it can swallow the session's cancellation
                    async with asyncio.timeout(self.config.status_silence_s):
                        sample = await anext(stream)
                except TimeoutError:
                    silence = self.config.status_silence_s
                    raise NodeTimeout(f"{client.address}: no status for {silence:.1f}s") from None
                yield sample
        finally:
            await stream.aclose()

    async def _reach(self, session: _Session) -> NodeClient | None:
        """Describe the node on each candidate address in turn; the first that answers wins."""
        for address in session.sighting.addresses:
            try:
                client, desc, plaintext = await self._describe(address)
            except NodeUnauthenticated as exc:
                session.reached.pop(address, None)
                await self._refuse(session, address, exc)
                return None
            except NodeError as exc:
                session.reached[address] = str(exc)
                continue
            session.reached.pop(address, None)
            self._withdraw_refusal(session)
            if session.address != address:
                logger.info("node %s (%s) reached at %s via %s%s", desc.name, desc.node_id,
                            address, session.sighting.via, " IN PLAINTEXT" if plaintext else "")
            session.node_id, session.address, session.description = desc.node_id, address, desc
            (self._plaintext.add if plaintext else self._plaintext.discard)(address)
            now = self._clock()
            self.inventory.apply(NodeSeen(node_id=NodeId(desc.node_id), address=address,
                                          via=session.sighting.via, at=now, plaintext=plaintext))
            self.inventory.apply(NodeDescribed.from_description(desc, at=now))
            self.books.node_described(desc)
            self.deployer.described(desc, address)
            self._refresh()
            return client
        self._withdraw_refusal(session)  # nothing answers there any more
        return None

    def _withdraw_refusal(self, session: _Session) -> None:
        """What was rejected at this source is gone (or now proved the secret): not rejected."""
        if session.refused_at:
            self.inventory.apply(NodeGone(node_id=_stand_in(session.refused_at), at=self._clock()))
            self._refresh()
        session.refused, session.refused_at = "", ""

    def _client_for(self, address: str) -> NodeClient:
        """A client for an admitted node: the way its session reached it, TLS or plaintext."""
        plaintext = address in self._plaintext
        return (self._plaintext_factory if plaintext else self._client_factory)(address)

    async def _describe(self, address: str) -> tuple[NodeClient, NodeDescription, bool]:
        """The client and description, over TLS; over plaintext only where the admin allows it."""
        timeout = self.config.describe_timeout_s
        client = self._client_factory(address)
        try:
            return client, await client.describe(timeout=timeout), False
        except NodeUnauthenticated as exc:
            await client.close()
            if not (self.config.plaintext_agents and PLAINTEXT_REASON in str(exc)):
                raise
        except NodeError:
            await client.close()
            raise
        client = self._plaintext_factory(address)
        try:
            return client, await client.describe(timeout=timeout), True
        except NodeError:
            await client.close()
            raise

    async def _refuse(self, session: _Session, address: str, exc: NodeUnauthenticated) -> None:
        """List what answers at `address` as rejected, and log each new reason once.

        Under a stand-in id, never the id it claims (in mDNS TXT or Describe): a rogue must not
        be able to mark a real node rejected by claiming its id.
        """
        reason = str(exc).removeprefix(f"{address}: ")
        name = ""
        if reason == PLAINTEXT_REASON:  # it will say what it calls itself: helps to find it
            with contextlib.suppress(NodeError):
                probe = self._plaintext_factory(address)
                try:
                    name = (await probe.describe(timeout=self.config.describe_timeout_s)).name
                finally:
                    await probe.close()
        if session.refused != reason:
            logger.warning("rejected the node at %s%s: %s", address,
                           f" (calls itself {name!r})" if name else "", reason)
        session.refused, session.refused_at = reason, address
        self.inventory.apply(NodeRefused(node_id=_stand_in(address), address=address,
                                         reason=reason, at=self._clock(), name=name))
        self._refresh()

    # -- the table -----------------------------------------------------------------------

    def _refresh(self) -> None:
        now = self._clock()
        table = self.inventory.table(now)
        if table.version != self._table.version and (
                now - self._published_at >= self.config.measured_push_s
                or not only_measured(self._table, table)):
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


def _stand_in(address: str) -> NodeId:
    """The id a rejected node is listed under: it could not prove any id of its own."""
    return NodeId(f"rejected@{address}")


def described_peers(controller: Controller) -> Sequence[str]:
    """The addresses currently used for each node (for logs and the CLI)."""
    return [s.address for s in controller._sessions.values() if s.address]
