"""Tests for the downloaded-audio check: format from the bytes, length from the headers."""

from __future__ import annotations

import functools
import io
import random
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mutagen.ogg import OggPage

from stableaudio_async.audiocheck import AudioProblem, check_audio
from stableaudio_async.emulator.audio import render_audio

# ---- Test files ---------------------------------------------------------------------------------
# WAV and MP3 come from the emulator's synthesiser. There is no FLAC/Ogg/MP4/AAC encoder among
# the dependencies, so those are hand-built: real container headers around filler payloads,
# which is all a metadata check ever looks at.


@functools.cache
def wav(seconds: float) -> bytes:
    return render_audio("audiocheck", 1, seconds, "wav")


@functools.cache
def mp3(seconds: float, kbps: int = 64) -> bytes:
    return render_audio("audiocheck", 1, seconds, "mp3", bitrate_kbps=kbps)


def half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def wav_with_chunk_before_data(seconds: float) -> bytes:
    """A WAV with a LIST chunk between fmt and data, as many encoders write."""
    data = wav(seconds)
    chunk = b"LIST" + struct.pack("<I", 5) + b"INFOx\x00"  # odd size: padded to even
    body = data[12:36] + chunk + data[36:]
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


def wav_streamed(seconds: float) -> bytes:
    """A WAV whose writer could not seek back: data size left as 0xFFFFFFFF."""
    data = wav(seconds)
    return data[:40] + struct.pack("<I", 0xFFFFFFFF) + data[44:]


def with_id3(data: bytes) -> bytes:
    """Prefix an ID3v2.4 tag (one TIT2 frame plus padding), as tagged downloads have."""
    frame = b"TIT2" + struct.pack(">I", 6) + b"\x00\x00" + b"\x03title"
    body = frame + bytes(500)
    size = len(body)
    syncsafe = bytes([(size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F])
    return b"ID3\x04\x00\x00" + syncsafe + body + data


def mp3_with_xing(seconds: float) -> bytes:
    """A rendered MP3 behind a Xing ("Info") frame stating its frame and byte counts, as LAME
    and ffmpeg write: mutagen then takes the length from the header, not the file size."""
    audio = mp3(seconds)
    frames = 0
    pos = 0
    while pos + 4 <= len(audio):  # 64 kbps MPEG-2 Layer III at 22050 Hz: 208 bytes + padding
        frames += 1
        pos += 208 + ((audio[pos + 2] >> 1) & 1)
    assert pos == len(audio)
    header = audio[:2] + bytes([audio[2] & ~0x02, audio[3]])  # no padding: exactly 208 bytes
    xing = b"Info" + struct.pack(">III", 0x3, frames, 208 + len(audio))
    frame = header + bytes(9) + xing  # the tag sits 13 bytes in for MPEG-2 mono
    return frame + bytes(208 - len(frame)) + audio


def flac(seconds: float, *, known_length: bool = True) -> bytes:
    """A FLAC header whose STREAMINFO states the length (or 0, "unknown", as a piped encoder
    leaves it)."""
    rate = 44100
    total = round(seconds * rate) if known_length else 0
    packed = (rate << 44) | (1 << 41) | (15 << 36) | total  # stereo, 16-bit
    streaminfo = struct.pack(">HH", 4096, 4096) + bytes(6) + packed.to_bytes(8, "big") + bytes(16)
    block = bytes([0x80]) + len(streaminfo).to_bytes(3, "big") + streaminfo  # last block
    return b"fLaC" + block + b"\xff\xf8" + bytes(1000)


def ogg(codec: str, seconds: float) -> bytes:
    """Three Ogg pages: identification header, comment header, and a final audio page whose
    granule position gives the length."""
    if codec == "vorbis":
        rate = 44100
        ident = b"\x01vorbis" + struct.pack("<IBIiiiBB", 0, 2, rate, 0, 128000, 0, 0xB8, 1)
        tags = b"\x03vorbis" + struct.pack("<I", 4) + b"test" + struct.pack("<I", 0) + b"\x01"
        granule = round(seconds * rate)
    else:
        pre_skip = 312
        ident = b"OpusHead" + struct.pack("<BBHIhB", 1, 2, pre_skip, 48000, 0, 0)
        tags = b"OpusTags" + struct.pack("<I", 4) + b"test" + struct.pack("<I", 0)
        granule = round(seconds * 48000) + pre_skip
    pages = []
    for seq, (packet, position) in enumerate([(ident, 0), (tags, 0), (bytes(3000), granule)]):
        page = OggPage()  # type: ignore[no-untyped-call]
        page.serial, page.sequence, page.position = 0x5EED, seq, position
        page.packets = [packet]
        page.first, page.last = seq == 0, seq == 2
        pages.append(page.write())  # type: ignore[no-untyped-call]
    return b"".join(pages)


def _box(name: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), name) + payload


def _full_box(name: bytes, payload: bytes) -> bytes:
    return _box(name, bytes(4) + payload)  # version 0, no flags


def mp4(codec: bytes, seconds: float) -> bytes:
    """An M4A: ftyp, a moov with one sound track of ``codec``, and an mdat of filler."""
    scale = 44100
    entry = (bytes(6) + struct.pack(">H", 1) + bytes(8)
             + struct.pack(">HHHHI", 2, 16, 0, 0, scale << 16) + _box(b"free", b""))
    stsd = _full_box(b"stsd", struct.pack(">I", 1) + _box(codec, entry))
    mdhd = _full_box(b"mdhd", struct.pack(">IIII", 0, 0, scale, round(seconds * scale)) + bytes(4))
    hdlr = _full_box(b"hdlr", bytes(4) + b"soun" + bytes(12) + b"\x00")
    trak = _box(b"trak", _box(b"mdia", mdhd + hdlr + _box(b"minf", _box(b"stbl", stsd))))
    return (_box(b"ftyp", b"M4A \x00\x00\x02\x00M4A isom") + _box(b"moov", trak)
            + _box(b"mdat", bytes(20000)))


def adts(seconds: float) -> bytes:
    """Raw AAC: ADTS frames (LC, 44.1 kHz, stereo) of 1024 samples each."""
    size = 372
    header = bytes([0xFF, 0xF1, (1 << 6) | (4 << 2), (2 << 6) | (size >> 11),
                    (size >> 3) & 0xFF, ((size & 7) << 5) | 0x1F, 0xFC])
    return (header + bytes(size - len(header))) * round(seconds * 44100 / 1024)


HTML = b"<!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head></html>\n"
RANDOM = random.Random(7).randbytes(50_000)

FileMaker = Callable[[], bytes]


@pytest.fixture
def put(tmp_path: Path) -> Callable[[bytes, str], Path]:
    """Write bytes to a file of the given name in a temporary folder."""

    def write(data: bytes, name: str) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    return write


# ---- Accepted ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "fmt", "expected", "options"),
    [
        pytest.param(lambda: wav(5), "wav", 5.0, {}, id="wav-5s"),
        pytest.param(lambda: wav(30), "wav", 30.0, {}, id="wav-30s"),
        pytest.param(lambda: mp3(5), "mp3", 5.0, {}, id="mp3-5s"),
        pytest.param(lambda: mp3(30), "mp3", 30.0, {}, id="mp3-30s"),
        pytest.param(lambda: mp3(30, 192), "mp3", 30.0, {}, id="mp3-30s-mpeg1-192k"),
        # The encoder's padding (5.07 s for 5 s asked) is inside min_slack even with no tolerance.
        pytest.param(lambda: mp3(5), "mp3", 5.0, {"tolerance": 0.0}, id="mp3-padding-in-slack"),
        pytest.param(lambda: with_id3(mp3(30)), "mp3", 30.0, {}, id="mp3-id3-tagged"),
        pytest.param(lambda: mp3_with_xing(30), "mp3", 30.0, {}, id="mp3-xing-header"),
        pytest.param(lambda: wav_with_chunk_before_data(5), "wav", 5.0, {}, id="wav-list-chunk"),
        pytest.param(lambda: wav_streamed(5), "wav", 5.0, {}, id="wav-streamed-size"),
        pytest.param(lambda: wav(30), "wav", None, {}, id="wav-no-expected-length"),
        pytest.param(lambda: wav(30), "WAV", 30.0, {}, id="format-case-insensitive"),
        pytest.param(lambda: flac(30), "flac", 30.0, {}, id="flac"),
        pytest.param(lambda: ogg("vorbis", 30), "ogg", 30.0, {}, id="ogg-vorbis"),
        pytest.param(lambda: ogg("opus", 30), "ogg", 30.0, {}, id="ogg-opus-as-ogg"),
        pytest.param(lambda: ogg("opus", 30), "opus", 30.0, {}, id="opus"),
        pytest.param(lambda: mp4(b"mp4a", 30), "m4a", 30.0, {}, id="m4a"),
        pytest.param(lambda: mp4(b"alac", 30), "m4a", 30.0, {}, id="m4a-alac"),
        pytest.param(lambda: mp4(b"mp4a", 30), "aac", 30.0, {}, id="aac-in-m4a-container"),
        pytest.param(lambda: adts(30), "aac", 30.0, {}, id="aac-adts"),
        pytest.param(lambda: adts(30), "m4a", 30.0, {}, id="adts-for-m4a"),
        pytest.param(lambda: with_id3(adts(30)), "aac", 30.0, {}, id="aac-id3-tagged"),
        # A CBR MP3 cut short states no length of its own: only an expectation can catch it.
        pytest.param(lambda: half(mp3(30)), "mp3", None, {}, id="cut-cbr-mp3-no-expectation"),
        # STREAMINFO's "unknown" sample count: only decoding could tell, so the length is not held
        # against the file.
        pytest.param(lambda: flac(5, known_length=False), "flac", 30.0, {}, id="flac-unknown-length"),
    ],
)
def test_accepts(put: Callable[[bytes, str], Path], make: FileMaker, fmt: str,
                 expected: float | None, options: dict[str, Any]) -> None:
    """Audio of the asked-for format and about the asked-for length passes."""
    path = put(make(), f"download.{fmt.lower()}")
    assert check_audio(path, expected_format=fmt, expected_duration=expected, **options) is None


# ---- Rejected ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "fmt", "expected", "reason", "detail"),
    [
        pytest.param(lambda: wav(5), "mp3", 5.0, "wrong_format", "expected mp3, file is WAV",
                     id="wav-for-mp3"),
        pytest.param(lambda: mp3(5), "wav", 5.0, "wrong_format", "expected wav, file is MP3",
                     id="mp3-for-wav"),
        pytest.param(lambda: flac(5), "ogg", 5.0, "wrong_format", "expected ogg, file is FLAC",
                     id="flac-for-ogg"),
        pytest.param(lambda: ogg("vorbis", 5), "opus", 5.0, "wrong_format",
                     "expected opus, file is Ogg Vorbis", id="vorbis-for-opus"),
        pytest.param(lambda: mp4(b"alac", 5), "aac", 5.0, "wrong_format",
                     "expected aac, file is MP4 holding alac", id="alac-for-aac"),
        pytest.param(lambda: mp4(b"mp4a", 5), "mp3", 5.0, "wrong_format",
                     "expected mp3, file is MP4/M4A", id="m4a-for-mp3"),
        pytest.param(lambda: adts(5), "flac", 5.0, "wrong_format", "expected flac, file is AAC (ADTS)",
                     id="adts-for-flac"),
        pytest.param(lambda: b"FORM\x00\x00\x00\x04AIFF", "wav", 5.0, "wrong_format",
                     "expected wav, file is AIFF", id="aiff-for-wav"),
        pytest.param(lambda: half(mp3(30)), "mp3", 30.0, "truncated",
                     "15.03 s of audio, expected about 30 s (±7.5 s)", id="mp3-cut-in-half"),
        pytest.param(lambda: half(mp3_with_xing(30)), "mp3", None, "truncated",
                     "MP3 header declares 30.07 s but the file holds about 15.0", id="xing-mp3-cut"),
        pytest.param(lambda: half(wav(30)), "wav", 30.0, "truncated",
                     "WAV header declares 30.00 s but the file holds 15.00 s", id="wav-cut-in-half"),
        pytest.param(lambda: wav(30)[:-4], "wav", None, "truncated",
                     "holds 30.00 s (4 bytes of samples missing)", id="wav-missing-last-frame"),
        pytest.param(lambda: mp4(b"mp4a", 30)[:-100], "m4a", 30.0, "truncated",
                     "MP4 file ends inside its 'mdat' box (19908 of 20008 bytes present)",
                     id="m4a-cut"),
        pytest.param(lambda: half(adts(30)), "aac", 30.0, "truncated", "15.00 s of audio",
                     id="adts-cut-in-half"),
        pytest.param(lambda: ogg("opus", 10), "opus", 30.0, "truncated", "10.00 s of audio",
                     id="opus-short"),
        pytest.param(lambda: wav(30), "wav", 5.0, "too_long",
                     "30.00 s of audio, expected about 5 s (±1.25 s)", id="wav-too-long"),
        pytest.param(lambda: mp3(30), "mp3", 20.0, "too_long", "30.07 s of audio", id="mp3-too-long"),
        pytest.param(lambda: flac(60), "flac", 30.0, "too_long", "60.00 s of audio", id="flac-too-long"),
        pytest.param(lambda: b"", "mp3", 5.0, "empty", "file is empty (0 bytes)", id="empty"),
        pytest.param(lambda: with_id3(b""), "mp3", 5.0, "empty", "no audio after a 526-byte ID3 tag",
                     id="id3-tag-only"),
        pytest.param(lambda: HTML, "mp3", 5.0, "unreadable",
                     "not a recognised audio file: text starting '<!DOCTYPE html> <html><head>",
                     id="html-error-page"),
        pytest.param(lambda: b'{"error": "expired"}', "wav", 5.0, "unreadable",
                     """text starting '{"error": "expired"}'""", id="json-error-body"),
        pytest.param(lambda: RANDOM, "mp3", 5.0, "unreadable", "not a recognised audio file",
                     id="random-bytes"),
        pytest.param(lambda: bytes(4096), "wav", 5.0, "unreadable", "unrecognised bytes 00 00",
                     id="zeros"),
        pytest.param(lambda: b"\xff\xfb\x90\x00" + RANDOM, "mp3", 5.0, "unreadable", "MP3",
                     id="mp3-sync-then-garbage"),
        pytest.param(lambda: b"RIFF\x04\x00\x00\x00WAVE", "wav", 5.0, "unreadable",
                     "WAV headers unreadable", id="wav-header-only"),
        pytest.param(lambda: b"fLaC" + RANDOM[:100], "flac", 5.0, "unreadable",
                     "FLAC headers unreadable", id="flac-magic-then-garbage"),
    ],
)
def test_rejects(put: Callable[[bytes, str], Path], make: FileMaker, fmt: str,
                 expected: float | None, reason: str, detail: str) -> None:
    """A file of the wrong format, length or shape is rejected with a reason and a clear detail."""
    problem = check_audio(put(make(), f"download.{fmt}"), expected_format=fmt,
                          expected_duration=expected)
    assert problem is not None
    assert problem.reason == reason
    assert detail in problem.detail


# ---- Where the line falls ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("actual", "expected", "options", "reason"),
    [
        # 25% of 10 s is 2.5 s: both edges are in, a hair beyond is out.
        pytest.param(7.5, 10.0, {}, None, id="tolerance-lower-edge"),
        pytest.param(12.5, 10.0, {}, None, id="tolerance-upper-edge"),
        pytest.param(7.49, 10.0, {}, "truncated", id="below-tolerance"),
        pytest.param(12.51, 10.0, {}, "too_long", id="above-tolerance"),
        # 25% of 2 s is 0.5 s, so min_slack's 1 s governs.
        pytest.param(1.0, 2.0, {}, None, id="slack-lower-edge"),
        pytest.param(3.0, 2.0, {}, None, id="slack-upper-edge"),
        pytest.param(0.99, 2.0, {}, "truncated", id="below-slack"),
        pytest.param(3.01, 2.0, {}, "too_long", id="above-slack"),
        pytest.param(27.0, 30.0, {"tolerance": 0.1}, None, id="custom-tolerance-edge"),
        pytest.param(26.9, 30.0, {"tolerance": 0.1}, "truncated", id="custom-tolerance-out"),
        pytest.param(5.0, 5.0, {"tolerance": 0.0, "min_slack": 0.0}, None, id="exact-only-match"),
        pytest.param(5.01, 5.0, {"tolerance": 0.0, "min_slack": 0.0}, "too_long", id="exact-only-miss"),
    ],
)
def test_length_boundaries(put: Callable[[bytes, str], Path], actual: float, expected: float,
                           options: dict[str, Any], reason: str | None) -> None:
    """|actual - expected| <= max(tolerance * expected, min_slack) is in; anything beyond is out."""
    problem = check_audio(put(wav(actual), "download.wav"), expected_format="wav",
                          expected_duration=expected, **options)
    assert (problem and problem.reason) == reason


# ---- The rest of the contract ------------------------------------------------------------------


def test_container_read_from_bytes_not_name(put: Callable[[bytes, str], Path]) -> None:
    """A WAV named .flac is a WAV: it passes as wav and is the wrong format for flac."""
    path = put(wav(5), "download.flac")
    assert check_audio(path, expected_format="wav", expected_duration=5.0) is None
    assert check_audio(path, expected_format="flac", expected_duration=5.0) == AudioProblem(
        "wrong_format", "expected flac, file is WAV"
    )


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    """A file that cannot be opened is reported, not raised."""
    problem = check_audio(tmp_path / "gone.mp3", expected_format="mp3", expected_duration=5.0)
    assert problem is not None and problem.reason == "unreadable"
    assert "No such file" in problem.detail


class _CountingReader(io.BufferedReader):
    """A binary file that tallies the bytes read through it."""

    total = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        _CountingReader.total += len(data)
        return data


class _CountingPath(type(Path())):  # type: ignore[misc]  # the concrete PosixPath/WindowsPath
    def open(self, *args: Any, **kwargs: Any) -> Any:
        return _CountingReader(io.FileIO(self, "rb"))


@pytest.mark.parametrize("make", [pytest.param(lambda: wav(60), id="wav-60s"),
                                  pytest.param(lambda: mp3(60), id="mp3-60s")])
def test_reads_headers_only(put: Callable[[bytes, str], Path], make: FileMaker) -> None:
    """A check reads a few kilobytes, not the audio: it runs on every download."""
    data = make()
    path = _CountingPath(put(data, "download.bin"))
    _CountingReader.total = 0
    fmt = "wav" if data.startswith(b"RIFF") else "mp3"
    assert check_audio(path, expected_format=fmt, expected_duration=60.0) is None
    assert 0 < _CountingReader.total < 16_384 < len(data) // 10


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"expected_format": "wma", "expected_duration": 5.0}, id="unknown-format"),
        pytest.param({"expected_format": "mp3", "expected_duration": 0.0}, id="zero-duration"),
        pytest.param({"expected_format": "mp3", "expected_duration": float("nan")}, id="nan-duration"),
        pytest.param({"expected_format": "mp3", "expected_duration": 5.0, "tolerance": -0.1},
                     id="negative-tolerance"),
        pytest.param({"expected_format": "mp3", "expected_duration": 5.0, "min_slack": float("inf")},
                     id="infinite-slack"),
    ],
)
def test_caller_mistakes_raise(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    """Nonsense arguments are the caller's bug and raise ValueError, whatever the file."""
    with pytest.raises(ValueError):
        check_audio(tmp_path / "x.mp3", **kwargs)


def test_problem_reads_as_reason_and_detail() -> None:
    """str() of a problem is what a log line or a manifest needs."""
    assert str(AudioProblem("empty", "file is empty (0 bytes)")) == "empty: file is empty (0 bytes)"
