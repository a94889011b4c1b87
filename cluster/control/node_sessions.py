"""One session per discovered source: reach the node, admit or refuse it, watch its status.

A session never dies of its node's trouble: it catches, logs, backs off and retries, and
whatever a node does is only ever an observation, applied to the controller's inventory (and
told to the ledger and the deployer). Admission is decided here too: `Dialer` tries TLS first
and plaintext only where the admin allows it, and a node that cannot prove the cluster secret
is listed as rejected under a stand-in id, never under one it claims. One that proves it but
speaks another major version of the protocol is listed (as incompatible) and left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from cluster.control.config import ControllerConfig
from cluster.control.discovery import Sighting, clean_name
from cluster.control.inventory import (
    Inventory,
    NodeDescribed,
    NodeForgotten,
    NodeGone,
    NodeRefused,
    NodeSeen,
    NodeUnreachable,
    StatusReceived,
    StreamBroken,
)
from cluster.deployments.deployer import Deployer
from cluster.ledger.service import LedgerService
from cluster.node_client import (
    PLAINTEXT_REASON,
    NodeClient,
    NodeDescription,
    NodeError,
    NodeStatusSample,
    NodeTimeout,
    NodeUnauthenticated,
)
from cluster.types import PROTOCOL_VERSION, NodeId, protocol_compatible

logger = logging.getLogger(__name__)

# Ids are only claimed, in plaintext: one seen over TLS stays that node's.
CLAIMS_TLS_ID = "plaintext agent claims the id of a node admitted over TLS"


class Dialer:
    """How agents are dialled: over TLS, in plaintext only where the admin allows it.

    It remembers which way each address was admitted, so that the deployer's calls to a node
    go the way its session reached it.
    """

    def __init__(
        self,
        secure: Callable[[str], NodeClient],
        plaintext: Callable[[str], NodeClient],
        *,
        plaintext_allowed: bool,
        timeout_s: float,
    ) -> None:
        self._client_factory, self._plaintext_factory = secure, plaintext
        self._plaintext_allowed, self._timeout_s = plaintext_allowed, timeout_s
        self._plaintext: set[str] = set()  # addresses of agents admitted without the secret

    def admitted(self, address: str, plaintext: bool) -> None:
        """Remember how the node at `address` was admitted."""
        (self._plaintext.add if plaintext else self._plaintext.discard)(address)

    def client_for(self, address: str) -> NodeClient:
        """A client for an admitted node: the way its session reached it, TLS or plaintext."""
        plaintext = address in self._plaintext
        return (self._plaintext_factory if plaintext else self._client_factory)(address)

    async def describe(self, address: str) -> tuple[NodeClient, NodeDescription, bool]:
        """The client and description, over TLS; over plaintext only where the admin allows it."""
        timeout = self._timeout_s
        client = self._client_factory(address)
        try:
            return client, await client.describe(timeout=timeout), False
        except NodeUnauthenticated as exc:
            await client.close()
            if not (self._plaintext_allowed and PLAINTEXT_REASON in str(exc)):
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

    async def plaintext_name(self, address: str) -> str:
        """What a plaintext agent calls itself ("" if it will not say): helps to find it."""
        name = ""
        with contextlib.suppress(NodeError):
            probe = self._plaintext_factory(address)
            try:
                name = clean_name((await probe.describe(timeout=self._timeout_s)).name)
            finally:
                await probe.close()
        return name


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
    incompatible: str = ""  # the other protocol version it last said (to log it once)
    plaintext: bool = False  # admitted without TLS
    watching: bool = False  # its status stream is up now
    heard_at: float = 0.0  # when it started, or last streamed status


class NodeSessions:
    """A session per source, keyed by its sighting; each applies what it sees, then `refresh`."""

    def __init__(
        self,
        config: ControllerConfig,
        dialer: Dialer,
        *,
        inventory: Inventory,
        ledger: LedgerService,
        deployer: Deployer,
        refresh: Callable[[], None],
        clock: Callable[[], float],
    ) -> None:
        self.config, self.dialer = config, dialer
        self.inventory, self.ledger, self.deployer = inventory, ledger, deployer
        self._refresh, self._clock = refresh, clock
        self._sessions: dict[str, _Session] = {}
        self._tls_ids: set[str] = set()  # node ids admitted over TLS: never merged with plaintext
        self._full = False  # mDNS sources are at their cap (to log it once)

    def tasks(self) -> list[asyncio.Task[None]]:
        """Every running session's task (to cancel them)."""
        return [s.task for s in self._sessions.values() if s.task]

    def all_tried(self) -> bool:
        """Every source has had each of its addresses tried once."""
        return all(s.tried for s in self._sessions.values())

    def as_json(self) -> list[dict[str, object]]:
        """Where each known source was reached, and the last error per address tried."""
        return [
            {
                "source": s.sighting.key,
                "via": s.sighting.via,
                "node_id": s.node_id,
                "address": s.address,
                "errors": dict(s.reached),
                "rejected": s.refused,
                "incompatible": s.incompatible,
            }
            for s in self._sessions.values()
        ]

    # -- discovery callbacks -------------------------------------------------------------

    def seen(self, sighting: Sighting) -> None:
        """A source seen (again): start its session, or restart it at its new addresses.

        An authenticated node streaming status keeps its session: the new addresses (from an
        unauthenticated packet) are only tried when that stream breaks.
        """
        session = self._sessions.get(sighting.key)
        if session and session.task:
            if session.sighting.addresses == sighting.addresses:
                return
            if self._authenticated(session):
                session.sighting = sighting
                return
            session.task.cancel()
        elif session is None and not self._room_for(sighting):
            return
        session = _Session(sighting=sighting, heard_at=self._clock())
        self._sessions[sighting.key] = session
        session.task = asyncio.get_running_loop().create_task(self._run_session(session))

    def gone(self, key: str) -> None:
        """A source said goodbye: end its session; its node, if any, is gone. Not while the
        node's authenticated stream is alive: anyone can send a goodbye over mDNS."""
        session = self._sessions.get(key)
        if session is None:
            return
        if self._authenticated(session):
            logger.info("ignored an mDNS goodbye for node %s: it is streaming", session.node_id)
            return
        self._end(session)
        if session.node_id:
            self.inventory.apply(NodeGone(node_id=NodeId(session.node_id), at=self._clock()))
            self._refresh()
        self._withdraw_refusal(session)

    def _authenticated(self, session: _Session) -> bool:
        return session.watching and not session.plaintext

    def _room_for(self, sighting: Sighting) -> bool:
        """Whether a new source may get a session: mDNS sources are capped, peers are not."""
        if sighting.via != "mdns":
            return True
        count = sum(s.sighting.via == "mdns" for s in self._sessions.values())
        if count < self.config.max_mdns_sources:
            self._full = False
            return True
        if not self._full:
            logger.warning(
                "ignoring new mDNS sources: %d already known (%s and more)", count, sighting.key
            )
        self._full = True
        return False

    def _end(self, session: _Session) -> None:
        """Stop the session and drop it (if it is still the one for its source)."""
        if self._sessions.get(session.sighting.key) is session:
            del self._sessions[session.sighting.key]
        if session.task and session.task is not asyncio.current_task():
            session.task.cancel()

    def _forget(self, session: _Session) -> None:
        """An mDNS source that streamed nothing for mdns_forget_s: it and its stand-in go."""
        logger.info("forgetting %s: no status from it for long", session.sighting.key)
        self._end(session)
        if session.refused_at:
            self.inventory.apply(NodeForgotten(node_id=_stand_in(session.refused_at)))
            session.refused, session.refused_at = "", ""
            self._refresh()

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
            if self._stale(session):
                self._forget(session)
                return
            await asyncio.sleep(delay)

    def _stale(self, session: _Session) -> bool:
        """An mDNS source no status has come from for mdns_forget_s that never proved the
        secret (a rogue's, or one that never answered); a node admitted over TLS is kept."""
        if session.sighting.via != "mdns" or session.node_id in self._tls_ids:
            return False
        return self._clock() - session.heard_at > self.config.mdns_forget_s

    async def _connect_and_watch(self, session: _Session) -> bool:
        client = await self._reach(session)
        session.tried = True
        if client is None:
            # Known, and now unreachable everywhere: no reason to wait (incompatible: it answered).
            if session.node_id and not session.incompatible:
                self.inventory.apply(
                    NodeUnreachable(node_id=NodeId(session.node_id), at=self._clock())
                )
                self._refresh()
            return False
        streamed = False
        try:
            async for sample in self._statuses(client):
                streamed = session.watching = True
                session.heard_at = self._clock()
                self.inventory.apply(
                    StatusReceived.from_sample(sample, address=client.address, at=self._clock())
                )
                self.ledger.status(sample, client.address)
                self.deployer.status(sample, client.address)
                self._refresh()
        except NodeError as exc:
            logger.info("node %s (%s): %s", session.node_id, client.address, exc)
            self.inventory.apply(
                StreamBroken(node_id=NodeId(session.node_id), at=self._clock(), reason=str(exc))
            )
            self._refresh()
        finally:
            session.watching = False
            self.ledger.stream_ended(session.node_id, client.address)
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
                client, desc, plaintext = await self.dialer.describe(address)
            except NodeUnauthenticated as exc:
                session.reached.pop(address, None)
                await self._refuse(session, address, exc)
                return None
            except NodeError as exc:
                session.reached[address] = str(exc)
                continue
            session.reached.pop(address, None)
            if plaintext and desc.node_id in self._tls_ids:
                await client.close()
                await self._refuse(session, address, NodeUnauthenticated(CLAIMS_TLS_ID))
                return None
            self._withdraw_refusal(session)
            if not protocol_compatible(desc.protocol_version):
                await client.close()
                self._incompatible(session, address, desc, plaintext)
                return None
            session.incompatible = ""
            if session.address != address:
                logger.info(
                    "node %s (%s) reached at %s via %s%s",
                    desc.name,
                    desc.node_id,
                    address,
                    session.sighting.via,
                    " IN PLAINTEXT" if plaintext else "",
                )
            self.dialer.admitted(address, plaintext)
            session.plaintext = plaintext
            if not plaintext:
                self._tls_ids.add(desc.node_id)
            self._described(session, address, desc, plaintext)
            self.ledger.node_described(desc)
            self.deployer.described(desc, address)
            self._refresh()
            return client
        self._withdraw_refusal(session)  # nothing answers there any more
        session.incompatible = ""
        return None

    def _incompatible(
        self, session: _Session, address: str, desc: NodeDescription, plaintext: bool
    ) -> None:
        """List a node of another protocol major as incompatible: seen and described, no more.

        No status stream, no deployments, no ledger: nothing but Describe is asked of it, and
        its session keeps describing it (at the slowest retry) until it speaks our major.
        """
        if session.incompatible != desc.protocol_version:
            logger.warning(
                "node %s (%s) at %s is incompatible: agent %s speaks protocol %s, this head %s",
                desc.name,
                desc.node_id,
                address,
                desc.agent_version,
                desc.protocol_version,
                PROTOCOL_VERSION,
            )
        session.incompatible = desc.protocol_version
        self._described(session, address, desc, plaintext)
        self._refresh()

    def _described(
        self, session: _Session, address: str, desc: NodeDescription, plaintext: bool
    ) -> None:
        """The node answered Describe at `address`: it is seen there and said who it is."""
        session.node_id, session.address, session.description = desc.node_id, address, desc
        now = self._clock()
        self.inventory.apply(
            NodeSeen(
                node_id=NodeId(desc.node_id),
                address=address,
                via=session.sighting.via,
                at=now,
                plaintext=plaintext,
            )
        )
        self.inventory.apply(NodeDescribed.from_description(desc, at=now))

    def _withdraw_refusal(self, session: _Session) -> None:
        """What was rejected at this source is gone (or now proved the secret): not rejected."""
        if session.refused_at:
            self.inventory.apply(NodeGone(node_id=_stand_in(session.refused_at), at=self._clock()))
            self._refresh()
        session.refused, session.refused_at = "", ""

    async def _refuse(self, session: _Session, address: str, exc: NodeUnauthenticated) -> None:
        """List what answers at `address` as rejected, and log each new reason once.

        Under a stand-in id, never the id it claims (in mDNS TXT or Describe): a rogue must not
        be able to mark a real node rejected by claiming its id.
        """
        reason = str(exc).removeprefix(f"{address}: ")
        name = ""
        if reason == PLAINTEXT_REASON:  # it will say what it calls itself: helps to find it
            name = await self.dialer.plaintext_name(address)
        if session.refused != reason:
            logger.warning(
                "rejected the node at %s%s: %s",
                address,
                f" (calls itself {name!r})" if name else "",
                reason,
            )
        session.refused, session.refused_at = reason, address
        self.inventory.apply(
            NodeRefused(
                node_id=_stand_in(address),
                address=address,
                reason=reason,
                at=self._clock(),
                name=name,
            )
        )
        self._refresh()


def _stand_in(address: str) -> NodeId:
    """The id a rejected node is listed under: it could not prove any id of its own."""
    return NodeId(f"rejected@{address}")
