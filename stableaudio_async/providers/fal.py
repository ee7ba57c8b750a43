"""fal: JSON submit to ``queue.fal.run``, poll the ``status_url``, fetch the ``response_url``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

from stableaudio_async.errors import (
    InsufficientBalanceError,
    JobIssue,
    ProviderError,
    ProviderUnavailableError,
)
from stableaudio_async.models import (
    AudioSource,
    Failed,
    Job,
    Queued,
    Ready,
    RemoteHandle,
    RemoteStatus,
    Running,
    Succeeded,
    Task,
)
from stableaudio_async.providers.base import (
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

__all__ = ["MAX_LOCAL_AUDIO_BYTES", "FalAdapter"]

#: A local input file travels base64-encoded inside the JSON body (a third larger). fal
#: publishes no limit for data URIs and warns they slow large requests down; past this size
#: host the file and pass its URL instead.
MAX_LOCAL_AUDIO_BYTES = 10 * 1000 * 1000

SA25 = "fal-ai/stable-audio-25"
SA_OPEN = "fal-ai/stable-audio"

# fal returns WAV and has no output_format field, so no other format can be honoured.
_FORMATS = frozenset({"wav"})

_SA25_SPEC = ModelSpec(
    tasks=frozenset({Task.TEXT_TO_AUDIO, Task.AUDIO_TO_AUDIO, Task.INPAINT}),
    ranges={
        # fal's schema types seconds_total as an integer; a fraction would be a 422.
        "duration": Range(1, 190, integer=True),
        "steps": Range(4, 8, integer=True),
        "guidance_scale": Range(1, 25, integer=True),
        "strength": Range(0.01, 1),
        "mask_start": Range(0, 190),
        "mask_end": Range(0, 190),
    },
    formats=_FORMATS,
    fields=frozenset({"seed", "audio"}),
)

# Stable Audio Open: the contract names only its `audio_file` result; its inputs are those of
# Stable Audio Open elsewhere (seconds_total up to 47, `steps`), and nothing else is sent.
_OPEN_SPEC = ModelSpec(
    tasks=frozenset({Task.TEXT_TO_AUDIO}),
    ranges={"duration": Range(1, 47, integer=True), "steps": Range(1, 1000, integer=True)},
    formats=_FORMATS,
)

# Body keys the adapter writes from the job's own fields; `options` may add others.
_RESERVED = frozenset({
    "prompt", "seconds_total", "total_seconds", "num_inference_steps", "steps",
    "guidance_scale", "seed", "audio_url", "strength", "mask_start", "mask_end",
})

#: The price per generated audio, where fal publishes one.
_PRICES: Mapping[str, float] = {SA25: 0.20}


def _whole(value: float) -> float | int:
    """A float that holds a whole number as an int, since fal's integer fields want one."""
    return int(value) if float(value).is_integer() else value


class FalAdapter(Adapter):
    """Stable Audio 2.5 (and Stable Audio Open) on fal's queue."""

    name = "fal"
    default_model = SA25
    models: ClassVar[Mapping[str, ModelSpec]] = {SA25: _SA25_SPEC, SA_OPEN: _OPEN_SPEC}
    local_audio = "data_uri"

    @classmethod
    def check(cls, job: Job, spec: ModelSpec) -> list[JobIssue]:
        """The model's ranges (output is WAV only), plus a local input: present, audio, ≤ 10 MB."""
        issues = [
            JobIssue(f"{job.output_format!r}: fal returns WAV only (set output_format to "
                     '"wav")', job_id=job.id, field="output_format")
            if issue.field == "output_format" else issue
            for issue in check_job(job, spec, provider=cls.name, reserved=_RESERVED)
        ]
        if job.audio is not None and job.task in spec.tasks and job.task is not Task.TEXT_TO_AUDIO \
                and not is_url(job.audio):
            problem = local_audio_problem(job.audio, max_bytes=MAX_LOCAL_AUDIO_BYTES,
                                      seconds=input_seconds(spec))
            if problem:
                issues.append(JobIssue(problem, job_id=job.id, field="audio"))
        return issues

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {self._api_key}", "Content-Type": "application/json"}

    def submit_request(self, job: Job, audio_url: str | None = None) -> HttpRequest:
        """POST the job to ``{base}/{model}/{task}`` (Stable Audio Open: ``{base}/{model}``)."""
        model = self.model_of(job)
        body: dict[str, Any] = {"prompt": job.prompt}
        duration = _whole(job.duration) if job.duration is not None else None
        optional: dict[str, Any]
        if model == SA_OPEN:
            # A single top-level endpoint: no task sub-path.
            url = f"{self.base_url}/{model}"
            optional = {"seconds_total": duration, "steps": job.steps}
        else:
            url = f"{self.base_url}/{model}/{job.task}"
            optional = {
                "num_inference_steps": job.steps,
                "guidance_scale": _whole(job.guidance_scale)
                if job.guidance_scale is not None else None,
                "seed": job.seed,
            }
            source = audio_url if audio_url is not None else job.audio
            if job.task is Task.AUDIO_TO_AUDIO:
                # Audio-to-audio names its length total_seconds, unlike the other two tasks.
                optional |= {"audio_url": source, "strength": job.strength,
                             "total_seconds": duration}
            else:
                optional["seconds_total"] = duration
            if job.task is Task.INPAINT:
                optional |= {
                    "audio_url": source,
                    "mask_start": _whole(job.mask_start) if job.mask_start is not None else None,
                    "mask_end": _whole(job.mask_end) if job.mask_end is not None else None,
                }
        body.update({k: v for k, v in optional.items() if v is not None})
        body.update(job.options)
        return HttpRequest("POST", url, self._headers(), body)

    def parse_submit(self, reply: HttpReply) -> RemoteHandle:
        """The queue's receipt: request id, its status/response/cancel URLs and queue position."""
        if not 200 <= reply.status < 300:
            raise self._error(reply)
        data = self.json_object(reply)
        request_id = data.get("request_id")
        if not isinstance(request_id, str) or not request_id:
            raise ProviderUnavailableError(
                "submit reply has no request_id", provider=self.name, status=reply.status)
        # The key goes with every one of these requests, so only ever to the queue we submitted
        # to; a URL elsewhere (or none) is rebuilt from the documented queue routes.
        fallback = self._queue_routes(reply.url, request_id)
        urls: list[str] = []
        for key, path in (("status_url", "/status"), ("response_url", ""),
                          ("cancel_url", "/cancel")):
            given = data.get(key)
            if self.on_own_origin(given):
                urls.append(given)
            elif fallback is not None:
                urls.append(fallback + path)
            else:
                raise ProviderUnavailableError(
                    f"submit reply has no usable {key}", provider=self.name,
                    request_id=request_id, status=reply.status)
        status_url, response_url, cancel_url = urls
        return RemoteHandle(request_id, status_url, self._status(data, request_id),
                            result_url=response_url, cancel_url=cancel_url)

    def poll_request(self, handle: RemoteHandle) -> HttpRequest:
        """GET the ``status_url`` fal gave us."""
        assert handle.poll_url is not None
        return HttpRequest("GET", handle.poll_url, {"Authorization": f"Key {self._api_key}"})

    def parse_poll(self, reply: HttpReply, handle: RemoteHandle) -> RemoteStatus:
        """Map the status body onto the engine's status union."""
        if not 200 <= reply.status < 300:
            raise self._error(reply, handle.request_id)
        return self._status(self.json_object(reply, handle.request_id), handle.request_id)

    def result_request(self, handle: RemoteHandle) -> HttpRequest:
        """GET the ``response_url``: the result, or the job's failure as an HTTP error."""
        assert handle.result_url is not None
        return HttpRequest("GET", handle.result_url, {"Authorization": f"Key {self._api_key}"})

    def parse_result(self, reply: HttpReply, handle: RemoteHandle) -> Succeeded | Failed:
        """The audio (``audio``, or ``audio_file`` for Stable Audio Open), or the job's failure.

        fal reports a failed job only here, as an HTTP error with a ``detail``: that is the
        job's final outcome, not an error of this request. Exceptions: 429 and a bare 5xx
        (a gateway hiccup) are transient and raised to be retried; 401/403 speak about the key,
        not the job, and are raised too. A 5xx carrying fal's ``error_type`` (a runner crash,
        a timeout) is the stored outcome of a finished job, so it is final. fal bills per
        audio produced, so no failure is charged.
        """
        request_id = handle.request_id
        if 200 <= reply.status < 300:
            data = self.json_object(reply, request_id)
            output = data.get("audio")
            if output is None:
                output = data.get("audio_file")
            seed = data.get("seed")
            return completed(lambda: _audio_from_file(output),
                             "fal returned a result without any audio", charged=False,
                             seed=seed if isinstance(seed, int) and not isinstance(seed, bool)
                             else None)
        error_type = _error_type(reply)
        if reply.status in (401, 403, 429) or (reply.status >= 500 and error_type is None):
            raise self._error(reply, request_id)
        reason = _detail(reply) or f"HTTP {reply.status}"
        if error_type is not None:
            reason = f"{reason} ({error_type})"
        return Failed(reason, charged=False)

    def cancel_request(self, handle: RemoteHandle) -> HttpRequest | None:
        """PUT the ``cancel_url``: a queued job is dropped, a running one is signalled to stop."""
        if handle.cancel_url is None:
            return None
        return HttpRequest("PUT", handle.cancel_url, {"Authorization": f"Key {self._api_key}"})

    def cost(self, job: Job) -> tuple[float, str] | None:
        """$0.20 per audio on Stable Audio 2.5; fal names no price here for Stable Audio Open."""
        price = _PRICES.get(self.model_of(job))
        return None if price is None else (price, "usd")

    def _queue_routes(self, submit_url: str, request_id: str) -> str | None:
        """``{base}/{owner}/{app}/requests/{id}``, the app read off the submit URL."""
        base_path = urlsplit(self.base_url).path.rstrip("/")
        parts = urlsplit(submit_url)
        if not self.on_own_origin(submit_url) \
                or not parts.path.startswith(base_path + "/"):
            return None
        # Status, result and cancel live under the model id alone, without its sub-path.
        segments = parts.path[len(base_path) + 1:].split("/")
        if len(segments) < 2 or not all(segments[:2]):
            return None
        app = "/".join(segments[:2])
        return f"{self.base_url}/{app}/requests/{quote(request_id, safe='')}"

    def _error(self, reply: HttpReply, request_id: str | None = None) -> ProviderError:
        """:func:`error_from_reply`, with fal's ``detail`` read out and a locked account named."""
        error = error_from_reply(reply, provider=self.name, request_id=request_id)
        detail = _detail(reply)
        message = f"HTTP {reply.status}" + (f": {detail}" if detail else "")
        kind: type[ProviderError] = type(error)
        # fal answers an exhausted balance with 403 "User is locked. Reason: Exhausted balance".
        if reply.status == 403 and detail and "balance" in detail.lower():
            kind = InsufficientBalanceError
        return kind(message, provider=self.name, request_id=request_id, status=reply.status,
                    retry_after=error.retry_after)


    def _status(self, data: Mapping[str, Any], request_id: str | None) -> RemoteStatus:
        """The one place fal's status words become engine statuses."""
        word = str(data.get("status", "")).upper()
        if word == "IN_QUEUE":
            position = data.get("queue_position")
            return Queued(position if isinstance(position, int)
                          and not isinstance(position, bool) else None)
        if word == "IN_PROGRESS":
            return Running()
        if word in ("COMPLETED", "FAILED", "CANCELED", "CANCELLED"):
            # Finished, successfully or not: only the response_url says which (and why).
            return Ready()
        return self.unknown_status(word, request_id)



def _error_type(reply: HttpReply) -> str | None:
    """fal's machine-readable category of a request error, from its header or body."""
    header = reply.headers.get("x-fal-error-type")
    if header:
        return header
    try:
        data = reply.json()
    except ValueError:
        return None
    value = data.get("error_type") if isinstance(data, dict) else None
    return value if isinstance(value, str) and value else None


def _detail(reply: HttpReply) -> str | None:
    """fal's ``detail``: a sentence, or a validation list of ``{loc, msg}`` (FastAPI's shape)."""
    try:
        data = reply.json()
    except ValueError:
        text = reply.body.decode("utf-8", "replace").strip()
        return text[:300] or None
    if not isinstance(data, dict):
        return None
    detail = data.get("detail")
    if isinstance(detail, str):
        return detail[:500] or None
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if not isinstance(item, Mapping):
                parts.append(str(item))
                continue
            loc = item.get("loc")
            # ["body", "seconds_total"] names the field; the "body" prefix says nothing.
            names = [str(p) for p in loc if p != "body"] if isinstance(loc, list) else []
            msg = str(item.get("msg") or item.get("type") or "invalid")
            parts.append(f"{'.'.join(names)}: {msg}" if names else msg)
        return "; ".join(parts)[:500] or None
    # A cancel reply, or another shape with a bare status word.
    status = data.get("status")
    return str(status) if isinstance(status, str) and status else None


def _audio_from_file(output: Any) -> tuple[AudioSource, ...]:
    """fal's File object ``{url, content_type, file_name, file_size}`` as an audio source."""
    if not isinstance(output, Mapping):
        return ()
    url = output.get("url")
    if not isinstance(url, str) or not url:
        return ()
    given = output.get("content_type")
    content_type = given if isinstance(given, str) and given else None
    # With sync_mode the audio comes inline as a data URI rather than on the CDN.
    return (audio_source(url, content_type),)
