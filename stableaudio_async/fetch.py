"""After the submit: follow a remote job to its final status, cancel it, and fetch its audio,
asking the provider for a fresh URL when the one we hold has expired."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import anyio

from stableaudio_async.config import DownloadSettings, PollPolicy
from stableaudio_async.download import AtomicWriter, WrittenFile, fetch_into
from stableaudio_async.errors import (
    DeadlineExceededError,
    DownloadError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
)
from stableaudio_async.http import send
from stableaudio_async.lifecycle import JobPhase, JobRun
from stableaudio_async.logs import Logger
from stableaudio_async.models import (
    AudioSource,
    AudioURL,
    Failed,
    Job,
    RemoteHandle,
    RemoteStatus,
    Running,
    Succeeded,
)
from stableaudio_async.polling import fetch_status, poll_until_done
from stableaudio_async.providers import adapter_class
from stableaudio_async.ratelimit import slot
from stableaudio_async.runtime import ProviderRuntime, StopControl
from stableaudio_async.store import JobStore

__all__ = ["Fetcher", "destination", "same_resource"]


#: CDN answers meaning "this URL no longer works": ask the provider for a fresh one.
_EXPIRED = frozenset({403, 404, 410})


def destination(out_dir: Path, job: Job) -> Path:
    """Where ``job``'s audio goes: ``<out>/<job id>.<format>``."""
    return out_dir / f"{job.id}.{adapter_class(job.provider).output_format(job)}"


def prior(policy: PollPolicy, job: Job) -> float | None:
    """The job's expected time to done before any of its provider's have finished, from the
    audio it asks for (``expected_per_second``); None: the provider-wide ``expected`` stands."""
    if policy.expected_per_second is None or job.duration is None:
        return None
    return policy.expected_per_second * job.duration


def same_resource(old: AudioSource, new: AudioSource) -> bool:
    """Whether ``new`` is ``old`` re-signed (same scheme, host and path; the query differs), so
    that the bytes already fetched from ``old`` are the start of ``new`` too."""
    if not isinstance(old, AudioURL) or not isinstance(new, AudioURL):
        return False
    before, after = urlsplit(old.url), urlsplit(new.url)
    return (before.scheme, before.netloc, before.path) == (after.scheme, after.netloc, after.path)


class Fetcher:
    """Polls, cancels and downloads for the jobs of one engine."""

    def __init__(self, session: aiohttp.ClientSession, journal: JobStore, stop: StopControl,
                 out_dir: Path, download: DownloadSettings, rand: Callable[[], float]) -> None:
        self._session = session
        self._journal = journal
        self._stop = stop
        self._out_dir = out_dir
        self._download = download
        self._rand = rand

    async def follow(self, provider: ProviderRuntime, job: Job, handle: RemoteHandle,
                     run: JobRun, bound: Logger) -> Succeeded | Failed:
        """Poll ``handle`` until final; past the deadline, cancel it remotely where the provider
        can. A cancelled caller does not cancel it remotely: the journal keeps its request id
        and a rerun follows it (``JobHandle.cancel`` does, through the runner)."""
        status: RemoteStatus = handle.status
        if isinstance(status, Succeeded | Failed):  # final in the submit reply (sync_mode)
            return status
        policy = provider.settings.poll
        statuses = poll_until_done(
            self._session, provider.adapter, handle, policy=policy,
            deadline=anyio.current_time() + policy.timeout, limiter=provider.poll_limiter,
            request_timeout=provider.settings.request_timeout, rand=self._rand, job_id=job.id,
            on_outcome=lambda error: provider.record_outcome(error, bound),
            times=provider.completion_times, prior=prior(policy, job),
        )
        try:
            async for status in statuses:
                word = type(status).__name__.lower()
                bound.debug("job.status", status=word)
                self._journal.status(job.id, word)
                if isinstance(status, Running) and "running" not in run.marks:
                    run.marks["running"] = anyio.current_time()
                    run.advance(JobPhase.RUNNING)
        except DeadlineExceededError:
            await self.cancel_remote(provider, handle, bound)
            raise
        if not isinstance(status, Succeeded | Failed):  # poll_until_done ends on a final status
            raise ProviderUnavailableError("status polling ended without a final status",
                                           provider=provider.name, request_id=handle.request_id)
        return status

    async def cancel_remote(self, provider: ProviderRuntime, handle: RemoteHandle,
                            bound: Logger) -> None:
        """Best effort: ask the provider to stop a job we no longer wait for."""
        request = provider.adapter.cancel_request(handle)
        if request is None:
            return
        with anyio.move_on_after(10):
            try:
                async with slot(provider.poll_limiter) as sent:
                    reply = await send(self._session, request, provider=provider.name,
                                       total_timeout=10, on_sent=sent)
                bound.info("job.cancelled_remotely", http_status=reply.status)
            except ProviderError as exc:
                bound.warning("job.cancel_failed", error=str(exc))

    async def download(self, provider: ProviderRuntime, job: Job, final: Succeeded,
                       handle: RemoteHandle, bound: Logger, dest: Path) -> WrittenFile:
        """Fetch the audio to ``dest``, resuming broken transfers with Range, and asking the
        provider for a fresh URL when the CDN says the one we have expired (403, 404, 410)."""
        session = self._session
        source = final.audio[0]
        download = self._download

        async def once() -> None:
            await fetch_into(session, source, writer, provider=provider.name,
                             headers=provider.adapter.download_headers(
                                 getattr(source, "url", "")),
                             chunk_size=download.chunk_size, total_timeout=download.timeout)

        async def attempt(on_sent: Callable[[], None]) -> None:
            nonlocal source
            try:
                await once()
            except DownloadError as exc:
                if exc.status not in _EXPIRED or not isinstance(source, AudioURL):
                    raise
                try:
                    fresh = await self.fresh_audio(provider, handle)
                except RateLimitedError:
                    raise  # the provider asked us to hold off: the retry loop pauses it
                except ProviderError as refresh_error:
                    # Worth another attempt: the next one meets the expiry and asks again.
                    raise DownloadError(f"{exc.message}; asking for a fresh URL failed: "
                                        f"{refresh_error.message}", provider=provider.name
                                        ) from refresh_error
                if fresh is None or fresh == source:
                    raise
                bound.info("download.url_refreshed", http_status=exc.status)
                if not same_resource(source, fresh):
                    await writer.restart()  # another file: what we hold is not its start
                source = fresh
                try:
                    await once()
                except DownloadError as again:
                    if again.status not in _EXPIRED:
                        raise
                    # Expired again before we got to it: worth another (slower) attempt.
                    raise DownloadError(f"fresh URL expired too: {again.message}",
                                        provider=provider.name) from again

        try:
            async with AtomicWriter(dest) as writer:
                # One temporary file across attempts: a retry resumes where the last broke off.
                await provider.retrying("download", download.retry, attempt, bound=bound)
                return await writer.commit()
        except OSError as exc:
            raise DownloadError(f"cannot write the audio: {exc.strerror or exc}",
                                provider=provider.name, job_id=job.id,
                                request_id=handle.request_id) from exc
        except DownloadError as exc:
            raise exc.with_context(job_id=job.id, request_id=handle.request_id) from exc.__cause__
        except ProviderError as exc:  # a refresh that met a 429 on the last attempt
            raise DownloadError(f"asking for a fresh URL failed: {exc.message}",
                                provider=provider.name, job_id=job.id,
                                request_id=handle.request_id, status=exc.status) from exc

    async def fresh_audio(self, provider: ProviderRuntime, handle: RemoteHandle
                          ) -> AudioSource | None:
        """The job's audio as the provider lists it now (a CDN URL re-signed, say), if it can."""
        if handle.poll_url is None:
            return None
        status = await fetch_status(self._session, provider.adapter, handle,
                                    limiter=provider.poll_limiter,
                                    request_timeout=provider.settings.request_timeout)
        return status.audio[0] if isinstance(status, Succeeded) and status.audio else None
