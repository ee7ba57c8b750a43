"""Getting a job accepted: its input audio in the form the provider takes, the submit with its
durable intent, a lookup of a submit whose answer was lost, and the synchronous path whose
reply is the audio itself.

Every attempt is recorded in the journal before it is sent and counted as on the wire until
its answer is in (:meth:`StopControl.on_the_wire`), so that a stop never cuts one off.
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import anyio

from stableaudio_async.config import DownloadSettings
from stableaudio_async.download import WrittenFile, fetch_audio, write_body
from stableaudio_async.errors import DownloadError, ProviderError, ProviderUnavailableError
from stableaudio_async.http import (
    HttpRequest,
    open_reply,
    read_reply,
    secrets_of,
    send,
    translate_errors,
)
from stableaudio_async.lifecycle import JobPhase, JobRun, accept, check_finish
from stableaudio_async.logs import Logger
from stableaudio_async.models import Job, RemoteHandle, Running
from stableaudio_async.providers.base import AUDIO_SUFFIXES, is_url
from stableaudio_async.ratelimit import slot
from stableaudio_async.runtime import ProviderRuntime, StopControl
from stableaudio_async.store import JobStore

__all__ = ["LOOKUP_SKEW", "Submitter"]


#: Seconds of clock difference allowed between us and a provider when looking a submit up by
#: the time it was sent: a job created this much earlier still counts as ours.
LOOKUP_SKEW = 60.0
#: Pages of a provider's job listing read for one lookup; past them it is not found.
_LOOKUP_PAGES = 5


def _lost_reply(provider: str, request_id: str | None, exc: BaseException) -> DownloadError:
    """The error for a synchronous reply that broke off after the generation finished.

    The provider has billed the generation and cannot hand the audio over again, so this is
    never retried within the run (a second submit would bill it a second time): the job fails
    with its cost recorded, and only a rerun the user asks for generates it again.
    """
    detail = exc.message if isinstance(exc, ProviderError) else (
        f"cannot write the audio: {getattr(exc, 'strerror', None) or exc}")
    error = DownloadError(f"the reply broke off after the generation finished, which is billed "
                          f"and cannot be fetched again ({detail})", provider=provider,
                          request_id=request_id,
                          status=exc.status if isinstance(exc, ProviderError) else None)
    error.charged = True
    return error


class Submitter:
    """Submits the jobs of one engine."""

    def __init__(self, session: aiohttp.ClientSession, journal: JobStore, stop: StopControl,
                 out_dir: Path, download: DownloadSettings) -> None:
        self._session = session
        self._journal = journal
        self._stop = stop
        self._out_dir = out_dir
        self._download = download
        self._uploads: dict[tuple[str, str], str] = {}
        self._upload_locks: dict[tuple[str, str], anyio.Lock] = {}

    async def submit(self, provider: ProviderRuntime, job: Job, run: JobRun,
                     bound: Logger) -> RemoteHandle:
        """Get ``job`` accepted; its request id is in the journal before this returns."""
        session = self._session
        run.advance(JobPhase.SUBMITTING)
        request = provider.adapter.submit_request(job, await self.input_audio(provider, job,
                                                                               bound))

        async def attempt(on_sent: Callable[[], None]) -> RemoteHandle:
            if run.lookup_since is not None and not self._stop.stopping:
                found = await self._look_up(provider, request, run, bound)
                if found is not None:
                    run.request_id = found.request_id
                    await self._journal.submitted(job.id, found)
                    run.handle = found
                    return found
            async with self._attempt(job, run):
                if run.first_sent is None:
                    run.first_sent = time.time()
                reply = await send(session, request, provider=provider.name,
                                   total_timeout=provider.settings.request_timeout,
                                   on_sent=on_sent)
                handle = provider.adapter.parse_submit(reply)
                run.request_id = handle.request_id
                if handle.request_id is not None:
                    provider.claimed.add(handle.request_id)
                # Durable before anything else happens: a rerun polls this id, never resubmits.
                await self._journal.submitted(job.id, handle)
                run.handle = handle
            return handle

        def unsure(error: ProviderError) -> None:
            # The provider may hold the job already: look for it first where it lists jobs,
            # else send again and say so.
            if provider.can_look_up and run.first_sent is not None:
                run.lookup_since = run.first_sent - LOOKUP_SKEW
                # A reply (a 5xx) means the provider is done with the request, so a listing
                # without the job settles it; after a reset or a timeout the job may still
                # appear later, so a resend then stays flagged.
                run.lookup_settles = error.status is not None
            else:
                run.flag_possible_duplicate()

        handle = await provider.retrying("submit", provider.settings.retry, attempt,
                                         bound=bound, limiter=provider.limiter,
                                         on_resend=unsure)
        bound.info("job.submitted", request_id=handle.request_id, attempts=run.attempts)
        return handle

    async def _look_up(self, provider: ProviderRuntime, request: HttpRequest, run: JobRun,
                       bound: Logger) -> RemoteHandle | None:
        """The job a lost submit of ``request`` created, from the provider's listing of recent
        jobs, or None when it made none (the submit is then sent again, unflagged). When the
        listing cannot be read, the resend that follows is flagged ``possibly_duplicated``.

        Of several jobs made from the same body (identical jobs in one batch), the oldest not
        held by another job of this run is taken.
        """
        assert run.lookup_since is not None
        since, run.lookup_since = run.lookup_since, None
        adapter = provider.adapter
        found: list[RemoteHandle] = []
        page: str | None = None
        try:
            for _ in range(_LOOKUP_PAGES):
                lookup = adapter.lookup_request(page)
                assert lookup is not None
                async with slot(provider.poll_limiter) as sent:
                    reply = await send(self._session, lookup, provider=provider.name,
                                       total_timeout=provider.settings.request_timeout,
                                       on_sent=sent)
                listed = adapter.parse_lookup(reply, request, since)
                found += listed.found
                if listed.next_page is None:
                    break
                page = listed.next_page
            else:
                raise ProviderUnavailableError(
                    f"the job listing goes on past {_LOOKUP_PAGES} pages", provider=provider.name)
        except ProviderError as exc:
            bound.warning("submit.lookup_failed", error=str(exc))
            run.flag_possible_duplicate()
            return None
        free = [h for h in found if h.request_id is not None
                and h.request_id not in provider.claimed]
        if not free:
            bound.info("submit.lookup", found=False)
            if not run.lookup_settles:
                run.flag_possible_duplicate()
            return None
        handle = free[-1]  # the listing is newest first
        assert handle.request_id is not None
        provider.claimed.add(handle.request_id)
        bound.info("submit.lookup", found=True, request_id=handle.request_id)
        return handle

    async def generate(self, provider: ProviderRuntime, job: Job, run: JobRun,
                       bound: Logger, dest: Path) -> WrittenFile:
        """A synchronous job: the submit's reply is the audio, streamed straight to ``dest``."""
        session = self._session
        adapter = provider.adapter
        run.advance(JobPhase.SUBMITTING)
        request = adapter.submit_request(job, await self.input_audio(provider, job, bound))
        chunk_size = self._download.chunk_size

        async def attempt(on_sent: Callable[[], None]) -> WrittenFile:
            run.marks["running"] = anyio.current_time()
            async with self._attempt(job, run), open_reply(
                    session, request, provider=provider.name,
                    total_timeout=provider.settings.request_timeout,
                    on_sent=on_sent) as response:
                headers = {k.lower(): v for k, v in response.headers.items()}
                run.marks["done"] = run.marks["download"] = anyio.current_time()
                stream = adapter.audio_stream(response.status, headers)
                if stream is None:
                    # JSON (base64 audio) or an error: small, read whole.
                    try:
                        with translate_errors(provider.name, what="reading the reply"):
                            reply = await read_reply(response, secrets_of(request))
                    except ProviderError as exc:
                        if response.status == 200:  # the audio, generated and billed
                            run.request_id = headers.get("x-request-id")
                            raise _lost_reply(provider.name, run.request_id, exc) from exc
                        raise
                    handle = adapter.parse_submit(reply)
                    run.request_id = handle.request_id
                    final = accept(provider.name, job, run, handle.status)
                    run.written = await fetch_audio(session, final.audio[0], dest,
                                                    provider=provider.name)
                    return run.written
                run.request_id = stream.request_id
                # Generated (and billed) from here on: a crash mid-body is not a free retry.
                await self._journal.submitted(
                    job.id, RemoteHandle(stream.request_id, None, Running()))
                if stream.seed is not None:
                    run.seed = stream.seed
                check_finish(provider.name, run, stream.finish_reason)
                run.advance(JobPhase.DOWNLOADING)
                try:
                    with translate_errors(provider.name, what="reading the audio"):
                        run.written = await write_body(response, dest, provider=provider.name,
                                                       chunk_size=chunk_size,
                                                       content_type=stream.content_type)
                        return run.written
                except (ProviderError, OSError) as exc:
                    raise _lost_reply(provider.name, stream.request_id, exc) from exc

        # The held connection is the generation: running from the first attempt on.
        run.advance(JobPhase.RUNNING)
        written = await provider.retrying("submit", provider.settings.retry, attempt,
                                          bound=bound, limiter=provider.limiter,
                                          on_resend=lambda _: run.flag_possible_duplicate())
        bound.info("job.generated", request_id=run.request_id, attempts=run.attempts,
                   seed=run.seed)
        return written

    @asynccontextmanager
    async def _attempt(self, job: Job, run: JobRun) -> AsyncIterator[None]:
        """Around one submit attempt: refused once stopping, the intent durable first, counted
        as on the wire and shielded from cancellation until its answer is in."""
        # Counted from before the intent is written: a stop that comes while it is being
        # written waits for this submit to be answered (and its id journalled) rather than
        # cutting it off on the wire, which would leave it to be sent again on resume.
        # Shielded from the intent on: a caller's cancellation waits for the answer and its
        # request id in the journal, then goes through (only an abort cuts it short).
        with self._stop.shielded():
            async with self._stop.on_the_wire():
                if run.attempts == run.journal_attempts:
                    await self._journal.intent(job, possibly_duplicated=run.possibly_duplicated)
                run.attempts += 1
                yield

    async def input_audio(self, provider: ProviderRuntime, job: Job,
                          bound: Logger) -> str | None:
        """The job's input audio in the form its provider takes (see ``Adapter.local_audio``)."""
        audio = job.audio
        mode = provider.adapter.local_audio
        if audio is None or is_url(audio) or mode in ("none", "multipart"):
            return audio if audio is None or is_url(audio) else None
        path = Path(await anyio.Path(audio).absolute())
        if mode == "data_uri":
            data = await anyio.Path(path).read_bytes()
            media_type = AUDIO_SUFFIXES.get(path.suffix.lower(), "application/octet-stream")
            return f"data:{media_type};base64,{base64.b64encode(data).decode()}"
        # Uploaded once per engine, however many jobs use the file.
        key = (provider.name, str(path))
        async with self._upload_locks.setdefault(key, anyio.Lock()):
            url = self._uploads.get(key)
            if url is None:
                url = self._uploads[key] = await self._upload(provider, path, bound)
        return url

    async def _upload(self, provider: ProviderRuntime, path: Path, bound: Logger) -> str:
        session = self._session
        request = provider.adapter.upload_request(path)

        async def attempt(on_sent: Callable[[], None]) -> str:
            reply = await send(session, request, provider=provider.name,
                               total_timeout=provider.settings.request_timeout, on_sent=on_sent)
            return provider.adapter.parse_upload(reply)

        url = await provider.retrying("upload", provider.settings.retry, attempt, bound=bound,
                                      limiter=provider.poll_limiter)
        bound.info("input.uploaded", file=path.name, url=url)
        return url
