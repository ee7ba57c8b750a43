"""The single place aiohttp is called for provider APIs and where its exceptions become ours."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import anyio

from stableaudio_async.errors import ProviderError, ProviderUnavailableError

__all__ = [
    "FormPart",
    "HttpReply",
    "HttpRequest",
    "open_reply",
    "read_reply",
    "send",
    "send_tracing",
    "translate_errors",
]


@dataclass(frozen=True, slots=True)
class FormPart:
    """One part of a multipart/form-data body: a text ``value``, or a file at ``path``."""

    name: str
    value: str | None = None
    path: Path | None = None
    content_type: str | None = None


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One request to send. ``headers`` may hold the API key, so it never appears in a repr.

    The body is ``json``, or ``form`` (always sent as multipart/form-data, files streamed
    from disk), or nothing.
    """

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    json: Any = None
    form: Sequence[FormPart] | None = None


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


async def _form_data(parts: Sequence[FormPart], stack: AsyncExitStack) -> aiohttp.FormData:
    # Multipart even without a file: providers such as Stability accept nothing else.
    form = aiohttp.FormData(default_to_multipart=True)
    for part in parts:
        if part.path is not None:
            handle = await anyio.open_file(part.path, "rb")
            stack.push_async_callback(handle.aclose)
            # aiohttp streams the file object in chunks rather than reading it whole.
            form.add_field(part.name, handle.wrapped, filename=part.path.name,
                           content_type=part.content_type or "application/octet-stream")
        else:
            form.add_field(part.name, part.value or "")
    return form


@asynccontextmanager
async def open_reply(
    session: aiohttp.ClientSession,
    request: HttpRequest,
    *,
    provider: str,
    total_timeout: float,
    on_sent: Callable[[], None] | None = None,
) -> AsyncIterator[aiohttp.ClientResponse]:
    """Send ``request`` and yield the reply with its body unread, for streaming.

    aiohttp and timeout errors raised while sending or reading inside the block become
    :class:`ProviderUnavailableError`. ``on_sent`` is called when the request's headers are
    on the wire, if ``session`` was made with :func:`send_tracing`.
    """
    with translate_errors(provider, what=f"{request.method} {request.url}"):
        async with AsyncExitStack() as stack:
            data = await _form_data(request.form, stack) if request.form is not None else None
            response = await stack.enter_async_context(session.request(
                request.method,
                request.url,
                headers=request.headers,
                json=request.json,
                data=data,
                timeout=aiohttp.ClientTimeout(total=total_timeout),
                allow_redirects=False,
                trace_request_ctx=SimpleNamespace(on_sent=on_sent),
            ))
            yield response


async def send(
    session: aiohttp.ClientSession,
    request: HttpRequest,
    *,
    provider: str,
    total_timeout: float,
    on_sent: Callable[[], None] | None = None,
) -> HttpReply:
    """Send ``request`` and read the whole reply (provider API replies are small)."""
    async with open_reply(session, request, provider=provider, total_timeout=total_timeout,
                          on_sent=on_sent) as response:
        return await read_reply(response)


async def read_reply(response: aiohttp.ClientResponse) -> HttpReply:
    """Read a reply's whole body into an :class:`HttpReply` (errors as in :func:`open_reply`)."""
    body = await response.read()
    headers = {k.lower(): v for k, v in response.headers.items()}
    return HttpReply(response.status, headers, body, str(response.url))
