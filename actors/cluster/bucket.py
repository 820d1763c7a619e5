"""The JetStream key-value bucket that holds the shard leases, and a watch on it.

:class:`LeaseBucket` is the few KV operations the lease layer needs, with nats-py's
errors mapped into :mod:`actors.errors` and the one outcome that is not an error made a
return value: a compare-and-set refused because the key's revision moved on
(``wrong last sequence``) returns ``None`` / ``False``. Opening creates the bucket when it
is missing (``history=1``, file storage, ``replicas``); a cluster whose JetStream is still
electing its leader answers "no responders" or "temporarily unavailable" for a moment, so
opening retries those with backoff until ``start_timeout`` (real seconds: it waits for a
real server, not for a lease timer).

:class:`BucketWatch` keeps a local copy of the bucket current: the latest entry of every
key first, then every write and delete as it happens. It is nats-py's ``KeyValue.watch``
on ``>`` without the queue: an ordered push consumer whose callback hands each entry to
``on_entry`` at once (in the subscription's own task, as every subscription callback of
the runtime runs), so no task of ours has to pump it and nothing can pile up.
:meth:`BucketWatch.sync` waits until every write made before the call has been handed
over, which turns "the watch will deliver it soon" into something one can await.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import msgspec
import nats.errors
import nats.js.errors
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from ..errors import NotPermitted, RequestTimeout, TransportError
from ..nats.errors import is_wrong_last, mapped_errors
from ..nats.transport import Msg, NatsTransport

__all__ = ["BucketWatch", "KvEntry", "LeaseBucket"]

#: JetStream's "stream name already in use" (another node created the bucket first,
#: with another configuration).
_NAME_IN_USE = 10058
_KV_OPERATION = "KV-Operation"
_MARKER_REASON = "Nats-Marker-Reason"


class KvEntry(msgspec.Struct, frozen=True):
    """One key's latest state; ``value`` ``None`` when it was deleted or purged."""

    key: str
    revision: int
    value: bytes | None


def _is_transient(exc: BaseException) -> bool:
    """Errors a JetStream still starting (or electing a leader) answers with."""
    if isinstance(exc, nats.errors.NoRespondersError | nats.js.errors.NoStreamResponseError):
        return True
    if isinstance(exc, nats.errors.TimeoutError | TimeoutError):
        return True
    return isinstance(exc, nats.js.errors.ServiceUnavailableError)


class LeaseBucket:
    """A KV bucket on one connection. Use :meth:`open`."""

    def __init__(self, transport: NatsTransport, kv: KeyValue, name: str, timeout: float) -> None:
        self.transport = transport
        self.name = name
        self.stream = f"KV_{name}"
        self.prefix = f"$KV.{name}."
        self.timeout = timeout
        self._kv = kv

    @classmethod
    async def open(
        cls,
        transport: NatsTransport,
        name: str,
        *,
        replicas: int = 1,
        create: bool = True,
        timeout: float = 5.0,  # noqa: ASYNC109 - each request's deadline, passed to nats-py
        start_timeout: float = 10.0,
    ) -> LeaseBucket | None:
        """Bind to bucket ``name``, creating it when missing (with ``create``; without
        it a missing bucket gives ``None``). Retries what a starting JetStream answers
        until ``start_timeout``; raises :class:`~actors.errors.TransportError` after."""
        js = transport.jetstream(timeout=timeout)
        delay = 0.05
        deadline = anyio.current_time() + start_timeout
        while True:
            try:
                kv = await cls._bind(js, name, replicas, create)
            except TransportError as exc:
                if isinstance(exc, NotPermitted) or not _is_transient(exc.__cause__ or exc):
                    raise
                if anyio.current_time() + delay >= deadline:
                    raise TransportError(
                        f"bucket {name}: JetStream not available within {start_timeout:g}s: {exc}"
                    ) from exc
                await anyio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            return None if kv is None else cls(transport, kv, name, timeout)

    @staticmethod
    async def _bind(js: Any, name: str, replicas: int, create: bool) -> KeyValue | None:
        with mapped_errors(f"bucket {name}"):
            try:
                kv: KeyValue = await js.key_value(name)
                return kv
            except nats.js.errors.BucketNotFoundError:
                if not create:
                    return None
            config = KeyValueConfig(
                bucket=name,
                description="shard leases and cluster members",
                history=1,
                replicas=replicas,
                storage=StorageType.FILE,
            )
            try:
                kv = await js.create_key_value(config)
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code != _NAME_IN_USE:
                    raise
                kv = await js.key_value(name)  # created by another node, differently
            return kv

    async def put(self, key: str, value: bytes) -> int:
        """Write unconditionally; the new revision."""
        with mapped_errors(f"put {self.name}/{key}"):
            revision: int = await self._kv.put(key, value)
            return revision

    async def update(self, key: str, value: bytes, last: int) -> int | None:
        """Write only if the key's revision is still ``last`` (``0``: the key has never
        been written). The new revision, or ``None`` when the revision had moved on."""
        with mapped_errors(f"update {self.name}/{key}"):
            try:
                revision: int = await self._kv.update(key, value, last=last)
            except nats.js.errors.APIError as exc:
                if is_wrong_last(exc):
                    return None
                raise
            return revision

    async def delete(self, key: str, last: int | None = None) -> bool:
        """Delete (a tombstone the watchers see). With ``last``, only if the key's
        revision is still ``last``; ``False`` when it had moved on."""
        with mapped_errors(f"delete {self.name}/{key}"):
            try:
                await self._kv.delete(key, last=last)
            except nats.js.errors.APIError as exc:
                if is_wrong_last(exc):
                    return False
                raise
            return True

    async def last_revision(self) -> int:
        """The revision of the bucket's latest write (``0``: none kept)."""
        with mapped_errors(f"info {self.name}"):
            info = await self.transport.jetstream(timeout=self.timeout).stream_info(self.stream)
        state = info.state
        return int(state.last_seq) if state.messages else 0


class BucketWatch:
    """Hands every key's latest entry, then every change, to ``on_entry`` (which must not
    block: it runs in the subscription's callback)."""

    def __init__(self, bucket: LeaseBucket, on_entry: Callable[[KvEntry], None]) -> None:
        self.bucket = bucket
        self._on_entry = on_entry
        self._sub: Any = None
        self.applied = 0
        """The highest revision handed to ``on_entry``."""
        self._progress = anyio.Event()

    async def start(self, *, inactive_threshold: float = 30.0) -> None:
        """Subscribe; entries start arriving in the background (see :meth:`sync`).
        ``inactive_threshold``: how long the server keeps the consumer without us."""
        if self._sub is not None:
            return
        js = self.bucket.transport.jetstream(timeout=self.bucket.timeout)
        with mapped_errors(f"watch {self.bucket.name}"):
            self._sub = await js.subscribe(
                f"{self.bucket.prefix}>",
                stream=self.bucket.stream,
                cb=self._on_msg,
                ordered_consumer=True,
                deliver_policy=nats.js.api.DeliverPolicy.LAST_PER_SUBJECT,
                inactive_threshold=inactive_threshold,
            )

    async def sync(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 - a bound, not a timer
        """Return once every write made to the bucket before this call was handed to
        ``on_entry``; :class:`~actors.errors.RequestTimeout` after ``timeout`` seconds."""
        target = await self.bucket.last_revision()
        try:
            with anyio.fail_after(timeout):
                while self.applied < target:
                    await self._progress.wait()
        except TimeoutError as exc:
            raise RequestTimeout(
                f"watch {self.bucket.name}: revision {target} not seen within {timeout:g}s "
                f"(at {self.applied})"
            ) from exc

    async def stop(self) -> None:
        sub, self._sub = self._sub, None
        if sub is None:
            return
        with anyio.CancelScope(shield=True):
            try:
                await sub.unsubscribe()
            except (nats.errors.Error, OSError):
                pass  # the connection is gone: so is the subscription

    async def _on_msg(self, msg: Msg) -> None:
        revision = int(msg.metadata.sequence.stream)
        key = msg.subject[len(self.bucket.prefix) :]
        headers = msg.headers or {}
        deleted = _KV_OPERATION in headers or _MARKER_REASON in headers
        self._on_entry(KvEntry(key, revision, None if deleted else bytes(msg.data)))
        if revision > self.applied:
            self.applied = revision
            progress, self._progress = self._progress, anyio.Event()
            progress.set()
