"""A batch: a dozen jobs on two providers, one line printed per result as each job finishes.

    python examples/batch.py --emulator --out out           # no key, no network
    python examples/batch.py --out out "rain on a tin roof"  # keys from the environment

Exit code 0 when every job's audio is on disk (made now, or already done in ``--out``: a rerun
sends nothing), 1 when any job failed or is still pending, 2 when the batch or the config is
invalid (then nothing was sent).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import sys
from collections.abc import Sequence
from typing import get_args

from providers import add_provider_options, providers

from stableaudio_async import ConfigError, Engine, InvalidBatchError, Job, ProviderName

PROMPTS = [
    "Rain on a tin roof, distant thunder",
    "Warm lo-fi hip hop beat, vinyl crackle, 80 BPM",
    "Heroic orchestral fanfare, brass and timpani",
    "Calm ambient pads and felt piano",
    "Busy street market, voices and footsteps",
    "Retro 8-bit victory jingle",
]
PROVIDERS: list[ProviderName] = ["pixazo", "stability"]


def build_jobs(prompts: Sequence[str], names: Sequence[ProviderName], seeds: int) -> list[Job]:
    """Every prompt × seed, the providers taking turns. A job's id is a hash of its fields, so
    the same batch names the same files and a rerun skips what is done."""
    return [
        Job(provider=names[n % len(names)], prompt=prompt, seed=seed, duration=5)
        for n, (prompt, seed) in enumerate(itertools.product(prompts, range(seeds)))
    ]


async def main(args: argparse.Namespace) -> int:
    jobs = build_jobs(args.prompts or PROMPTS, args.provider or PROVIDERS, args.seeds)
    failed = 0
    # aclosing(): leaving the loop early (break, an exception, Ctrl-C) closes the batch at once
    # (its jobs cancelled, submits on the wire recorded first) rather than whenever the
    # generator is garbage-collected.
    async with providers(args) as (settings, env), \
            Engine(settings, out_dir=args.out, env=env) as engine, \
            contextlib.aclosing(engine.run(jobs)) as results:
        async for result in results:
            # A failed job is yielded like any other; result.raise_for_status() would raise
            # its typed error instead.
            where = result.path if result.ok else f"{result.error_type}: {result.error}"
            print(f"{result.status:<9} {result.provider:<9} {result.id}  {where}", flush=True)
            failed += not result.ok
    print(f"{len(jobs) - failed} of {len(jobs)} jobs have their audio in {args.out}/")
    return 1 if failed else 0


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("prompts", nargs="*", help="prompts (default: a built-in half dozen)")
    parser.add_argument("--out", default="out", help="output folder (default: out)")
    parser.add_argument("--provider", action="append", choices=get_args(ProviderName),
                        help="repeat for several (default: pixazo and stability, taking turns)")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per prompt (default: 2)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the engine's log")
    add_provider_options(parser)
    args = parser.parse_args()
    # The library prints nothing; its events go to stdlib logging, under "stableaudio_async".
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        return asyncio.run(main(args))
    except (InvalidBatchError, ConfigError) as exc:  # raised before anything is sent
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
