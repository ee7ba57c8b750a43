"""The emulator's shared CDN: each finished job's audio, rendered deterministically, at a URL that
is signed to expire when the provider's faults say so.

Rendering is Python code holding the GIL, so it runs in a worker thread, one at a time; the
stamps the rate limit judges requests by are then not delayed by it (see :meth:`Cdn.renders`).
"""

from __future__ import annotations

import functools
import hashlib
import json

import anyio
from aiohttp import web

from stableaudio_async.emulator.audio import CONTENT_TYPES, render_audio
from stableaudio_async.emulator.faults import CDN_PREFIX, FaultInjector
from stableaudio_async.emulator.state import SHORT_MARKER, EmulatedJob, EmulatorState

__all__ = ["Cdn"]


class Cdn:
    """Serves ``GET /cdn/{provider}/{name}`` and renders every job's audio."""

    #: The route's path, under the faults' CDN prefix.
    PATH = CDN_PREFIX + "{provider}/{name}"

    def __init__(self, state: EmulatorState, faults: FaultInjector) -> None:
        self._state = state
        self._faults = faults
        self._render_slots: anyio.CapacityLimiter | None = None

    def url(self, request: web.Request, job: EmulatedJob) -> str:
        """The job's file on the shared CDN; signed to expire if the provider's URLs do."""
        fmt = str(job.params.get("output_format") or "mp3")
        name = f"{job.request_id}.{fmt}"
        url = f"{request.scheme}://{request.host}{CDN_PREFIX}{job.provider}/{name}"
        query = self._faults.signed_query(job.provider, name)
        return url if query is None else f"{url}?{query}"

    def render(self, job: EmulatedJob) -> tuple[bytes, str]:
        """The job's audio file and its content type; records its checksum as served."""
        data, content_type = self.audio(job)
        self._state.provider_stats(job.provider).served[job.request_id] = \
            hashlib.sha256(data).hexdigest()
        return data, content_type

    async def render_off_loop(self, job: EmulatedJob) -> tuple[bytes, str]:
        """:meth:`render` in a worker thread, so the event loop goes on serving meanwhile."""
        return await anyio.to_thread.run_sync(self.render, job, limiter=self.renders())

    async def audio_off_loop(self, job: EmulatedJob) -> tuple[bytes, str]:
        """:meth:`audio` in a worker thread, as :meth:`render_off_loop`."""
        return await anyio.to_thread.run_sync(self.audio, job, limiter=self.renders())

    def renders(self) -> anyio.CapacityLimiter:
        """The render slots: one render at a time."""
        # Synthesis is Python code holding the GIL, so more threads would not render faster;
        # they would only starve the event loop thread of the GIL, delaying the stamps the
        # rate limit is judged by (by a quarter of a second and more on a busy 2-core
        # machine: a false 429, which on Stability is a 60 s lockout).
        if self._render_slots is None:
            self._render_slots = anyio.CapacityLimiter(1)
        return self._render_slots

    def audio(self, job: EmulatedJob) -> tuple[bytes, str]:
        """The job's audio file and its content type (deterministic in the job's parameters)."""
        fmt = str(job.params.get("output_format") or "mp3")
        bitrate = job.params.get("bitrate")
        kbps = int(str(bitrate).rstrip("kK")) if bitrate else None
        seed = job.params.get("seed")
        duration = float(job.params.get("duration") or 30)
        if SHORT_MARKER in job.prompt:
            duration /= 2
        seed = seed if isinstance(seed, int) else None
        variants = self._state.config.audio_variants
        if variants is None:
            data = render_audio(job.prompt, seed, duration, fmt, bitrate_kbps=kbps)
        else:
            key = hashlib.sha256(json.dumps([job.prompt, seed]).encode()).digest()
            variant = int.from_bytes(key[:8], "big") % variants
            data = _render_variant(variant, duration, fmt, kbps)
        return data, CONTENT_TYPES[fmt]

    async def serve(self, request: web.Request) -> web.StreamResponse:
        """``GET /cdn/{provider}/{name}``: a finished, completed job's file."""
        # Ranges and download faults are applied on the way out, by the faults' middleware.
        provider = request.match_info["provider"]
        name = request.match_info["name"]
        request_id, _, _ext = name.rpartition(".")
        state = self._state
        job = state.jobs.get(request_id)
        if job is None or job.provider != provider or state.phase(job) != "DONE" \
                or job.outcome != "COMPLETED":
            return web.Response(status=404, text="Not Found")
        stats = state.provider_stats(provider)
        if self._faults.url_expired(provider, name, request):
            stats.errors[403] += 1
            stats.injected["url_expiry"] += 1
            return web.Response(status=403, text="Forbidden: the signed URL has expired")
        stats.downloads += 1
        # Rendered off the event loop, so that the stamps the rate limit is judged by are not
        # delayed by the CDN's CPU work.
        data, content_type = await self.render_off_loop(job)
        return web.Response(body=data, content_type=content_type)


@functools.lru_cache(maxsize=16)
def _render_variant(variant: int, duration: float, fmt: str, kbps: int | None) -> bytes:
    """One of a bounded set of renders (``EmulatorConfig.audio_variants``), kept once made."""
    return render_audio(f"variant {variant}", variant, duration, fmt, bitrate_kbps=kbps)
