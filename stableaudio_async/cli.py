"""The ``stableaudio-async`` command line; the only place that configures logging.

Commands: ``run`` a batch, serve the provider ``emulator``, or run the ``demo`` (a real batch
against an in-process emulator). Exit codes: 0 all jobs completed, 1 some failed, 2 invalid
input or config (nothing submitted), 130 interrupted.
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
from collections import Counter
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import anyio
import structlog
from anyio.from_thread import start_blocking_portal
from pydantic import ValidationError
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from stableaudio_async import __version__
from stableaudio_async.batch import LocatedJob, dropped_fields, load_batch
from stableaudio_async.budget import estimate, price_usd
from stableaudio_async.config import Settings, load_settings
from stableaudio_async.emulator import Emulator, EmulatorConfig
from stableaudio_async.engine import Engine, ProviderProgress
from stableaudio_async.errors import ConfigError, InvalidBatchError, StableAudioError
from stableaudio_async.journal import JobState, read_records
from stableaudio_async.models import JobResult, JobStatus
from stableaudio_async.providers import ADAPTERS

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130

REDACTED = "[REDACTED]"
_SECRET_FIELDS = ("api_key", "apikey", "authorization", "subscription-key", "token", "secret")

log = structlog.get_logger("stableaudio_async.cli")


# -- logging ---------------------------------------------------------------------------------


class SecretRedactor:
    """A structlog processor that blanks every known secret value, wherever it appears.

    It sees the event after exceptions are formatted, so tracebacks are covered too.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a key that contains another is blanked whole.
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self.secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, Mapping):
            return {k: self.scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.scrub(v) for v in value)
        return value

    def __call__(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in list(event):
            if any(word in key.lower() for word in _SECRET_FIELDS):
                event[key] = REDACTED
            else:
                event[key] = self.scrub(event[key])
        return event


def configure_logging(*, fmt: str, level: int, secrets: Iterable[str], stream: TextIO) -> None:
    """Console or JSON lines on ``stream``, at ``level``, with ``secrets`` redacted."""
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            SecretRedactor(secrets),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


def _known_secrets(settings: Settings, env: Mapping[str, str]) -> list[str]:
    return [key for p in settings.providers.values() if (key := p.api_key(env))]


# -- progress --------------------------------------------------------------------------------


def _progress_table(progress: Mapping[str, ProviderProgress], elapsed: float) -> Table:
    table = Table(title=f"stableaudio-async · {elapsed:5.1f} s", title_justify="left")
    for column in ("provider", "waiting", "queued", "running", "downloading", "done", "failed",
                   "req/s"):
        table.add_column(column, justify="left" if column == "provider" else "right")
    for name, p in sorted(progress.items()):
        rate = f"{p.rate:.1f}" + (f" / {p.rate_limit:.1f}" if p.rate_limit else "")
        if p.allowed_rate is not None and p.rate_limit and p.allowed_rate < p.rate_limit - 1e-9:
            rate += f" (slowed to {p.allowed_rate:.1f} after 429s)"
        table.add_row(name, str(p.waiting), str(p.queued), str(p.running), str(p.downloading),
                      str(p.completed), str(p.failed), rate)
    return table


def _print_summary(console: Console, results: Sequence[JobResult], elapsed: float,
                   out_dir: Path, *, total: int, interrupted: bool = False,
                   dropped: Mapping[str, Mapping[str, int]] | None = None) -> None:
    counts = Counter(r.status for r in results)
    failed = [r for r in results if r.status is JobStatus.FAILED]
    left = total - counts[JobStatus.COMPLETED] - counts[JobStatus.SKIPPED] - len(failed)
    console.print(
        f"{total} job(s) in {elapsed:.1f} s: {counts[JobStatus.COMPLETED]} completed, "
        f"{counts[JobStatus.SKIPPED]} already done, {len(failed)} failed, {left} left "
        f"to run{' (interrupted)' if interrupted else ''}; audio and manifest.jsonl in {out_dir}"
    )
    for result in failed[:20]:
        # A provider's words: printed as text, never read as markup.
        console.print(f"  failed {result.id} ({result.provider}): {escape(result.error or '')}")
    if len(failed) > 20:
        console.print(f"  … and {len(failed) - 20} more (see manifest.jsonl)")
    pending = [r for r in results if r.status is JobStatus.PENDING]
    undelivered = [r for r in pending if r.pending_reason == "download"]
    held = [r for r in pending if r.pending_reason != "download"]
    if undelivered:
        console.print(f"  {len(undelivered)} job(s) generated but not downloaded yet "
                      f"({escape(undelivered[0].error or '')}): a rerun fetches them by their "
                      "request ids, without submitting them again")
    if held:
        console.print(f"  {len(held)} job(s) held back: {escape(held[0].error or '')}")
    if left:
        console.print("  rerun the same command to pick up where this run stopped")
    for provider, fields in sorted((dropped or {}).items()):
        named = ", ".join(f"{name} ({count} job{'s' if count > 1 else ''})"
                          for name, count in sorted(fields.items()))
        console.print(f"  left out, as {provider} does not take them: {named}")


#: After the first Ctrl-C or SIGTERM, how long submits already on the wire may take to be
#: answered (so their request ids reach the journal) before the run is cut short.
STOP_GRACE_SECONDS = 3.0


async def _watch_signals(engine: Engine, console: Console, stopped: list[bool]) -> None:
    """First SIGINT/SIGTERM: stop submitting, let in-flight submits land, end the run.

    A second one exits at once; the journal (SQLite, synchronous commits) survives that.
    """
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            if stopped:
                console.print("second signal: exiting now")
                os._exit(EXIT_INTERRUPTED)
            stopped.append(True)
            console.print(f"{signal.Signals(signum).name}: no new submissions; in-flight jobs "
                          "are recorded and resume on the next run (again to exit at once)")
            engine.stop()
            with anyio.move_on_after(STOP_GRACE_SECONDS):
                await engine.submits_settled()
            engine.abort()


async def _run_batch(
    settings: Settings,
    jobs: Sequence[LocatedJob],
    out_dir: Path,
    *,
    env: Mapping[str, str],
    console: Console,
    live: bool,
    force: bool = False,
    max_cost_usd: float | None = None,
) -> int:
    started = time.monotonic()
    results: list[JobResult] = []
    stopped: list[bool] = []
    async with Engine(settings, out_dir=out_dir, env=env, force=force,
                      max_cost_usd=max_cost_usd) as engine:
        engine.prepare(jobs)  # the whole batch and every key it needs, before any request
        async with anyio.create_task_group() as tg:
            tg.start_soon(_watch_signals, engine, console, stopped)
            if live:
                with Live(_progress_table({}, 0.0), console=console, refresh_per_second=4,
                          transient=False) as display:

                    async def refresh() -> None:
                        while True:
                            display.update(_progress_table(engine.progress(),
                                                           time.monotonic() - started))
                            await anyio.sleep(0.25)

                    tg.start_soon(refresh)
                    async for result in engine.run(jobs):
                        results.append(result)
                    display.update(_progress_table(engine.progress(),
                                                   time.monotonic() - started))
            else:
                async for result in engine.run(jobs):
                    results.append(result)
            tg.cancel_scope.cancel()
    _print_summary(console, results, time.monotonic() - started, out_dir,
                   total=len(jobs), interrupted=bool(stopped), dropped=dropped_fields(jobs))
    for name, progress in sorted(engine.progress().items()):
        if progress.allowed_rate is not None and progress.rate_limit \
                and progress.allowed_rate < progress.rate_limit - 1e-9:
            console.print(f"  {name}: 429s slowed pacing to {progress.allowed_rate:.2f} "
                          f"requests/s (configured {progress.rate_limit:.2f}); lower its "
                          "rate_limit if this recurs")
    if stopped:
        return EXIT_INTERRUPTED
    return EXIT_OK if len(results) == len(jobs) and all(r.ok for r in results) else EXIT_FAILED


def _execute(
    settings: Settings,
    jobs: Sequence[LocatedJob],
    out_dir: Path,
    args: argparse.Namespace,
    env: Mapping[str, str],
) -> int:
    console = Console(stderr=True)
    live = console.is_terminal and not args.no_progress
    level = logging.WARNING if live and args.log_level == "info" else _LEVELS[args.log_level]
    configure_logging(fmt=args.log_format, level=level,
                      secrets=_known_secrets(settings, env), stream=sys.stderr)
    force = getattr(args, "force", False)
    max_cost = getattr(args, "max_cost", None)
    return anyio.run(lambda: _run_batch(settings, jobs, out_dir, env=env, console=console,
                                        live=live, force=force, max_cost_usd=max_cost))


def _dry_run(settings: Settings, jobs: Sequence[LocatedJob], out_dir: Path) -> int:
    """Print every job, its provider and price, and the totals; send nothing."""
    done = {r.job_id for r in read_records(out_dir) if r.state is JobState.COMPLETED}
    for item in jobs:
        job = item.job
        price = price_usd(job, settings)
        note = " (already done: skipped)" if job.id in done else ""
        cost = f"${price:.4f}" if price is not None else "price unknown"
        print(f"{job.id}  {job.provider}  {job.model or '-'}  {job.task}  {cost}{note}")
    todo = [item.job for item in jobs if item.job.id not in done]
    est = estimate(todo, settings)
    for provider in sorted(est.jobs):
        unpriced = est.unpriced.get(provider, 0)
        print(f"{provider}: {est.jobs[provider]} job(s) to run, "
              f"${est.usd.get(provider, 0.0):.4f}"
              + (f" + {unpriced} without a known price" if unpriced else ""))
    print(f"total: {len(todo)} job(s) to run ({len(jobs) - len(todo)} already done), "
          f"estimated ${est.total_usd:.4f}"
          + (" plus jobs without a known price (set providers.<name>.price_usd)"
             if est.unpriced else ""))
    return EXIT_OK


# -- commands --------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    """Run a batch file against the configured providers."""
    settings = load_settings(args.config)
    if args.drop_unsupported:
        settings = settings.model_copy(update={"unsupported": "drop"})
    jobs = load_batch(args.batch, settings)
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
    """Show a batch's state from its journal: jobs per state and provider, what is left."""
    records = read_records(Path(args.out))
    if not records:
        print(f"no journal in {args.out}")
        return EXIT_INVALID
    if args.json:
        # One object per job: its journal state, and the outcome its last run recorded (the
        # same as its last line in manifest.jsonl).
        for record in records:
            result = record.result
            print(json.dumps({
                "id": record.job_id, "provider": record.provider, "state": record.state.value,
                "request_id": record.request_id, "attempts": record.attempts,
                "possibly_duplicated": record.possibly_duplicated,
                "status": result.status.value if result else None,
                "pending_reason": result.pending_reason if result else None,
                "error": result.error if result else None,
            }))
        return EXIT_OK
    table: dict[str, Counter[str]] = {}
    for record in records:
        table.setdefault(record.provider, Counter())[record.state] += 1
    states = [state.value for state in JobState]
    print("provider".ljust(12) + "".join(state.rjust(12) for state in states))
    for provider, counts in sorted(table.items()):
        print(provider.ljust(12) + "".join(str(counts[state]).rjust(12) for state in states))
    doubtful = [r.job_id for r in records if r.possibly_duplicated]
    if doubtful:
        print(f"possibly duplicated (submit in flight at a crash, sent again): "
              f"{', '.join(doubtful)}")
    unfinished = [r for r in records if r.state not in (JobState.COMPLETED, JobState.FAILED)]
    print(f"{len(records)} job(s): {len(unfinished)} left to finish "
          f"(rerun the same command to resume)" if unfinished else
          f"{len(records)} job(s), all finished")
    return EXIT_OK


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
            print(f"emulator listening on {emu.url} (time scale {config.time_scale})",
                  file=sys.stderr)
            return _execute(settings, jobs, Path(args.out), args, env)
        finally:
            portal.call(emu.stop)


def describe_providers(settings: Settings, env: Mapping[str, str]) -> list[dict[str, Any]]:
    """Every known provider: tasks, models with their ranges, limits, and whether its key is set."""
    described = []
    for name, adapter in sorted(ADAPTERS.items()):
        configured = settings.providers.get(name)
        models = {}
        for model, spec in sorted(adapter.models.items()):
            models[model] = {
                "tasks": sorted(spec.tasks),
                "ranges": {field: str(r) for field, r in sorted(spec.ranges.items())},
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
    for entry in described:
        key = ("set" if entry["key_set"] else "NOT set") if entry["configured"] else "-"
        print(f"{entry['name']}: key {entry.get('api_key_env', '?')} {key}; "
              f"limit {entry.get('rate_limit') or 'none'}; "
              f"max in flight {entry.get('max_in_flight', '-')}; "
              f"{'synchronous' if entry['synchronous'] else 'queued'}; "
              f"local input audio: {entry['local_audio']}")
        for model, info in entry["models"].items():
            ranges = ", ".join(f"{k} {v}" for k, v in info["ranges"].items())
            default = " (default)" if info["default"] else ""
            print(f"  {model}{default}: {', '.join(info['tasks'])}; {ranges}; "
                  f"formats {', '.join(info['formats'])}")
    return EXIT_OK


def _emulator_config(args: argparse.Namespace) -> EmulatorConfig:
    data: dict[str, Any] = {}
    if args.config:
        try:
            with open(args.config, "rb") as fh:
                data = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read emulator config {args.config}: {exc}") from exc
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
    parser.add_argument("--log-format", choices=("console", "json"), default="console")
    parser.add_argument("--log-level", choices=tuple(_LEVELS), default="info")
    parser.add_argument("--no-progress", action="store_true",
                        help="plain log lines even on a terminal")


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
    run.add_argument("--force", action="store_true",
                     help="regenerate jobs already completed in the output folder")
    run.add_argument("--drop-unsupported", action="store_true",
                     help="leave out job fields a provider does not take (e.g. seed on AI/ML "
                          "API) instead of refusing the batch; the summary names them")
    run.set_defaults(func=cmd_run)

    status = commands.add_parser("status", help="show a batch's state from its journal")
    status.add_argument("--out", default="out", help="output folder (default: out)")
    status.add_argument("--json", action="store_true",
                        help="one JSON object per job (state, request id, last outcome)")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stableaudio-async`` console script."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except (InvalidBatchError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except StableAudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code


if __name__ == "__main__":
    sys.exit(main())
