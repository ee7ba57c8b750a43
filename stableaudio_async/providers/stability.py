"""Stability AI's own API: synchronous multipart requests whose reply body is the audio."""

from __future__ import annotations

import base64
import contextlib
import os
import wave
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from stableaudio_async.errors import JobIssue, ProviderUnavailableError
from stableaudio_async.http import FormPart
from stableaudio_async.models import (
    Failed,
    InlineAudio,
    Job,
    RemoteHandle,
    Succeeded,
    Task,
)
from stableaudio_async.providers.base import (
    Adapter,
    AudioStream,
    HttpReply,
    HttpRequest,
    ModelSpec,
    Range,
    check_job,
    error_from_reply,
    local_audio_problem,
)

__all__ = ["MAX_REQUEST_BYTES", "StabilityAdapter"]

#: The API refuses requests over 50 MB; the form fields around the file need a little room.
MAX_REQUEST_BYTES = 50 * 1000 * 1000
_FORM_OVERHEAD = 64 * 1024

_AUDIO_TYPES = {".mp3": "audio/mpeg", ".wav": "audio/wav"}
_FORMATS = frozenset({"mp3", "wav"})
_COMMON = {
    "duration": Range(1, 190),
    "seed": Range(0, 4294967294, integer=True),
    "guidance_scale": Range(1, 25),
    "mask_start": Range(0, 190),
    "mask_end": Range(0, 190),
}
_FIELDS = frozenset({"audio"})

_SA2 = ModelSpec(
    tasks=frozenset({Task.TEXT_TO_AUDIO, Task.AUDIO_TO_AUDIO}),
    ranges={**_COMMON, "steps": Range(30, 100, integer=True), "strength": Range(0, 1)},
    formats=_FORMATS, fields=_FIELDS, prompt_max=10000,
)
_SA25 = ModelSpec(
    tasks=frozenset({Task.TEXT_TO_AUDIO, Task.AUDIO_TO_AUDIO, Task.INPAINT}),
    ranges={**_COMMON, "steps": Range(4, 8, integer=True), "strength": Range(0.01, 1)},
    formats=_FORMATS, fields=_FIELDS, prompt_max=10000,
)

# Form fields the adapter writes from the job's own fields; `options` may add others.
_RESERVED = frozenset({
    "prompt", "model", "duration", "seed", "steps", "cfg_scale", "output_format", "audio",
    "strength", "mask_start", "mask_end",
})
#: Options the adapter reads itself instead of sending them as form fields.
_ACCEPT_OPTION = "accept"
_ACCEPTS = {"audio/*", "application/json"}


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class StabilityAdapter(Adapter):
    """Stable Audio 2 and 2.5 on ``api.stability.ai`` (text-to-audio, audio-to-audio, inpaint)."""

    name = "stability"
    default_model = "stable-audio-2.5"
    models: ClassVar[Mapping[str, ModelSpec]] = {"stable-audio-2": _SA2, "stable-audio-2.5": _SA25}
    synchronous = True
    local_audio = "multipart"
    # "Failed generations are not charged": a 5xx is a failure to retry, not an ambiguity.
    free_failures = True

    @classmethod
    def check(cls, job: Job, spec: ModelSpec) -> list[JobIssue]:
        """The model's ranges, plus the local input file: present, mp3 or wav, under 50 MB."""
        issues = check_job(job, spec, provider=cls.name, reserved=_RESERVED)

        def refuse(name: str, message: str) -> None:
            issues.append(JobIssue(message, job_id=job.id, field=name))

        if job.task is Task.INPAINT:
            if job.guidance_scale is not None:
                refuse("guidance_scale", "inpaint takes no cfg_scale")
            # One bound alone still meets the API's default for the other (30 and 190).
            start = job.mask_start if job.mask_start is not None else 30.0
            end = job.mask_end if job.mask_end is not None else 190.0
            if (job.mask_start is None) != (job.mask_end is None) and start >= end:
                name = "mask_end" if job.mask_start is None else "mask_start"
                refuse(name, f"mask {start:g}–{end:g} is empty (the API's default bound "
                             "is 30 for mask_start, 190 for mask_end)")
        accept = job.options.get(_ACCEPT_OPTION)
        if accept is not None and (not isinstance(accept, str) or accept not in _ACCEPTS):
            refuse(f"options.{_ACCEPT_OPTION}", f"must be one of {', '.join(sorted(_ACCEPTS))}")
        if job.audio is not None and job.task in spec.tasks and job.task is not Task.TEXT_TO_AUDIO:
            problem = _input_file_problem(job.audio, job.task)
            if problem:
                refuse("audio", problem)
        return issues

    def submit_request(self, job: Job, audio_url: str | None = None) -> HttpRequest:
        """POST a multipart form to the task's route, asking for the audio as the reply body."""
        model = self.model_of(job)
        fields: dict[str, Any] = {
            "prompt": job.prompt,
            "duration": job.duration,
            "seed": job.seed,
            "steps": job.steps,
            "output_format": self.output_format(job),
        }
        if job.task is Task.INPAINT:
            # Inpaint always runs 2.5 and takes neither a model nor cfg_scale.
            fields |= {"mask_start": job.mask_start, "mask_end": job.mask_end}
        else:
            # The API's default is stable-audio-2, so the model is always named.
            fields |= {"model": model, "cfg_scale": job.guidance_scale}
        if job.task is Task.AUDIO_TO_AUDIO:
            fields["strength"] = job.strength
        options = dict(job.options)
        accept = str(options.pop(_ACCEPT_OPTION, "audio/*"))
        fields |= options
        parts = [
            FormPart(name, _number(value) if isinstance(value, int | float)
                     and not isinstance(value, bool) else str(value))
            for name, value in fields.items() if value is not None
        ]
        if job.task is not Task.TEXT_TO_AUDIO and job.audio is not None:
            path = Path(job.audio)
            parts.append(FormPart("audio", path=path,
                                  content_type=_AUDIO_TYPES.get(path.suffix.lower())))
        headers = {"authorization": f"Bearer {self._api_key}", "accept": accept}
        url = f"{self.base_url}/v2beta/audio/stable-audio-2/{job.task}"
        return HttpRequest("POST", url, headers, form=parts)

    def audio_stream(self, status: int, headers: Mapping[str, str]) -> AudioStream | None:
        """A 200 with an audio/* body: the audio itself, with its seed and finish reason."""
        content_type = headers.get("content-type", "")
        if status != 200 or not content_type.startswith("audio/"):
            return None
        seed = headers.get("seed", "")
        return AudioStream(
            request_id=headers.get("x-request-id"),
            content_type=content_type.split(";")[0].strip(),
            seed=int(seed) if seed.isdigit() else None,
            finish_reason=headers.get("finish-reason"),
        )

    def parse_submit(self, reply: HttpReply) -> RemoteHandle:
        """The JSON form of a success (base64 audio), or the engine's error for a failure."""
        request_id = reply.headers.get("x-request-id")
        data: Any = None
        with contextlib.suppress(ValueError):
            data = reply.json()
        if reply.status != 200:
            if isinstance(data, dict) and isinstance(data.get("id"), str):
                request_id = request_id or data["id"]
            raise error_from_reply(reply, provider=self.name, request_id=request_id)
        if not isinstance(data, dict) or not isinstance(data.get("audio"), str) \
                or not data["audio"]:
            raise ProviderUnavailableError("200 reply holds neither audio nor base64 JSON",
                                           provider=self.name, request_id=request_id,
                                           status=reply.status)
        seed = data.get("seed")
        finish = data.get("finish_reason")
        finish_reason = finish if isinstance(finish, str) else None
        try:
            audio = base64.b64decode(data["audio"], validate=True)
        except ValueError:  # binascii.Error, or non-ASCII characters
            return RemoteHandle(request_id, None, Failed("reply holds malformed base64 audio"))
        return RemoteHandle(request_id, None, Succeeded(
            (InlineAudio(audio),), seed if isinstance(seed, int) else None, finish_reason))

    def cost(self, job: Job) -> tuple[float, str] | None:
        """Credits: 2.0 costs 17 + 0.06 × steps (50 by default); 2.5 and inpaint a flat 20."""
        if job.task is not Task.INPAINT and self.model_of(job) == "stable-audio-2":
            return 17 + 0.06 * (job.steps if job.steps is not None else 50), "credits"
        return 20.0, "credits"


def _input_file_problem(audio: str, task: Task) -> str | None:
    """Why ``audio`` cannot be uploaded as the multipart ``audio`` part, if it cannot."""
    if audio.startswith(("http://", "https://")):
        return "stability takes the input audio as an upload: give a local file path"
    path = Path(audio)
    suffix = path.suffix.lower()
    if suffix not in _AUDIO_TYPES:
        return f"input audio must be an .mp3 or .wav file, not {suffix or 'a file without suffix'}"
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        return f"cannot read input audio {audio}: {exc.strerror}"
    if size + _FORM_OVERHEAD > MAX_REQUEST_BYTES:
        return f"input audio is {size / 1e6:.1f} MB; the request limit is 50 MB"
    problem = local_audio_problem(audio, max_bytes=None, suffixes=_AUDIO_TYPES.keys())
    if problem is not None:
        return problem
    if suffix == ".wav" and task is Task.AUDIO_TO_AUDIO:
        try:
            with wave.open(str(path)) as w:
                seconds = w.getnframes() / w.getframerate()
        except (wave.Error, EOFError, OSError, ZeroDivisionError) as exc:
            return f"input audio is not a readable WAV file: {exc}"
        if not 6 <= seconds <= 190:
            return f"input audio is {seconds:.1f} s long; audio-to-audio takes 6–190 s"
    return None
