"""A batch cut short by a deadline, then resumed by a second engine on the same folder.

    python examples/cancel_resume.py --emulator --out out --cut 0.3

The first run gets ``--cut`` seconds (``asyncio.timeout``). Cancelling it never strands a
submit on the wire: the engine shields each one until the provider's answer, with its request
id, is in the journal of ``--out``, and only then lets the cancellation through. The jobs go
on at the provider. The second run, a new ``Engine`` on the same folder (a rerun, another
process after a crash), reads the journal: jobs done are skipped, jobs accepted are followed
by their request id, and only jobs never accepted are sent. So nothing is paid for twice.

Exit code 0 when every job ended with its audio and none accepted in the first run was sent
again in the second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Mapping

from providers import add_provider_options, providers

from stableaudio_async import Engine, Job, JobEvent, JobStatus, Settings


async def first_run(settings: Settings, env: Mapping[str, str], out: str, jobs: list[Job],
                    cut: float) -> set[str]:
    """Run ``jobs`` for at most ``cut`` seconds; return the ids the provider accepted."""
    accepted: set[str] = set()

    def on_event(event: JobEvent) -> None:
        if event.phase == "submitted":  # accepted, and its request id in the journal
            accepted.add(event.job_id)

    done = 0
    try:
        async with Engine(settings, out_dir=out, env=env) as engine, asyncio.timeout(cut), \
                contextlib.aclosing(engine.run(jobs, on_event=on_event)) as results:
            async for _ in results:
                done += 1
    except TimeoutError:
        # By now the engine is closed, and every submit the provider accepted is journalled.
        print(f"first run: cut short after {cut:g} s with {done} of {len(jobs)} done, "
              f"{len(accepted) - done} accepted and still running, "
              f"{len(jobs) - len(accepted)} never accepted", flush=True)
    else:
        print(f"first run: all {done} done within {cut:g} s", flush=True)
    return accepted


async def second_run(settings: Settings, env: Mapping[str, str], out: str, jobs: list[Job],
                     accepted: set[str]) -> int:
    """Finish ``jobs``: print what was skipped, resumed and sent; return the exit code."""
    sent: set[str] = set()

    def on_event(event: JobEvent) -> None:
        if event.phase == "submitting":  # a submit of this run (a resumed job has none)
            sent.add(event.job_id)

    counts = {"skipped": 0, "resumed": 0, "submitted": 0, "not done": 0}
    async with Engine(settings, out_dir=out, env=env) as engine, \
            contextlib.aclosing(engine.run(jobs, on_event=on_event)) as results:
        async for result in results:
            if not result.ok:
                kind = "not done"
            elif result.status is JobStatus.SKIPPED:
                kind = "skipped"  # done in the first run: its file is there, checksum intact
            elif result.id in sent:
                kind = "submitted"  # never accepted before: sent now
            else:
                kind = "resumed"  # followed by the request id the first run recorded
            counts[kind] += 1
            print(f"{kind:<9} {result.id}  request {result.request_id}", flush=True)
    resubmitted = len(sent & accepted)
    print("second run: " + ", ".join(f"{n} {kind}" for kind, n in counts.items())
          + f"; {resubmitted} resubmitted", flush=True)
    return 0 if counts["not done"] == 0 and resubmitted == 0 else 1


async def main(args: argparse.Namespace) -> int:
    jobs = [Job(provider=args.provider, prompt=f"Field recording, variation {n}", duration=5)
            for n in range(args.jobs)]
    async with providers(args) as (settings, env):
        accepted = await first_run(settings, env, args.out, jobs, args.cut)
        return await second_run(settings, env, args.out, jobs, accepted)


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="out", help="output folder (default: out)")
    parser.add_argument("--provider", default="pixazo", help="a queue-and-poll provider")
    parser.add_argument("--jobs", type=int, default=12, help="jobs in the batch (default: 12)")
    parser.add_argument("--cut", type=float, default=0.3,
                        help="seconds the first run gets (default 0.3: mid-batch against the "
                             "emulator's default time scale)")
    add_provider_options(parser)
    return asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(cli())
