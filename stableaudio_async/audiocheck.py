"""Accepts a downloaded file only if its headers say it is audio of the expected format and length.

Only headers and container metadata are read (mutagen plus a few byte-level checks), never the
audio itself, so a check costs a handful of small reads however long the file is. The call
blocks; from async code run it in a worker thread (``anyio.to_thread.run_sync``).

The container is recognised from the file's leading bytes, never from its name: mutagen's own
``mutagen.File`` weighs the file name too (a ``.flac`` suffix alone outscores a RIFF header),
so each format's reader is called directly once the bytes have named it.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol, cast

from mutagen.aac import AAC
from mutagen.flac import FLAC
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis
from mutagen.wave import WAVE

__all__ = ["AudioProblem", "audio_length", "check_audio"]


@dataclass(frozen=True, slots=True)
class AudioProblem:
    """Why a downloaded file was not accepted as the audio that was asked for."""

    reason: str  # one of: "wrong_format", "truncated", "too_long", "unreadable", "empty"
    detail: str  # human-readable, e.g. "expected mp3, file is WAV"

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


# Detected kinds: what the leading bytes say the file is. Display names go into messages.
_NAMES: dict[str, str] = {
    "wav": "WAV",
    "mp3": "MP3",
    "mpeg_other": "MPEG audio (Layer I/II, not MP3)",
    "flac": "FLAC",
    "ogg_vorbis": "Ogg Vorbis",
    "ogg_opus": "Ogg Opus",
    "ogg_flac": "Ogg FLAC",
    "ogg_speex": "Ogg Speex",
    "ogg_other": "Ogg (not Vorbis or Opus)",
    "mp4": "MP4/M4A",
    "adts": "AAC (ADTS)",
    "adif": "AAC (ADIF)",
    "aiff": "AIFF",
    "caf": "CAF",
    "matroska": "Matroska/WebM",
    "asf": "ASF/WMA",
}

# Which detected kinds satisfy each requested format. m4a and aac are lenient both ways: they
# name the same AAC audio, and a provider that answers one with the other has delivered usable
# audio, so failing the job would only make every retry fail the same way. ("aac" still refuses
# an MP4 holding some other codec, e.g. ALAC: see _check_open.)
_ACCEPTS: dict[str, frozenset[str]] = {
    "mp3": frozenset({"mp3"}),
    "wav": frozenset({"wav"}),
    "flac": frozenset({"flac"}),
    "ogg": frozenset({"ogg_vorbis", "ogg_opus"}),
    "opus": frozenset({"ogg_opus"}),
    "m4a": frozenset({"mp4", "adts", "adif"}),
    "aac": frozenset({"mp4", "adts", "adif"}),
}

# Enough for an Ogg page header with a full segment table (27 + 255) plus the packet's magic.
_HEAD_BYTES = 512
# RIFF writers that stream (cannot seek back) leave the data size as one of these.
_WAV_UNKNOWN_SIZES = frozenset({0, 0xFFFFFFFF})


@dataclass(frozen=True, slots=True)
class _Measured:
    """What a format reader learnt: the playable length (None: the container does not say)."""

    seconds: float | None
    codec: str = ""


def check_audio(path: Path, *, expected_format: str, expected_duration: float | None,
                tolerance: float = 0.25, min_slack: float = 1.0) -> AudioProblem | None:
    """None when ``path`` is ``expected_format`` audio lasting about ``expected_duration`` seconds.

    The length is accepted when ``|actual - expected| <= max(tolerance * expected, min_slack)``;
    shorter is ``"truncated"``, longer ``"too_long"``. ``expected_duration=None`` skips that
    comparison, but a file holding less than its own header declares (a WAV whose data chunk
    runs past the end of the file, an MP3 whose VBR header counts over ``min_slack`` seconds
    more than the bytes hold, an MP4 box cut short) is ``"truncated"`` either way.
    Some files cannot state a length without decoding (a FLAC from a piped encoder, a
    fragmented MP4); for those only the format is checked.

    Raises :class:`ValueError` for an unknown ``expected_format`` or nonsensical numbers: those
    are the caller's mistakes, not the file's.
    """
    fmt = expected_format.lower()
    if fmt not in _ACCEPTS:
        raise ValueError(f"cannot check format {expected_format!r}; known: {sorted(_ACCEPTS)}")
    if expected_duration is not None and not (math.isfinite(expected_duration) and expected_duration > 0):
        raise ValueError(f"expected_duration must be positive and finite, got {expected_duration!r}")
    if not (math.isfinite(tolerance) and tolerance >= 0 and math.isfinite(min_slack) and min_slack >= 0):
        raise ValueError(f"tolerance and min_slack must be >= 0, got {tolerance!r}, {min_slack!r}")
    try:
        with path.open("rb") as f:
            return _check_open(f, fmt, expected_duration, tolerance, min_slack)
    except OSError as exc:
        return AudioProblem("unreadable", f"cannot read the file: {exc.strerror or exc}")


def audio_length(path: Path, *, expected_format: str,
                 min_slack: float = 1.0) -> AudioProblem | float | None:
    """For an input file: why ``path`` is not ``expected_format`` audio, else its length in
    seconds (None when its container does not state one without decoding)."""
    fmt = expected_format.lower()
    if fmt not in _ACCEPTS:
        raise ValueError(f"cannot check format {expected_format!r}; known: {sorted(_ACCEPTS)}")
    try:
        with path.open("rb") as f:
            measured = _examine(f, fmt, min_slack)
    except OSError as exc:
        return AudioProblem("unreadable", f"cannot read the file: {exc.strerror or exc}")
    return measured if isinstance(measured, AudioProblem) else measured.seconds


def _check_open(f: IO[bytes], fmt: str, expected: float | None, tolerance: float,
                min_slack: float) -> AudioProblem | None:
    measured = _examine(f, fmt, min_slack)
    if isinstance(measured, AudioProblem):
        return measured
    if expected is None or measured.seconds is None:
        return None
    return _check_length(measured.seconds, expected, tolerance, min_slack)


def _examine(f: IO[bytes], fmt: str, min_slack: float) -> _Measured | AudioProblem:
    """What the open file is: ``fmt`` audio, measured, or the problem with it."""
    size = os.fstat(f.fileno()).st_size
    if size == 0:
        return AudioProblem("empty", "file is empty (0 bytes)")
    start = _skip_id3v2(f, size)
    if start >= size:
        return AudioProblem("empty", f"no audio after a {start}-byte ID3 tag")
    f.seek(start)
    head = f.read(_HEAD_BYTES)
    kind = _sniff(head) or _mp3_by_frames(f)
    if kind is None:
        return AudioProblem("unreadable", f"not a recognised audio file: {_describe(head)}")
    if kind not in _ACCEPTS[fmt]:
        return AudioProblem("wrong_format", f"expected {fmt}, file is {_NAMES[kind]}")
    reader = _READERS[kind]
    measured = reader(f, size, start, min_slack)
    if isinstance(measured, AudioProblem):
        return measured
    if fmt == "aac" and measured.codec and not measured.codec.startswith("mp4a"):
        return AudioProblem("wrong_format", f"expected aac, file is MP4 holding {measured.codec}")
    return measured


def _check_length(actual: float, expected: float, tolerance: float,
                  min_slack: float) -> AudioProblem | None:
    allowed = max(tolerance * expected, min_slack)
    if abs(actual - expected) <= allowed:
        return None
    reason = "truncated" if actual < expected else "too_long"
    return AudioProblem(
        reason, f"{actual:.2f} s of audio, expected about {expected:g} s (±{allowed:g} s)"
    )


# ---- Recognising the container -----------------------------------------------------------------


def _skip_id3v2(f: IO[bytes], size: int) -> int:
    """Offset of the first byte after any ID3v2 tags (some writers stack several)."""
    pos = 0
    while pos + 10 <= size:
        f.seek(pos)
        header = f.read(10)
        if header[:3] != b"ID3" or any(b & 0x80 for b in header[6:10]):
            break
        body = (header[6] << 21) | (header[7] << 14) | (header[8] << 7) | header[9]
        footer = 10 if header[5] & 0x10 else 0
        pos += 10 + body + footer
    return min(pos, size)


def _sniff(head: bytes) -> str | None:
    """Name the container from its magic bytes, or None when they match nothing known."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return _sniff_ogg(head)
    if head[4:8] == b"ftyp":
        return "mp4"
    if head[:4] == b"ADIF":
        return "adif"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[:4] == b"caff":
        return "caf"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if head[:4] == b"\x30\x26\xb2\x75":
        return "asf"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        layer = (head[1] >> 1) & 0b11
        if layer == 0b00:
            # ADTS shares the 12-bit sync word; its "layer" bits are always zero.
            return "adts" if head[1] & 0xF0 == 0xF0 else None
        if (head[1] >> 3) & 0b11 == 0b01:  # reserved MPEG version: not a frame header
            return None
        return "mp3" if layer == 0b01 else "mpeg_other"
    return None


def _sniff_ogg(head: bytes) -> str:
    # The first page's first packet identifies the codec; it starts after the 27-byte page
    # header and the segment table, whose length is the header's last byte.
    packet = head[27 + head[26]:] if len(head) > 27 else b""
    if packet.startswith(b"\x01vorbis"):
        return "ogg_vorbis"
    if packet.startswith(b"OpusHead"):
        return "ogg_opus"
    if packet.startswith(b"\x7fFLAC"):
        return "ogg_flac"
    if packet.startswith(b"Speex   "):
        return "ogg_speex"
    return "ogg_other"


def _mp3_by_frames(f: IO[bytes]) -> str | None:
    """"mp3" when mutagen finds a clean run of Layer III frames somewhere near the start.

    Catches MP3s with junk before the first frame; mutagen's "sketchy" flag is what keeps a
    stray 0xFFE in random bytes from passing as audio.
    """
    parsed = _parse(MP3, f, "MP3")
    if isinstance(parsed, AudioProblem):
        return None
    info = cast(_MPEGInfo, parsed)
    return "mp3" if not info.sketchy and info.layer == 3 else None


def _describe(head: bytes) -> str:
    sample = head[:40]
    if all(32 <= b < 127 or b in b"\t\r\n" for b in sample):
        text = " ".join(sample.decode("ascii").split())
        return f"text starting {text!r}"
    return f"unrecognised bytes {sample[:8].hex(' ')}"


# ---- Reading each format's length --------------------------------------------------------------

_Reader = Callable[[IO[bytes], int, int, float], _Measured | AudioProblem]


# mutagen declares ``FileType.info`` as None, so the attributes read here are spelled out.
class _Info(Protocol):
    length: float
    bitrate: int


class _MPEGInfo(_Info, Protocol):
    sketchy: bool
    layer: int


class _FLACInfo(_Info, Protocol):
    total_samples: int


class _MP4Info(_Info, Protocol):
    codec: str


class _FileType(Protocol):
    @property
    def info(self) -> object: ...


def _parse(cls: Callable[[IO[bytes]], _FileType], f: IO[bytes], name: str) -> object:
    """Run one mutagen reader on ``f``: its stream info, or an :class:`AudioProblem`."""
    f.seek(0)
    try:
        return cls(f).info
    except Exception as exc:  # mutagen is not hardened: garbage surfaces as struct.error etc.
        return AudioProblem("unreadable", f"{name} headers unreadable: {str(exc) or type(exc).__name__}")


def _read_wav(f: IO[bytes], size: int, start: int, min_slack: float) -> _Measured | AudioProblem:
    parsed = _parse(WAVE, f, "WAV")
    if isinstance(parsed, AudioProblem):
        return parsed
    info = cast(_Info, parsed)
    chunk = _wav_data_chunk(f, size)
    if chunk is None:
        return AudioProblem("unreadable", "WAV has no data chunk")
    offset, declared = chunk
    present = size - offset
    if declared in _WAV_UNKNOWN_SIZES:
        if not info.bitrate:
            return AudioProblem("unreadable", "WAV states neither its length nor its bit rate")
        return _Measured(present * 8 / info.bitrate)
    if present < declared:
        # mutagen takes the length from the header alone, so it reports the full length.
        held = info.length * present / declared
        return AudioProblem(
            "truncated",
            f"WAV header declares {info.length:.2f} s but the file holds {held:.2f} s"
            f" ({declared - present} bytes of samples missing)",
        )
    return _Measured(float(info.length))


def _wav_data_chunk(f: IO[bytes], size: int) -> tuple[int, int] | None:
    """(offset of the sample bytes, size the header declares) of the RIFF data chunk."""
    pos = 12
    while pos + 8 <= size:
        f.seek(pos)
        chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
        if chunk_id == b"data":
            return pos + 8, chunk_size
        pos += 8 + chunk_size + (chunk_size & 1)  # chunks are padded to even sizes
    return None


def _read_mp3(f: IO[bytes], size: int, start: int, min_slack: float) -> _Measured | AudioProblem:
    parsed = _parse(MP3, f, "MP3")
    if isinstance(parsed, AudioProblem):
        return parsed
    info = cast(_MPEGInfo, parsed)
    if info.sketchy:
        # Fewer than four frames in a row and no VBR header: a stray sync word, not a stream.
        return AudioProblem("unreadable", "no run of valid MP3 frames after the first header")
    declared = float(info.length)
    if not info.bitrate:
        return _Measured(declared)
    # Without a Xing/VBRI header mutagen estimates the length from the file size, so a cut CBR
    # file already reads short. With one, the length is the header's frame count whatever the
    # bytes hold; the average bit rate (from the header's byte count) says what they hold.
    held = (size - start) * 8 / info.bitrate
    if declared - held > min_slack:
        return AudioProblem(
            "truncated",
            f"MP3 header declares {declared:.2f} s but the file holds about {held:.2f} s",
        )
    return _Measured(min(declared, held))


def _read_flac(f: IO[bytes], size: int, start: int, min_slack: float) -> _Measured | AudioProblem:
    parsed = _parse(FLAC, f, "FLAC")
    if isinstance(parsed, AudioProblem):
        return parsed
    info = cast(_FLACInfo, parsed)
    # Encoders writing to a pipe cannot seek back to fill in STREAMINFO's sample count and
    # leave it 0, meaning "unknown"; only decoding would tell the length.
    return _Measured(float(info.length) if info.total_samples else None)


def _read_ogg_vorbis(f: IO[bytes], size: int, start: int,
                     min_slack: float) -> _Measured | AudioProblem:
    # The length comes from the last page's granule position, so a cut file reads short.
    return _measure(_parse(OggVorbis, f, "Ogg Vorbis"))


def _read_ogg_opus(f: IO[bytes], size: int, start: int,
                   min_slack: float) -> _Measured | AudioProblem:
    return _measure(_parse(OggOpus, f, "Ogg Opus"))


def _read_aac(f: IO[bytes], size: int, start: int, min_slack: float) -> _Measured | AudioProblem:
    # mutagen estimates a raw AAC stream's length from its bit rate and the file size, so a
    # cut file reads short.
    return _measure(_parse(AAC, f, "AAC"))


def _measure(parsed: object) -> _Measured | AudioProblem:
    if isinstance(parsed, AudioProblem):
        return parsed
    return _Measured(float(cast(_Info, parsed).length))


def _read_mp4(f: IO[bytes], size: int, start: int, min_slack: float) -> _Measured | AudioProblem:
    # mutagen reads the length from the moov box and does not notice boxes that run past the
    # end of the file, so walk the top level first: a cut file ends inside its last box.
    boxes: set[bytes] = set()
    pos = 0
    while pos + 8 <= size:
        f.seek(pos)
        header = f.read(16)
        box_size, name = struct.unpack(">I4s", header[:8])
        if box_size == 1 and len(header) == 16:
            (box_size,) = struct.unpack(">Q", header[8:])
        elif box_size == 0:  # "extends to the end of the file"
            box_size = size - pos
        if box_size < 8:
            break  # malformed; let mutagen give its own verdict
        boxes.add(name)
        if pos + box_size > size:
            label = name.decode("latin-1")
            return AudioProblem(
                "truncated",
                f"MP4 file ends inside its {label!r} box ({size - pos} of {box_size} bytes present)",
            )
        pos += box_size
    parsed = _parse(MP4, f, "MP4")
    if isinstance(parsed, AudioProblem):
        return parsed
    info = cast(_MP4Info, parsed)
    length = float(info.length)
    # A fragmented MP4 keeps its length in the fragments, and its moov says 0.
    seconds = None if length == 0 and b"moof" in boxes else length
    return _Measured(seconds, codec=str(info.codec))


_READERS: dict[str, _Reader] = {
    "wav": _read_wav,
    "mp3": _read_mp3,
    "flac": _read_flac,
    "ogg_vorbis": _read_ogg_vorbis,
    "ogg_opus": _read_ogg_opus,
    "mp4": _read_mp4,
    "adts": _read_aac,
    "adif": _read_aac,
}
