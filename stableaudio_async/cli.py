"""The ``stableaudio-async`` command line; the only place that configures logging.

Commands: ``run`` a batch, serve the provider ``emulator``, or run the ``demo`` (a real batch
against an in-process emulator), or show a batch's ``status``. Exit codes (``status`` too): 0
all jobs completed, 1 some failed or pending, 2 invalid input or config (nothing submitted),
130 interrupted. With ``--log-format json`` everything on stderr is a JSON line, the last
being the run's summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import ssl
import sys
import time
import tomllib
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
from anyio.from_thread import start_blocking_portal
from pydantic import ValidationError
from rich.console import Console

from stableaudio_async import __version__
from stableaudio_async.batch import MAX_JOBS, LocatedJob, dropped_fields, load_batch
from stableaudio_async.bookkeeping import spent_usd
from stableaudio_async.budget import price_usd
from stableaudio_async.cli_logging import announce, configure_logging, reset_logging
from stableaudio_async.config import Settings, load_settings
from stableaudio_async.emulator import Emulator, EmulatorConfig
from stableaudio_async.engine import Engine
from stableaudio_async.errors import ConfigError, InvalidBatchError, StableAudioError
from stableaudio_async.journal import JobState, read_records
from stableaudio_async.listings import (
    all_completed,
    print_dry_run,
    print_providers,
    print_status,
    print_status_json,
)
from stableaudio_async.logs import get_logger
from stableaudio_async.models import JobResult
from stableaudio_async.providers import ADAPTERS, Range
from stableaudio_async.render import LiveProgress, print_summary, summary_event

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130

log = get_logger(__name__)


def _known_secrets(settings: Settings, env: Mapping[str, str]) -> list[str]:
    return [key for p in settings.providers.values() if (key := p.api_key(env))]


#: After the first Ctrl-C or SIGTERM, how long submits already on the wire may take to be
#: answered (so their request ids reach the journal) before the run is cut short.
STOP_GRACE_SECONDS = 3.0


def _notice(console: Console | None, event: str, text: str, **fields: Any) -> None:
    """Something the CLI tells its user: ``text`` on the console, or (``console`` is
    ``None``: ``--log-format json``) the ``event`` as a JSON line."""
    if console is None:
        announce(event, level=logging.WARNING, message=text, **fields)
    else:
        console.print(text, soft_wrap=True, markup=False, highlight=False)


async def _watch_signals(engine: Engine, console: Console | None, stopped: list[bool]) -> None:
    """First SIGINT/SIGTERM: stop submitting, let in-flight submits land, end the run.

    A second one exits at once; the journal (SQLite, synchronous commits) survives that.
    """
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            if stopped:
                _notice(console, "run.exiting", "second signal: exiting now", signal=name)
                os._exit(EXIT_INTERRUPTED)
            stopped.append(True)
            _notice(console, "run.stopping",
                    f"{name}: no new submissions; in-flight jobs are recorded and resume on "
                    "the next run (again to exit at once)", signal=name)
            engine.stop()
            with anyio.move_on_after(STOP_GRACE_SECONDS):
                await engine.submits_settled()
            engine.abort()


async def _refresh(display: LiveProgress, engine: Engine, started: float) -> None:
    while True:
        display.update(engine.progress(), time.monotonic() - started)
        await anyio.sleep(0.25)


async def _run_batch(
    settings: Settings,
    jobs: Sequence[LocatedJob],
    out_dir: Path,
    *,
    env: Mapping[str, str],
    console: Console,
    live: bool,
    json_lines: bool = False,
    force: bool = False,
    max_cost_usd: float | None = None,
) -> int:
    started = time.monotonic()
    results: list[JobResult] = []
    stopped: list[bool] = []
    async with Engine(settings, out_dir=out_dir, env=env, force=force,
                      max_cost_usd=max_cost_usd) as engine:
        engine.prepare(jobs)  # the whole batch and every key it needs, before any request
        display = LiveProgress.for_batch(console, settings, jobs) if live else None
        async with anyio.create_task_group() as tg:
            tg.start_soon(_watch_signals, engine, None if json_lines else console, stopped)
            with display or nullcontext():
                if display is not None:
                    tg.start_soon(_refresh, display, engine, started)
                async for result in engine.run(jobs):
                    results.append(result)
                    if display is not None:
                        display.record(result)
                if display is not None:
                    display.update(engine.progress(), time.monotonic() - started)
            tg.cancel_scope.cancel()
    if stopped:
        code = EXIT_INTERRUPTED
    else:
        done = len(results) == len(jobs) and all(r.ok for r in results)
        code = EXIT_OK if done else EXIT_FAILED
    spent = None if max_cost_usd is None else await anyio.to_thread.run_sync(_spent_usd, out_dir)
    summary: dict[str, Any] = {
        "total": len(jobs), "interrupted": bool(stopped), "dropped": dropped_fields(jobs),
        "progress": engine.progress(), "max_cost_usd": max_cost_usd, "spent_usd": spent}
    elapsed = time.monotonic() - started
    if json_lines:
        fields = summary_event(results, elapsed, out_dir, exit_code=code, **summary)
        announce(fields.pop("event"), **fields)
    else:
        print_summary(console, results, elapsed, out_dir, **summary)
    return code


def _spent_usd(out_dir: Path) -> float:
    """What the finished jobs of ``out_dir`` have cost, as the ``--max-cost`` cap counts it."""
    return spent_usd(read_records(out_dir))


def _execute(
    settings: Settings,
    jobs: Sequence[LocatedJob],
    out_dir: Path,
    args: argparse.Namespace,
    env: Mapping[str, str],
) -> int:
    console = Console(stderr=True)
    # JSON lines are for machines: a live display drawn between them would garble them.
    live = console.is_terminal and not args.no_progress and args.log_format != "json"
    level = logging.WARNING if live and args.log_level == "info" else _LEVELS[args.log_level]
    configure_logging(fmt=args.log_format, level=level,
                      secrets=_known_secrets(settings, env), stream=sys.stderr)
    force = getattr(args, "force", False)
    max_cost = getattr(args, "max_cost", None)
    return anyio.run(lambda: _run_batch(settings, jobs, out_dir, env=env, console=console,
                                        live=live, json_lines=args.log_format == "json",
                                        force=force, max_cost_usd=max_cost))


def _dry_run(settings: Settings, jobs: Sequence[LocatedJob], out_dir: Path) -> int:
    """Print every job, its provider and price, and the totals; send nothing."""
    done = {r.job_id for r in read_records(out_dir) if r.state is JobState.COMPLETED}
    print_dry_run(settings, jobs, done)
    return EXIT_OK


# -- commands --------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    """Run a batch file against the configured providers."""
    settings = load_settings(args.config)
    if args.drop_unsupported:
        settings = settings.model_copy(update={"unsupported": "drop"})
    jobs = load_batch(args.batch, settings, max_jobs=args.max_jobs)
    if args.dry_run:
        return _dry_run(settings, jobs, Path(args.out))
    if args.max_cost is not None:
        unpriced = sorted({i.job.provider for i in jobs if price_usd(i.job, settings) is None})
        if unpriced:
            raise ConfigError(
                f"--max-cost needs a price for every job; none is known for "
                f"{', '.join(unpriced)} (set providers.<name>.price_usd in the config)")
    return _execute(settings, jobs, Path(args.out), args, os.environ)


def cmd_status(args: argparse.Namespace) -> int:
    """Show a batch's state from its journal: jobs per state and provider, what is left.
    Exits 0 when every job is completed, 1 when some failed or are unfinished."""
    records = read_records(Path(args.out))
    if not records:
        print(f"error: no journal in {args.out}", file=sys.stderr)
        return EXIT_INVALID
    if args.json:
        print_status_json(records)
    else:
        print_status(records)
    # As `run` exits: 0 only when every job has its audio.
    return EXIT_OK if all_completed(records) else EXIT_FAILED


def _demo_batch() -> Path:
    return Path(str(resources.files("stableaudio_async").joinpath("demo.toml")))


def cmd_demo(args: argparse.Namespace) -> int:
    """Run a batch against an in-process emulator: real audio on disk, no key, no network."""
    jobs = load_batch(args.batch or _demo_batch())
    config = EmulatorConfig(time_scale=args.time_scale)
    base = load_settings(args.config)

    # The emulator serves from a thread of its own (as a separate process would), and the
    # batch runs here in the main thread, where Ctrl-C lands.
    with start_blocking_portal() as portal:
        emu = Emulator(config)
        portal.call(emu.start)
        try:
            settings = emu.client_settings(base)
            env = {p.api_key_env: config.api_key for p in settings.providers.values()}
            if args.log_format == "json":
                announce("demo.emulator_listening", url=emu.url, time_scale=config.time_scale)
            else:
                print(f"emulator listening on {emu.url} (time scale {config.time_scale})",
                      file=sys.stderr)
            return _execute(settings, jobs, Path(args.out), args, env)
        finally:
            portal.call(emu.stop)


def _bounds(span: Range) -> dict[str, float]:
    """An inclusive range as numbers (whole ones for integer fields)."""
    if span.integer:
        return {"min": int(span.lo), "max": int(span.hi)}
    return {"min": span.lo, "max": span.hi}


def describe_providers(settings: Settings, env: Mapping[str, str]) -> list[dict[str, Any]]:
    """Every known provider: tasks, models with their ranges, limits, and whether its key is set."""
    described = []
    for name, adapter in sorted(ADAPTERS.items()):
        configured = settings.providers.get(name)
        models = {}
        for model, spec in sorted(adapter.models.items()):
            models[model] = {
                "tasks": sorted(spec.tasks),
                "ranges": {field: _bounds(r) for field, r in sorted(spec.ranges.items())},
                "formats": sorted(spec.formats),
                "default": model == adapter.default_model,
            }
        entry: dict[str, Any] = {"name": name, "models": models,
                                 "synchronous": adapter.synchronous,
                                 "local_audio": adapter.local_audio, "configured": False}
        if configured is not None:
            limit = configured.rate_limit
            entry |= {
                "configured": True,
                "base_url": configured.base_url,
                "api_key_env": configured.api_key_env,
                "key_set": configured.api_key(env) is not None,
                "rate_limit": None if limit is None else
                f"{limit.requests} {limit.counts} / {limit.period:g} s"
                + (f", lockout {limit.lockout:g} s" if limit.lockout else ""),
                "max_in_flight": configured.max_in_flight,
            }
        described.append(entry)
    return described


def cmd_providers(args: argparse.Namespace) -> int:
    """List each provider: tasks, models, parameter ranges, limits and whether its key is set."""
    described = describe_providers(load_settings(args.config), os.environ)
    if args.json:
        print(json.dumps(described, indent=2))
        return EXIT_OK
    print_providers(described)
    return EXIT_OK


def _emulator_config(args: argparse.Namespace) -> EmulatorConfig:
    data: dict[str, Any] = {}
    if args.config:
        try:
            with open(args.config, "rb") as fh:
                data = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read emulator config {args.config}: {exc}") from exc
        except RecursionError as exc:
            raise ConfigError(f"emulator config {args.config} is nested too deeply") from exc
    if args.time_scale is not None:
        data["time_scale"] = args.time_scale
    if args.api_key is not None:
        data["api_key"] = args.api_key
    for given in args.reading or ():
        provider, _, reading = given.rpartition("=")
        data.setdefault("readings", {})[provider or "*"] = reading
    try:
        return EmulatorConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid emulator config: {exc}") from exc


def cmd_emulator(args: argparse.Namespace) -> int:
    """Serve every emulated provider on one port until interrupted."""
    config = _emulator_config(args)
    configure_logging(fmt=args.log_format, level=_LEVELS[args.log_level], secrets=[],
                      stream=sys.stderr)

    tls = None
    if args.certfile:
        # For clients that speak only https (fal-client's queue): a certificate the client
        # trusts, e.g. from a test CA handed to it through SSL_CERT_FILE.
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            tls.load_cert_chain(args.certfile, args.keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load --certfile/--keyfile: {exc}") from exc

    async def main() -> int:
        async with Emulator(config, host=args.host, port=args.port, ssl_context=tls) as emu:
            print(f"emulator listening on {emu.url} (time scale {config.time_scale})",
                  flush=True)
            key = "emulator-key" if args.api_key is None else "<the --api-key value>"
            for name, provider in sorted(load_settings(env={}).providers.items()):
                print(f"  export STABLEAUDIO_{name.upper()}_BASE_URL={emu.url} "
                      f"{provider.api_key_env}={key}", flush=True)
            await anyio.sleep_forever()
        return EXIT_OK

    return anyio.run(main)


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="out", help="output folder (default: out)")
    parser.add_argument("--config", help="providers TOML file (default: built-in settings, "
                                         "the same as configs/providers.toml)")
    parser.add_argument("--log-format", choices=("console", "json"), default="console",
                        help="json: JSON lines only on stderr, the last the run's summary")
    parser.add_argument("--log-level", choices=tuple(_LEVELS), default="info")
    parser.add_argument("--no-progress", action="store_true",
                        help="plain log lines even on a terminal")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every command."""
    parser = argparse.ArgumentParser(prog="stableaudio-async", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a batch (JSONL or TOML)")
    run.add_argument("batch", help="batch file: .jsonl (one job per line) or .toml")
    _add_output_options(run)
    run.add_argument("--dry-run", action="store_true",
                     help="validate the batch and print jobs, providers and estimated cost; "
                          "send nothing")
    run.add_argument("--max-cost", type=float, metavar="USD",
                     help="never let spent plus in-flight cost (this output folder) exceed "
                          "this many dollars; the rest stay pending and resumable")
    run.add_argument("--max-jobs", type=_positive_int, default=MAX_JOBS, metavar="N",
                     help=f"refuse a batch of more than N jobs (default {MAX_JOBS:,})")
    run.add_argument("--force", action="store_true",
                     help="regenerate jobs already completed in the output folder")
    run.add_argument("--drop-unsupported", action="store_true",
                     help="leave out job fields a provider does not take (e.g. seed on AI/ML "
                          "API) instead of refusing the batch; the summary names them")
    run.set_defaults(func=cmd_run)

    status = commands.add_parser("status", help="show a batch's state from its journal")
    status.add_argument("--out", default="out", help="output folder (default: out)")
    status.add_argument("--json", action="store_true",
                        help="one JSON document: every job (state, request id, last "
                             "outcome) and the totals")
    status.set_defaults(func=cmd_status)

    demo = commands.add_parser("demo", help="run a demo batch against the built-in emulator")
    demo.add_argument("batch", nargs="?", help="batch file (default: the packaged demo batch)")
    demo.add_argument("--time-scale", type=float, default=0.2,
                      help="real seconds per emulated second (default: 0.2)")
    _add_output_options(demo)
    demo.set_defaults(func=cmd_demo)

    providers = commands.add_parser(
        "providers", help="list providers: tasks, models, ranges, limits, key set or not")
    providers.add_argument("--config", help="providers TOML file (default: built-in settings)")
    providers.add_argument("--json", action="store_true", help="machine-readable output")
    providers.set_defaults(func=cmd_providers)

    emulator = commands.add_parser("emulator", help="serve the provider emulator")
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument("--port", type=int, default=8750)
    emulator.add_argument("--time-scale", type=float, default=None)
    emulator.add_argument("--api-key", default=None,
                          help="the key the emulator accepts (default: emulator-key)")
    emulator.add_argument("--config", help="emulator TOML (EmulatorConfig fields)")
    emulator.add_argument("--reading", action="append", metavar="[PROVIDER=]strict|loose",
                          help="how to answer where the documentation allows two readings "
                               "(default strict; repeatable; no PROVIDER: every provider)")
    emulator.add_argument("--certfile", help="serve https with this certificate (PEM)")
    emulator.add_argument("--keyfile", help="the certificate's private key (PEM), if apart")
    emulator.add_argument("--log-format", choices=("console", "json"), default="console")
    emulator.add_argument("--log-level", choices=tuple(_LEVELS), default="info")
    emulator.set_defaults(func=cmd_emulator)
    return parser


def _error(json_lines: bool, exc: StableAudioError, code: int) -> int:
    """Report what ended the command before (or instead of) its summary; return ``code``."""
    if not json_lines:
        print(f"error: {exc}", file=sys.stderr)
        return code
    fields: dict[str, Any] = {"error": str(exc), "error_type": type(exc).__name__}
    if isinstance(exc, InvalidBatchError):
        fields["issues"] = [{"source": i.source, "line": i.line, "job_id": i.job_id,
                             "field": i.field, "message": i.message} for i in exc.issues]
    announce("run.error", level=logging.ERROR, **fields, exit_code=code)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stableaudio-async`` console script."""
    args = build_parser().parse_args(argv)
    fmt = getattr(args, "log_format", None)
    json_lines = fmt == "json"
    if fmt is not None:
        # From the start, so that whatever is said before the run (an invalid batch) is said
        # in the chosen format; the run itself configures again, with its keys to redact.
        configure_logging(fmt=fmt, level=_LEVELS[args.log_level], secrets=(),
                          stream=sys.stderr)
    try:
        code: int = args.func(args)
    except (InvalidBatchError, ConfigError) as exc:
        return _error(json_lines, exc, EXIT_INVALID)
    except StableAudioError as exc:
        return _error(json_lines, exc, EXIT_FAILED)
    except KeyboardInterrupt:
        if json_lines:
            announce("run.interrupted", level=logging.WARNING, exit_code=EXIT_INTERRUPTED)
        else:
            print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        reset_logging()
    return code


if __name__ == "__main__":
    sys.exit(main())
