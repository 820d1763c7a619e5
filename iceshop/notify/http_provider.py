"""What the HTTP providers share: one pooled ``httpx.AsyncClient`` for their lifetime
and one POST whose transport failures are retryable send errors.

The WhatsApp and webhook providers differ in the body they send and in how they read
the answer; opening and closing the client, and mapping a timeout or a broken
connection to :class:`~iceshop.notify.provider.RetryableSendError`, are the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Self

import httpx

from iceshop.notify.provider import RetryableSendError

__all__ = ["HttpProvider"]


class HttpProvider:
    """Base of a provider that POSTs to ``self.url``; use it as ``async with``."""

    def __init__(self, url: str, *, timeout: float, max_connections: int) -> None:
        self.url = url
        self.timeout = timeout
        self.max_connections = max_connections
        self._client: httpx.AsyncClient | None = None

    def _client_headers(self) -> dict[str, str]:
        """Headers every request of the client carries (e.g. credentials)."""
        return {}

    async def __aenter__(self) -> Self:
        self._client = httpx.AsyncClient(
            timeout=self.timeout,
            limits=httpx.Limits(
                max_connections=self.max_connections,
                max_keepalive_connections=self.max_connections,
            ),
            headers=self._client_headers(),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def _post(self, content: bytes, headers: Mapping[str, str]) -> httpx.Response:
        """POST ``content``; no answer or a broken connection is a retryable error."""
        client = self._client
        if client is None:
            raise RuntimeError(f"{type(self).__name__} used outside its async with")
        try:
            return await client.post(self.url, content=content, headers=headers)
        except httpx.TimeoutException as exc:
            raise RetryableSendError(f"no answer in {self.timeout:g}s: {exc!r}") from exc
        except httpx.HTTPError as exc:
            raise RetryableSendError(f"request failed: {exc!r}") from exc
