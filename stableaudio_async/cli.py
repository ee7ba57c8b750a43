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
import sys
import time
import tomllib
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
from rich.table import Table

from stableaudio_async import __version__
from stableaudio_async.batch import LocatedJob, load_batch
from stableaudio_async.config import Settings, load_settings
from stableaudio_async.emulator import Emulator, EmulatorConfig
from stableaudio_async.engine import Engine, ProviderProgress
from stableaudio_async.errors import ConfigError, InvalidBatchError, StableAudioError
from stableaudio_async.models import JobResult
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
        table.add_row(name, str(p.waiting), str(p.queued), str(p.running), str(p.downloading),
                      str(p.completed), str(p.failed), rate)
    return table


def _print_summary(console: Console, results: Sequence[JobResult], elapsed: float,
                   out_dir: Path) -> None:
    completed = sum(r.ok for r in results)
    failed = [r for r in results if not r.ok]
    console.print(
        f"{len(results)} job(s) in {elapsed:.1f} s: {completed} completed, {len(failed)} failed; "
        f"audio and manifest.jsonl in {out_dir}"
    )
    for result in failed[:20]:
        console.print(f"  failed {result.id} ({result.provider}): {result.error}")
    if len(failed) > 20:
        console.print(f"  … and {len(failed) - 20} more (see manifest.jsonl)")


async def _run_batch(
    settings: Settings,
    jobs: Sequence[LocatedJob],
    out_dir: Path,
    *,
    env: Mapping[str, str],
    console: Console,
    live: bool,
) -> int:
    started = time.monotonic()
    results: list[JobResult] = []
    async with Engine(settings, out_dir=out_dir, env=env) as engine:
        engine.prepare(jobs)  # the whole batch and every key it needs, before any request
        if live:
            with Live(_progress_table({}, 0.0), console=console, refresh_per_second=4,
                      transient=False) as display:

                async def refresh() -> None:
                    while True:
                        display.update(_progress_table(engine.progress(),
                                                       time.monotonic() - started))
                        await anyio.sleep(0.25)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(refresh)
                    async for result in engine.run(jobs):
                        results.append(result)
                    tg.cancel_scope.cancel()
                display.update(_progress_table(engine.progress(), time.monotonic() - started))
        else:
            async for result in engine.run(jobs):
                results.append(result)
    _print_summary(console, results, time.monotonic() - started, out_dir)
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


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
    return anyio.run(lambda: _run_batch(settings, jobs, out_dir, env=env, console=console,
                                        live=live))


# -- commands --------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    """Run a batch file against the configured providers."""
    settings = load_settings(args.config)
    jobs = load_batch(args.batch, settings)
    return _execute(settings, jobs, Path(args.out), args, os.environ)


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
    try:
        return EmulatorConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid emulator config: {exc}") from exc


def cmd_emulator(args: argparse.Namespace) -> int:
    """Serve every emulated provider on one port until interrupted."""
    config = _emulator_config(args)
    configure_logging(fmt=args.log_format, level=_LEVELS[args.log_level], secrets=[],
                      stream=sys.stderr)

    async def main() -> int:
        async with Emulator(config, host=args.host, port=args.port) as emu:
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
    run.set_defaults(func=cmd_run)

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
