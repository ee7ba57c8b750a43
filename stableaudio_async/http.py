"""The single place aiohttp is called for provider APIs and where its exceptions become ours."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, AnyStr

import aiohttp
import anyio

from stableaudio_async.errors import ProviderError, ProviderUnavailableError

__all__ = [
    "FormPart",
    "HttpReply",
    "HttpRequest",
    "open_reply",
    "read_reply",
    "secrets_of",
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


#: What an echoed secret is replaced with in a reply.
REDACTED = "[REDACTED]"
#: Request headers that carry a credential.
_CREDENTIAL_HEADER = re.compile(r"authorization|key|token|secret", re.IGNORECASE)
#: A credential shorter than this is no secret worth finding in text (and would match by chance).
_MIN_SECRET = 8


def secrets_of(request: HttpRequest) -> tuple[str, ...]:
    """The credentials ``request`` carries, longest first: each credential header's value, and
    its parts (``Bearer <key>``, fal's ``Key <id>:<secret>``), as a provider may echo them."""
    found: set[str] = set()
    for name, value in request.headers.items():
        if not _CREDENTIAL_HEADER.search(name):
            continue
        found.add(value)
        for word in value.split():
            found.add(word)
            found.update(word.split(":"))
    return tuple(sorted((s for s in found if len(s) >= _MIN_SECRET), key=len, reverse=True))


def _redact(text: AnyStr, secrets: Sequence[str]) -> AnyStr:
    """``text`` (a body's bytes, a header, a URL) with each of ``secrets`` replaced."""
    for secret in secrets:
        found, mark = ((secret.encode(), REDACTED.encode()) if isinstance(text, bytes)
                       else (secret, REDACTED))
        if found in text:
            text = text.replace(found, mark)
    return text


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
        return await read_reply(response, secrets_of(request))


async def read_reply(response: aiohttp.ClientResponse,
                     secrets: Sequence[str] = ()) -> HttpReply:
    """Read a reply's whole body into an :class:`HttpReply` (errors as in :func:`open_reply`).

    Any of ``secrets`` (see :func:`secrets_of`) the provider echoes, in its body, headers or
    URL, is replaced with ``[REDACTED]`` here, before anything reads the reply: so no error,
    log line, manifest or journal built from it can hold the key.
    """
    body = await response.read()
    headers = {k.lower(): _redact(v, secrets) for k, v in response.headers.items()}
    return HttpReply(response.status, headers, _redact(body, secrets),
                     _redact(str(response.url), secrets))
