"""COMPARISON BASELINE — not part of stableaudio-async.

What a competent Python user would write *without* our engine to generate audio in bulk:
aiohttp with one shared session, aiolimiter for pacing, tenacity for retries, every job
started at once under ``asyncio.gather``, and fixed-interval polling. The benchmarks run it
against the emulator next to the engine, so it is meant to be fair, not a straw man: downloads
stream to disk in chunks, 429/5xx/connection errors are retried with jittered exponential
backoff (honouring Retry-After when the server sends one), and the pacing is chosen to stay
under the providers' sliding-window limits.

Providers: ``stability`` (synchronous: the POST reply is the audio) and ``pixazo`` (submit,
then poll the ``polling_url`` until COMPLETED, then download the file from the CDN).

Prints one JSON object on stdout. Needs the ``bench`` extra (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import time
from pathlib import Path

import aiohttp
from aiolimiter import AsyncLimiter
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

STABILITY_PATH = "/v2beta/audio/stable-audio-2/text-to-audio"
PIXAZO_ROUTE = "stable-audio-3-small-music-text-to-audio"
PIXAZO_PATH = f"/{PIXAZO_ROUTE}/v1/{PIXAZO_ROUTE}-request"
CHUNK = 64 * 1024


class Retryable(Exception):
    """A 429 or 5xx reply, with the server's Retry-After in seconds if it sent one."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


class JobFailed(Exception):
    """The provider reported the generation as FAILED or ERROR."""


_backoff = wait_exponential_jitter(initial=1, max=30, jitter=1)


def _wait(state: RetryCallState) -> float:
    """Retry-After when the server gave one, else exponential backoff with jitter."""
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, Retryable) and exc.retry_after is not None:
        return exc.retry_after
    return _backoff(state)


def _retry_after(resp: aiohttp.ClientResponse) -> float | None:
    try:
        return max(0.0, float(resp.headers["Retry-After"]))
    except (KeyError, ValueError):
        return None  # absent, or an HTTP date: fall back to backoff


class Baseline:
    def __init__(self, args: argparse.Namespace, session: aiohttp.ClientSession) -> None:
        self.args = args
        self.session = session
        self.base = args.url.rstrip("/")
        # One request every P/R seconds, never a burst. Both providers document a *sliding*
        # window (Stability's also locks the key out for 60 s when it overflows). AsyncLimiter(R, P)
        # is a leaky bucket that lets R through at once and then R/P per second, so some window
        # of P seconds would see up to ~2R requests; a capacity of one sends at most R in any
        # window of P (arrival jitter at the server can still, rarely, squeeze one in early).
        self.limiter = AsyncLimiter(1, args.rate_period / args.rate_requests)
        self.stats = {"requests": 0, "polls": 0, "http_429": 0, "bytes": 0}

    def retrying(self) -> AsyncRetrying:
        return AsyncRetrying(
            stop=stop_after_attempt(5),
            wait=_wait,
            retry=retry_if_exception_type(
                (Retryable, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError)),
            reraise=True,
        )

    def send(self, method: str, url: str, **kwargs):
        self.stats["requests"] += 1  # counted when sent, answered or not
        return self.session.request(method, url, **kwargs)

    def check(self, resp: aiohttp.ClientResponse) -> None:
        if resp.status == 429:
            self.stats["http_429"] += 1
        if resp.status == 429 or resp.status >= 500:
            raise Retryable(resp.status, _retry_after(resp))
        resp.raise_for_status()  # any other 4xx is our bug: retrying will not help

    async def save(self, resp: aiohttp.ClientResponse, path: Path) -> None:
        written = 0
        # Plain blocking writes: 64 KiB into the page cache takes microseconds, and aiofiles
        # would send every chunk through a thread pool for no gain.
        with path.open("wb") as f:
            async for chunk in resp.content.iter_chunked(CHUNK):
                f.write(chunk)
                written += len(chunk)
        self.stats["bytes"] += written  # counted once the file is whole, so retries do not

    def path(self, i: int) -> Path:
        return Path(self.args.out) / f"{i}.{self.args.output_format}"

    async def stability(self, i: int) -> None:
        headers = {"Authorization": f"Bearer {self.args.key}", "Accept": "audio/*"}
        async for attempt in self.retrying():
            with attempt:
                # Multipart even with no file part, as the API requires; and a FormData is
                # consumed by the request, so one per try.
                form = aiohttp.FormData(default_to_multipart=True)
                for name, value in (("prompt", f"bench {i}"), ("duration", f"{self.args.duration:g}"),
                                    ("seed", str(i + 1)), ("model", "stable-audio-2.5"),
                                    ("output_format", self.args.output_format), ("steps", "8")):
                    form.add_field(name, value)
                await self.limiter.acquire()
                async with self.send("POST", self.base + STABILITY_PATH, data=form,
                                     headers=headers) as resp:
                    self.check(resp)
                    await self.save(resp, self.path(i))

    async def pixazo(self, i: int) -> None:
        headers = {"Ocp-Apim-Subscription-Key": self.args.key, "Cache-Control": "no-cache"}
        body = {"prompt": f"bench {i}", "duration": self.args.duration, "seed": i + 1,
                "output_format": self.args.output_format}
        async for attempt in self.retrying():
            with attempt:
                await self.limiter.acquire()
                async with self.send("POST", self.base + PIXAZO_PATH, json=body,
                                     headers=headers) as resp:
                    self.check(resp)
                    polling_url = (await resp.json())["polling_url"]
        while True:
            await asyncio.sleep(self.args.poll_interval)
            async for attempt in self.retrying():
                with attempt:
                    if self.args.counts == "all":  # Pixazo's limit counts polls too
                        await self.limiter.acquire()
                    self.stats["polls"] += 1
                    async with self.send("GET", polling_url, headers=headers) as resp:
                        self.check(resp)
                        status = await resp.json()
            word = str(status.get("status", "")).upper()
            if word in ("FAILED", "ERROR"):
                raise JobFailed(f"job {i}: {word}: {status.get('error')}")
            if word == "COMPLETED":
                break
        urls = status["output"]["media_url"]
        url = urls if isinstance(urls, str) else urls[0]
        async for attempt in self.retrying():
            with attempt:
                # The CDN is not behind the gateway's limit, and gets no key.
                async with self.send("GET", url) as resp:
                    self.check(resp)
                    await self.save(resp, self.path(i))


async def run(args: argparse.Namespace) -> tuple[list[BaseException | None], dict[str, int]]:
    # No pool limit: a Stability request holds its connection for the whole generation, so
    # the connections in use are rate × generation time (15 requests/s × 10 s = 150). aiohttp's
    # default limit of 100 would cap throughput below the rate limit and, worse, queue
    # requests after the limiter let them go, so they would leave in bursts. Concurrency is
    # bounded by --concurrency instead, if asked.
    connector = aiohttp.TCPConnector(limit=0)
    # No total timeout: a held Stability request may take minutes. sock_read bounds silence.
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300)
    slots = asyncio.Semaphore(args.concurrency) if args.concurrency > 0 else contextlib.nullcontext()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        client = Baseline(args, session)
        job = client.stability if args.provider == "stability" else client.pixazo

        async def one(i: int) -> None:
            async with slots:
                await job(i)

        results = await asyncio.gather(*(one(i) for i in range(args.jobs)), return_exceptions=True)
    return list(results), client.stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--provider", choices=("stability", "pixazo"), required=True)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--duration", type=float, default=1.0)
    parser.add_argument("--output-format", choices=("mp3", "wav"), default="mp3")
    parser.add_argument("--rate-requests", type=int, required=True)
    parser.add_argument("--rate-period", type=float, required=True, help="real seconds")
    parser.add_argument("--counts", choices=("submits", "all"), default="submits")
    parser.add_argument("--poll-interval", type=float, default=1.0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--concurrency", type=int, default=0, help="jobs in flight; 0 = unlimited")
    args = parser.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)

    with open("/proc/self/statm") as fh:
        rss_before = int(fh.read().split()[1]) * resource.getpagesize() / 1024**2
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    results, stats = asyncio.run(run(args))
    wall = time.monotonic() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    errors = [r for r in results if isinstance(r, BaseException)]
    print(json.dumps({
        "client": "baseline",
        "provider": args.provider,
        "jobs": args.jobs,
        "completed": len(results) - len(errors),
        "failed": len(errors),
        "wall_seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "cpu_ms_per_job": round(cpu * 1000 / max(args.jobs, 1), 3),
        "cpu_user_seconds": round(cpu1.ru_utime - cpu0.ru_utime, 3),
        "cpu_system_seconds": round(cpu1.ru_stime - cpu0.ru_stime, 3),
        "rss_before_mb": round(rss_before, 1),
        "max_rss_mb": round(cpu1.ru_maxrss / 1024, 1),
        **stats,
        "first_error": repr(errors[0]) if errors else None,
    }))


if __name__ == "__main__":
    main()
