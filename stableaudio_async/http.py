"""The single place aiohttp is called for provider APIs and where its exceptions become ours."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import aiohttp

from stableaudio_async.errors import ProviderError, ProviderUnavailableError

__all__ = ["HttpReply", "HttpRequest", "send", "send_tracing", "translate_errors"]


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One request to send. ``headers`` may hold the API key, so it never appears in a repr."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    json: Any = None


@dataclass(frozen=True, slots=True)
class HttpReply:
    """A whole reply: status, headers (lower-cased names) and body."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str = ""

    def json(self) -> Any:
        """The body as JSON, or :class:`ValueError` when it is not JSON."""
        return json.loads(self.body)


@contextmanager
def translate_errors(provider: str, *, what: str = "request") -> Iterator[None]:
    """Turn aiohttp and timeout errors raised inside the block into :class:`ProviderUnavailableError`.

    Only a failure to connect counts as "not sent": after that, the provider may have
    received the request, whatever went wrong next.
    """
    try:
        yield
    except ProviderError:
        raise
    except aiohttp.ClientConnectorError as exc:
        err = ProviderUnavailableError(f"{what}: cannot connect to {exc.host}:{exc.port}",
                                       provider=provider)
        err.sent = False
        raise err from exc
    except TimeoutError as exc:
        raise ProviderUnavailableError(f"{what} timed out", provider=provider) from exc
    except aiohttp.ClientResponseError as exc:
        raise ProviderUnavailableError(f"{what}: {exc.message}", provider=provider,
                                       status=exc.status) from exc
    except aiohttp.ClientError as exc:
        # str() of these names the host and the failure, never the request headers.
        detail = str(exc) or type(exc).__name__
        raise ProviderUnavailableError(f"{what} failed: {detail}", provider=provider) from exc


def send_tracing() -> aiohttp.TraceConfig:
    """A trace config that calls a request's ``on_sent`` callback once its headers are written."""

    async def headers_sent(
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestHeadersSentParams,
    ) -> None:
        callback = getattr(context.trace_request_ctx, "on_sent", None)
        if callback is not None:
            callback()

    config = aiohttp.TraceConfig()
    config.on_request_headers_sent.append(headers_sent)
    return config


async def send(
    session: aiohttp.ClientSession,
    request: HttpRequest,
    *,
    provider: str,
    total_timeout: float,
    on_sent: Callable[[], None] | None = None,
) -> HttpReply:
    """Send ``request`` and read the whole reply (provider API replies are small).

    ``on_sent`` is called when the request's headers are on the wire, if ``session`` was made
    with :func:`send_tracing`.
    """
    with translate_errors(provider, what=f"{request.method} {request.url}"):
        async with session.request(
            request.method,
            request.url,
            headers=request.headers,
            json=request.json,
            timeout=aiohttp.ClientTimeout(total=total_timeout),
            allow_redirects=False,
            trace_request_ctx=SimpleNamespace(on_sent=on_sent),
        ) as response:
            body = await response.read()
            headers = {k.lower(): v for k, v in response.headers.items()}
            return HttpReply(response.status, headers, body, str(response.url))
