"""A node's authentication state and its upkeep: :class:`NodeAuth`.

``ShopNode`` makes one at start (:meth:`NodeAuth.create`) and hands its :attr:`gate` to
every route. With ``auth = on`` it reads the key directory first (``auth_keys_dir``,
default ``<data_dir>/auth/keys``) and refuses to start when there is no key at all or a
key file is bad, before anything else has started: a node that would refuse every
token is a configuration error, not a running shop. It then

- re-reads the directory every ``RELOAD_INTERVAL_S`` in a worker thread
  (:meth:`watch_keys`), so a key added to every node is accepted within seconds and a
  removed one stops verifying (the token cache is emptied when the ring changes); a bad
  file met then is skipped with an error in the log, the other files still apply;
- loads the API key records (:meth:`load_api_keys`: the ``apikey`` actor recovers and
  fills the registry);
- applies revocations made on other nodes from their events (:meth:`on_key_event`), and,
  with a shared journal (a cluster), has the ``apikey`` actor read the journal again
  every ``REFRESH_INTERVAL_S`` of the apikey module, so a revocation whose event this
  node missed still applies within that time.

With ``auth = off`` only the per-buyer rate limits remain, and the node says loudly
that anyone can act as anyone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

import anyio
import msgspec
import structlog

from actors import ActorSystem, Clock
from actors.nats import Msg
from iceshop.auth.apikey_actor import (
    APIKEY_KIND,
    REFRESH_INTERVAL_S,
    REGISTRY_KEY,
    ApiKeyActor,
    LoadKeys,
)
from iceshop.auth.apikeys import ApiKeyRegistry
from iceshop.auth.gate import Gate
from iceshop.auth.keyring import RELOAD_INTERVAL_S, KeyDirectory, KeyRing, KeyRingError
from iceshop.auth.limits import BuyerLimits
from iceshop.auth.provision import keys_dir_of
from iceshop.auth.tokens import TokenVerifier
from iceshop.settings import Settings
from iceshop.wire import ApiKeyView, Event, ShopError, parse_time

__all__ = ["AUTH_OFF_WARNING", "NodeAuth"]

log = structlog.get_logger("iceshop.auth")

AUTH_OFF_WARNING = "AUTHENTICATION IS OFF: any client on this NATS server can act as anyone"

_key_event = msgspec.json.Decoder(Event[ApiKeyView])


class NodeAuth:
    """The gate of one node, its key ring and API key registry."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        *,
        keys: KeyDirectory | None = None,
        ring: KeyRing | None = None,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.ring = ring if ring is not None else KeyRing()
        self.apikeys = ApiKeyRegistry()
        self.verifier = TokenVerifier(self.ring, clock, leeway_s=settings.auth_leeway_s)
        self.gate = Gate(
            required=settings.auth == "on",
            verifier=self.verifier,
            apikeys=self.apikeys,
            limits=BuyerLimits(settings, clock),
        )

    @classmethod
    async def create(cls, settings: Settings, data_dir: Path, clock: Clock) -> Self:
        """Read the keys (auth on) or warn (auth off); ``ShopError`` naming the setting
        when the node cannot authenticate anyone."""
        if settings.auth == "off":
            log.warning(AUTH_OFF_WARNING)
            return cls(settings, clock)
        path = Path(settings.auth_keys_dir) if settings.auth_keys_dir else keys_dir_of(data_dir)
        keys = KeyDirectory(path)
        try:
            found = await anyio.to_thread.run_sync(keys.read)
        except KeyRingError as exc:
            raise ShopError.invalid(f"auth_keys_dir: {exc}") from exc
        if not found:
            raise ShopError.invalid(
                f"auth: on, but there are no token keys in {path} (add <kid>.key or <kid>.pub "
                "there, or set auth_keys_dir; auth = off is for development only)"
            )
        ring = KeyRing(found)
        log.info("authentication on", keys_dir=str(path), kids=ring.kids())
        return cls(settings, clock, keys=keys, ring=ring)

    @property
    def required(self) -> bool:
        return self.gate.required

    def register(self, system: ActorSystem) -> None:
        """The API key actor fills this node's registry from the journal, so in a cluster
        every node runs its own (a local kind): keys are read everywhere; writes from two
        nodes at once are kept apart by the journal's sequence check (one is refused as
        retryable and its actor reloads)."""
        settings, registry = self.settings, self.apikeys
        # Only a shared journal has other writers to catch up with (see ApiKeyActor).
        refresh = REFRESH_INTERVAL_S if settings.journal == "jetstream" else None
        system.register(
            APIKEY_KIND,
            lambda: ApiKeyActor(settings, registry, refresh_s=refresh),
            cls=ApiKeyActor,
            local=True,
        )

    async def load_api_keys(self, system: ActorSystem, timeout: float = 30.0) -> int:  # noqa: ASYNC109
        """Recover the ``apikey`` actor, which fills the registry; how many keys."""
        count: Any = await system.ref(APIKEY_KIND, REGISTRY_KEY).ask(LoadKeys(), timeout=timeout)
        return int(count)

    async def reload_api_keys(self, system: ActorSystem, timeout: float = 10.0) -> int:  # noqa: ASYNC109
        """Read every API key again from the journal (a key was created through another
        node): the local API key actor restarts and refills the registry."""
        system.ref(APIKEY_KIND, REGISTRY_KEY).stop()
        return await self.load_api_keys(system, timeout)

    async def watch_keys(self, interval: float = RELOAD_INTERVAL_S) -> None:
        """Re-read the key directory every ``interval`` seconds, for ever."""
        if self.keys is None:
            return
        while True:
            await anyio.sleep(interval)
            await self.reload_keys()

    async def reload_keys(self) -> bool:
        """Read the key directory again if it changed; whether the ring was replaced. A
        bad file is skipped (logged as an error) and the rest applies, so deleting a
        stolen key works even while another file is broken; only a directory that cannot
        be listed keeps the ring as it is."""
        keys = self.keys
        if keys is None:
            return False
        try:
            found = await anyio.to_thread.run_sync(keys.read_if_changed)
        except KeyRingError as exc:
            log.error("token keys not reloaded; keeping the ones in use", error=str(exc))
            return False
        if found is None:
            return False
        for problem in keys.skipped:
            log.error("token key file skipped; its tokens are refused until fixed", error=problem)
        if not found:
            log.error("the key directory is empty now: every token will be refused")
        self.ring.replace(found)
        log.info("token keys reloaded", kids=self.ring.kids())
        return True

    async def on_key_event(self, msg: Msg) -> None:
        """An API key event of any node: apply a revocation here too."""
        try:
            event = _key_event.decode(msg.data)
        except msgspec.DecodeError:
            log.warning("undecodable API key event", subject=msg.subject)
            return
        view = event.data
        if view.status == "revoked":
            at = parse_time(view.revoked_at) if view.revoked_at else parse_time(event.at)
            self.apikeys.revoke(view.key_id, at)
