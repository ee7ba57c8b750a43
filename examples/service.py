"""An aiohttp.web service that generates tracks in the background and serves their audio.

    python examples/service.py --emulator --port 8080 --out tracks

    POST /tracks        {"prompt": "...", "duration": 5, "provider": "pixazo"}
                        → 202 {"job_id", "request_id"}, Location: /tracks/<job_id>
    GET  /tracks/<id>   → 202 {"status": ...} while the job runs, then 200 with its audio;
                          502 if it failed, 503 if it was stopped before it finished

The POST answers once the provider has accepted the job and its request id is in the journal
of ``--out``, so a restarted service (same ``--out``) rejoins every job it accepted: GET
attaches to it and follows its request id, never paying for it again. The same prompt and
settings make the same job id, so a repeated POST joins the job rather than starting another.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from providers import add_provider_options, providers

from stableaudio_async import (
    ConfigError,
    Engine,
    InvalidJobError,
    Job,
    JobHandle,
    JobPendingError,
    StableAudioError,
    UnknownJobError,
)

ENGINE = web.AppKey("engine", Engine)
#: This process's handles, by job id: a job it has seen end is answered from here, without
#: another look in the journal.
HANDLES = web.AppKey("handles", dict[str, JobHandle])

routes = web.RouteTableDef()


def error(code: int, message: str, **fields: Any) -> web.Response:
    return web.json_response({"error": message, **fields}, status=code)


@routes.post("/tracks")
async def create_track(request: web.Request) -> web.Response:
    try:
        body = await request.json()
        if not isinstance(body, dict) or "prompt" not in body:
            return error(400, 'expected a JSON object with a "prompt"')
        # Job(...) validates its fields and raises InvalidJobError (also a ValueError).
        job = Job(prompt=body["prompt"], duration=body.get("duration"),
                  provider=body.get("provider", "pixazo"))
        # Returns once the provider has accepted the job and its request id is durable.
        handle = await request.app[ENGINE].submit(job)
    except InvalidJobError as exc:  # a bad field, or one its provider does not take
        return error(400, str(exc), fields=[issue.field for issue in exc.issues])
    except ValueError as exc:  # the body is not JSON
        return error(400, f"invalid JSON: {exc}")
    except ConfigError as exc:  # a provider this service has no key for
        return error(400, str(exc))
    except StableAudioError as exc:  # the provider refused it (a ProviderError)
        return error(502, str(exc))
    request.app[HANDLES][handle.job_id] = handle
    location = request.app.router["track"].url_for(job_id=handle.job_id)
    return web.json_response({"job_id": handle.job_id, "request_id": handle.request_id},
                             status=202, headers={"Location": str(location)})


@routes.get("/tracks/{job_id}", name="track")
async def get_track(request: web.Request) -> web.StreamResponse:
    job_id = request.match_info["job_id"]
    handle = request.app[HANDLES].get(job_id)
    if handle is None:
        try:
            # A job from before a restart: rejoined from the journal, followed by its request id.
            handle = request.app[HANDLES][job_id] = await request.app[ENGINE].attach(job_id)
        except UnknownJobError:
            return error(404, f"no track {job_id}")
    if not handle.done:
        return web.json_response({"job_id": job_id, "status": handle.status()}, status=202,
                                 headers={"Retry-After": "1"})
    try:
        result = await handle.result()  # done: returns at once, or raises the job's error
    except JobPendingError as exc:  # stopped before it finished: a restart resumes it
        return error(503, str(exc), status="held")
    except StableAudioError as exc:
        return error(502, str(exc), status="failed")
    return web.Response(body=await result.read_bytes(),
                        content_type=result.content_type or "application/octet-stream")


def make_app(args: argparse.Namespace) -> web.Application:
    app = web.Application()
    app.add_routes(routes)
    app[HANDLES] = {}

    async def engine_ctx(app: web.Application) -> AsyncIterator[None]:
        # The engine lives as long as the app: opened before the first request, closed after
        # the last (jobs still running are stopped; their request ids stay in the journal).
        async with providers(args) as (settings, env), \
                Engine(settings, out_dir=args.out, env=env) as engine:
            app[ENGINE] = engine
            yield

    app.cleanup_ctx.append(engine_ctx)
    return app


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--out", default="tracks", help="output folder (default: tracks)")
    add_provider_options(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)  # the engine's events and aiohttp's access log
    web.run_app(make_app(args), host=args.host, port=args.port)


if __name__ == "__main__":
    cli()
