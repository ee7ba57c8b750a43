"""WaveSpeed: JSON submit to a Stable Audio 3 route, enveloped replies, then poll ``urls.get``.

Every reply is an envelope ``{"code": …, "message": …, "data": {…}}``; ``data`` is the
prediction (or, for an upload, the stored file).

Models. WaveSpeed serves each Stable Audio 3 task on its own route
(``stability-ai/stable-audio-3/<route>``). The model ``stable-audio-3`` (the default) lets
the job's task pick the route: text-to-audio runs on ``music`` (the route the price list
leads with; Pixazo's Stable Audio 3 model is the music one too), audio-to-audio on
``audio-to-audio`` and inpaint on ``audio-inpainting``. Each route can also be named as a
model, ``stable-audio-3/<route>``, which then runs only its own task; that is how to reach
``text-to-audio`` (general sound rather than music). ``audio-outpainting`` is not offered:
the contract names the route but none of its fields, and no unified task means "extend".

Quirks absorbed here: a failed job answers HTTP 200 with ``data.status: "failed"`` (it ends
``Failed``, never polled again), and a reply of an HTTP error status whose envelope holds the
failed prediction is read the same way; an HTTP 200 whose envelope ``code`` is an error is treated
as that error; a 504 to an ``enable_sync_mode`` submit that still names its prediction is
polled like any other job; local input files are uploaded first
(``/api/v3/media/upload/binary``) and sent by their ``download_url``. There is no cancel
endpoint in the contract.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

from stableaudio_async.errors import JobIssue, ProviderUnavailableError
from stableaudio_async.http import FormPart
from stableaudio_async.models import (
    AudioSource,
    Failed,
    InlineAudio,
    Job,
    Queued,
    RemoteHandle,
    RemoteStatus,
    Running,
    Task,
)
from stableaudio_async.providers.base import (
    AUDIO_SUFFIXES,
    Adapter,
    HttpReply,
    HttpRequest,
    ModelSpec,
    Range,
    audio_source,
    check_job,
    completed,
    error_from_reply,
    input_seconds,
    is_url,
    local_audio_problem,
)

__all__ = ["MAX_UPLOAD_BYTES", "WaveSpeedAdapter"]

#: "audio ≤ 50 MB" read as decimal megabytes: the stricter reading.
MAX_UPLOAD_BYTES = 50 * 1000 * 1000

_FAMILY = "stability-ai/stable-audio-3"
_DEFAULT_MODEL = "stable-audio-3"
#: The route the default model takes for each task.
_TASK_ROUTES: Mapping[Task, str] = {
    Task.TEXT_TO_AUDIO: "music",
    Task.AUDIO_TO_AUDIO: "audio-to-audio",
    Task.INPAINT: "audio-inpainting",
}
#: Dollars per run, as published; inpainting has no published price.
_PRICES: Mapping[str, float] = {"music": 0.0217, "text-to-audio": 0.0206, "audio-to-audio": 0.024}

# The contract writes the list as "mp3 … aac"; read as the same seven formats Pixazo lists
# for the same model.
_FORMATS = frozenset({"mp3", "wav", "flac", "ogg", "opus", "m4a", "aac"})
_RANGES: Mapping[str, Range] = {
    "duration": Range(1, 120),
    "steps": Range(1, 100, integer=True),
    "guidance_scale": Range(0, 25),
}
_FIELDS = frozenset({"negative_prompt", "seed"})
_STRENGTH = Range(0, 1)


def _spec(*tasks: Task) -> ModelSpec:
    ranges = dict(_RANGES)
    fields = set(_FIELDS)
    if Task.AUDIO_TO_AUDIO in tasks:
        ranges["strength"] = _STRENGTH
    if Task.AUDIO_TO_AUDIO in tasks or Task.INPAINT in tasks:
        fields.add("audio")
    if Task.INPAINT in tasks:
        # No range is published for the mask; it must lie inside the input audio, whose
        # length only the provider knows. check() insists that end > start.
        fields |= {"mask_start", "mask_end"}
    return ModelSpec(tasks=frozenset(tasks), ranges=ranges, formats=_FORMATS,
                     fields=frozenset(fields))


_MODELS: Mapping[str, ModelSpec] = {
    _DEFAULT_MODEL: _spec(*_TASK_ROUTES),
    "stable-audio-3/music": _spec(Task.TEXT_TO_AUDIO),
    "stable-audio-3/text-to-audio": _spec(Task.TEXT_TO_AUDIO),
    "stable-audio-3/audio-to-audio": _spec(Task.AUDIO_TO_AUDIO),
    "stable-audio-3/audio-inpainting": _spec(Task.INPAINT),
}

# Body keys the adapter writes from the job's own fields; `options` may add others
# (enable_sync_mode, enable_base64_output, webhook settings).
_RESERVED = frozenset({
    "prompt", "negative_prompt", "duration", "num_inference_steps", "guidance_scale",
    "output_format", "seed", "audio", "init_noise_level", "mask_start_seconds",
    "mask_end_seconds",
})

_OK_STATUSES = (200, 201, 202)
_SYNC_TIMEOUT = 504


def _route_of(model: str, task: Task) -> str:
    """The WaveSpeed route (the part after ``stability-ai/stable-audio-3/``) for a job."""
    if model == _DEFAULT_MODEL:
        return _TASK_ROUTES[task]
    return model.rpartition("/")[2]


class WaveSpeedAdapter(Adapter):
    """Stable Audio 3 (music, text-to-audio, audio-to-audio, inpainting) on WaveSpeed."""

    name = "wavespeed"
    default_model = _DEFAULT_MODEL
    models: ClassVar[Mapping[str, ModelSpec]] = _MODELS
    local_audio = "upload"

    @classmethod
    def check(cls, job: Job, spec: ModelSpec) -> list[JobIssue]:
        """The route's ranges; inpaint needs both mask bounds; input audio a URL or an uploadable file."""
        issues = check_job(job, spec, provider=cls.name, reserved=_RESERVED)

        def refuse(name: str, message: str) -> None:
            issues.append(JobIssue(message, job_id=job.id, field=name))

        if job.task is Task.INPAINT and job.task in spec.tasks:
            # The contract gives the mask no defaults, so a job must state both ends.
            for name in ("mask_start", "mask_end"):
                if getattr(job, name) is None:
                    refuse(name, "inpainting needs mask_start and mask_end (seconds)")
        if job.audio is not None and job.task is not Task.TEXT_TO_AUDIO \
                and job.task in spec.tasks:
            if job.audio.startswith("data:"):
                refuse("audio", "wavespeed takes input audio by http(s) URL or as a local "
                                "file to upload, not as a data: URI")
            elif not is_url(job.audio):
                problem = local_audio_problem(job.audio, max_bytes=MAX_UPLOAD_BYTES,
                                      seconds=input_seconds(spec))
                if problem:
                    refuse("audio", problem)
        return issues

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}", "Content-Type": "application/json"}

    def submit_request(self, job: Job, audio_url: str | None = None) -> HttpRequest:
        """POST the job to its route under ``/api/v3/stability-ai/stable-audio-3/``."""
        route = _route_of(self.model_of(job), job.task)
        body: dict[str, Any] = {"prompt": job.prompt, "output_format": self.output_format(job)}
        optional: dict[str, Any] = {
            "negative_prompt": job.negative_prompt,
            "duration": job.duration,
            "num_inference_steps": job.steps,
            "guidance_scale": job.guidance_scale,
            "seed": job.seed,
        }
        if job.task is not Task.TEXT_TO_AUDIO:
            optional["audio"] = audio_url if audio_url is not None else job.audio
        if job.task is Task.AUDIO_TO_AUDIO:
            # Like our strength, init_noise_level is how far to move from the source.
            optional["init_noise_level"] = job.strength
        if job.task is Task.INPAINT:
            optional["mask_start_seconds"] = job.mask_start
            optional["mask_end_seconds"] = job.mask_end
        body.update({k: v for k, v in optional.items() if v is not None})
        body.update(job.options)
        return HttpRequest("POST", f"{self.base_url}/api/v3/{_FAMILY}/{route}", self._headers(),
                           body)

    def parse_submit(self, reply: HttpReply) -> RemoteHandle:
        """The envelope's ``data`` holds the prediction id, its ``urls.get`` and its status."""
        if reply.status == _SYNC_TIMEOUT:
            # enable_sync_mode may give up waiting while the job carries on: poll it when the
            # reply still names it, else it is the gateway error it looks like.
            data = _envelope_data(reply) or {}
            if not isinstance(data.get("id"), str) or not data["id"]:
                raise error_from_reply(reply, provider=self.name)
            data = {**data, "status": data.get("status") or "processing"}
        else:
            data = self._data(reply)
        request_id = data.get("id")
        if not isinstance(request_id, str) or not request_id:
            raise ProviderUnavailableError("submit reply has no data.id", provider=self.name,
                                           status=reply.status)
        urls = data.get("urls")
        poll_url = urls.get("get") if isinstance(urls, Mapping) else None
        # The key goes with every poll, so only ever to the API we submitted to.
        if not self.on_own_origin(poll_url):
            poll_url = f"{self.base_url}/api/v3/predictions/{quote(request_id, safe='')}/result"
        return RemoteHandle(request_id, poll_url, self._status(data, request_id))

    def poll_request(self, handle: RemoteHandle) -> HttpRequest:
        """GET the prediction through the ``urls.get`` WaveSpeed gave us."""
        assert handle.poll_url is not None
        return HttpRequest("GET", handle.poll_url, {"Authorization": f"Bearer {self._api_key}"})

    def parse_poll(self, reply: HttpReply, handle: RemoteHandle) -> RemoteStatus:
        """Map the prediction in the envelope onto the engine's status union."""
        return self._status(self._data(reply, handle.request_id), handle.request_id)

    def upload_request(self, path: Path) -> HttpRequest:
        """POST the file as the multipart field ``file`` to the media upload route."""
        part = FormPart("file", path=path, content_type=AUDIO_SUFFIXES.get(path.suffix.lower()))
        return HttpRequest("POST", f"{self.base_url}/api/v3/media/upload/binary",
                           {"Authorization": f"Bearer {self._api_key}"}, form=[part])

    def parse_upload(self, reply: HttpReply) -> str:
        """The ``data.download_url`` the uploaded file is served from."""
        url = self._data(reply).get("download_url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ProviderUnavailableError("upload reply has no data.download_url",
                                           provider=self.name, status=reply.status)
        return url

    def cost(self, job: Job) -> tuple[float, str] | None:
        """Dollars per run: music 0.0217, text-to-audio 0.0206, audio-to-audio 0.024."""
        price = _PRICES.get(_route_of(self.model_of(job), job.task))
        return None if price is None else (price, "usd")

    def _data(self, reply: HttpReply, request_id: str | None = None) -> dict[str, Any]:
        """The envelope's ``data`` object, or the engine's error for an error reply.

        A reply of any status whose envelope holds a finished, failed prediction is that
        prediction: the documentation answers it HTTP 200, another reading an HTTP error.
        """
        ended = _ended_prediction(reply)
        if ended is not None:
            return ended
        if reply.status not in _OK_STATUSES:
            raise error_from_reply(reply, provider=self.name, request_id=request_id)
        try:
            envelope = reply.json()
        except ValueError:
            envelope = None
        if not isinstance(envelope, dict):
            raise ProviderUnavailableError("reply is not a JSON object", provider=self.name,
                                           request_id=request_id, status=reply.status)
        code = envelope.get("code")
        if isinstance(code, int) and not isinstance(code, bool) and code >= 400:
            # The envelope carries its own status; an error there counts even under HTTP 200.
            raise error_from_reply(replace(reply, status=code), provider=self.name,
                                   request_id=request_id)
        data = envelope.get("data")
        if not isinstance(data, dict):
            raise ProviderUnavailableError("reply envelope has no data object",
                                           provider=self.name, request_id=request_id,
                                           status=reply.status)
        return data

    def _status(self, data: Mapping[str, Any], request_id: str | None) -> RemoteStatus:
        """The one place WaveSpeed's status words become engine statuses."""
        word = str(data.get("status", "")).lower()
        if word == "created":
            return Queued()
        if word == "processing":
            return Running()
        if word == "completed":
            return completed(lambda: _audio_from_outputs(data.get("outputs")),
                             "provider reported completed without any outputs")
        if word in _ENDED:
            # Reported with HTTP 200 (or, read loosely, an HTTP error); whether WaveSpeed
            # bills it is not published. The official SDK ends on these words too.
            return Failed(str(data.get("error") or f"prediction {word}"))
        return self.unknown_status(word, request_id)


#: Status words that end a prediction without audio (``wavespeed`` 2.0.5 ends on each).
_ENDED = frozenset({"failed", "cancelled", "canceled", "timeout", "deleted"})


def _ended_prediction(reply: HttpReply) -> dict[str, Any] | None:
    """The prediction in the envelope when it names itself and says it ended without audio."""
    data = _envelope_data(reply)
    if data is None or not isinstance(data.get("id"), str) or not data["id"]:
        return None
    return data if str(data.get("status", "")).lower() in _ENDED else None


def _envelope_data(reply: HttpReply) -> dict[str, Any] | None:
    """The envelope's ``data`` object, whatever the statuses say, or ``None``."""
    try:
        envelope = reply.json()
    except ValueError:
        return None
    data = envelope.get("data") if isinstance(envelope, dict) else None
    return data if isinstance(data, dict) else None



def _audio_from_outputs(outputs: Any) -> tuple[AudioSource, ...]:
    """``data.outputs`` as audio sources: URLs, data URIs, or raw base64 (``enable_base64_output``)."""
    if isinstance(outputs, str):
        outputs = [outputs]
    if not isinstance(outputs, list):
        return ()
    sources: list[AudioSource] = []
    for output in outputs:
        if not isinstance(output, str) or not output:
            continue
        if output.startswith(("http://", "https://", "data:")):
            sources.append(audio_source(output))
        else:
            try:
                sources.append(InlineAudio(base64.b64decode(output, validate=True)))
            except ValueError as exc:  # binascii.Error, or non-ASCII characters
                raise ValueError(f"output is neither a URL nor base64 ({exc})") from exc
    return tuple(sources)
