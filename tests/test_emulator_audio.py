"""Tests for the emulator's deterministic WAV/MP3 synthesiser."""

from __future__ import annotations

import array
import importlib
import importlib.util
import io
import math
import sys
import wave
from typing import Any

import pytest

from stableaudio_async.emulator.audio import CONTENT_TYPES, SUPPORTED_FORMATS, render_audio

# (version bits, layer bits) -> kbps per bitrate index, for Layer III only.
_MPEG1_KBPS = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_MPEG2_KBPS = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
_MPEG1_RATES = (44100, 48000, 32000)
_MPEG2_RATES = (22050, 24000, 16000)


def _read_wav(data: bytes) -> tuple[tuple[int, int, int, int], array.array[int]]:
    """Parse with the stdlib reader: returns ((rate, channels, width, frames), samples)."""
    with wave.open(io.BytesIO(data)) as reader:
        params = reader.getparams()
        samples = array.array("h", reader.readframes(params.nframes))
    if sys.byteorder == "big":
        samples.byteswap()
    return (params.framerate, params.nchannels, params.sampwidth, params.nframes), samples


def _mp3_duration(data: bytes) -> tuple[float, int]:
    """Walk the MPEG Layer III frames and return (seconds of audio, frame count)."""
    pos = 0
    if data.startswith(b"ID3"):
        size = (data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9]
        pos = 10 + size
    seconds = 0.0
    frames = 0
    while pos + 4 <= len(data):
        b1, b2 = data[pos + 1], data[pos + 2]
        assert data[pos] == 0xFF and b1 & 0xE0 == 0xE0, f"lost frame sync at byte {pos}"
        mpeg1 = (b1 >> 3) & 0b11 == 0b11
        assert (b1 >> 1) & 0b11 == 0b01, "not Layer III"
        kbps = (_MPEG1_KBPS if mpeg1 else _MPEG2_KBPS)[b2 >> 4]
        rate = (_MPEG1_RATES if mpeg1 else _MPEG2_RATES)[(b2 >> 2) & 0b11]
        padding = (b2 >> 1) & 1
        samples_per_frame = 1152 if mpeg1 else 576
        pos += samples_per_frame // 8 * kbps * 1000 // rate + padding
        seconds += samples_per_frame / rate
        frames += 1
    assert pos == len(data), "trailing garbage after the last MPEG frame"
    return seconds, frames


def test_public_constants() -> None:
    """The advertised formats and their content types line up."""
    assert sorted(SUPPORTED_FORMATS) == ["mp3", "wav"]
    assert CONTENT_TYPES == {"wav": "audio/wav", "mp3": "audio/mpeg"}


@pytest.mark.parametrize("duration", [5.0, 2.5, 0.01, 7.123])
def test_wav_header_and_exact_frame_count(duration: float) -> None:
    """A WAV is 44.1 kHz 16-bit stereo with exactly round(duration * rate) frames."""
    data = render_audio("ambient pad", 7, duration, "wav")
    (rate, channels, width, frames), samples = _read_wav(data)
    assert (rate, channels, width) == (44100, 2, 2)
    assert frames == round(duration * 44100)
    assert len(samples) == 2 * frames
    assert len(data) == 44 + 4 * frames


def test_wav_is_deterministic() -> None:
    """The same prompt, seed and duration give byte-identical WAVs."""
    assert render_audio("lofi beat", 3, 4.0, "wav") == render_audio("lofi beat", 3, 4.0, "wav")


def test_wav_varies_with_seed_and_prompt() -> None:
    """Changing the seed or the prompt changes the audio itself."""
    base = render_audio("lofi beat", 3, 4.0, "wav")
    assert render_audio("lofi beat", 4, 4.0, "wav") != base
    assert render_audio("lofi beat", None, 4.0, "wav") != base
    assert render_audio("lofi beats", 3, 4.0, "wav") != base
    assert render_audio("lofi beat", None, 4.0, "wav") != render_audio("lofi beat", 0, 4.0, "wav")


def test_wav_is_audible_and_stereo() -> None:
    """The WAV carries loud, non-clipping sound and its channels differ."""
    _, samples = _read_wav(render_audio("drone", 1, 3.0, "wav"))
    peak = max(abs(s) for s in samples)
    assert 1000 < peak < 32767
    assert samples[0::2] != samples[1::2]


def test_mp3_frames_and_size() -> None:
    """An MP3 starts with a frame sync and its size matches bitrate * duration."""
    duration = 5.0
    data = render_audio("synthwave", 11, duration, "mp3")
    assert data.startswith(b"ID3") or (data[0] == 0xFF and data[1] & 0xE0 == 0xE0)
    expected = 64_000 / 8 * duration
    assert 0.8 * expected <= len(data) <= 1.2 * expected
    seconds, _ = _mp3_duration(data)
    # LAME pads with encoder delay and a final partial frame, roughly 0.1 s at 22050 Hz.
    assert duration <= seconds <= duration + 0.2


@pytest.mark.parametrize("kbps", [32, 128, 192, 320])
def test_mp3_honours_bitrate(kbps: int) -> None:
    """Explicit bitrates, including MPEG-1-only ones, yield proportionally sized files."""
    duration = 4.0
    data = render_audio("synthwave", 11, duration, "mp3", bitrate_kbps=kbps)
    expected = kbps * 1000 / 8 * duration
    assert 0.8 * expected <= len(data) <= 1.2 * expected
    seconds, _ = _mp3_duration(data)
    assert duration <= seconds <= duration + 0.2


def test_mp3_is_deterministic_and_varies() -> None:
    """Identical arguments give identical MP3 bytes; a new seed gives new bytes."""
    first = render_audio("jazz trio", 5, 3.0, "mp3")
    assert render_audio("jazz trio", 5, 3.0, "mp3") == first
    assert render_audio("jazz trio", 6, 3.0, "mp3") != first


def test_mp3_duration_with_mutagen() -> None:
    """When mutagen is installed, it agrees on the MP3 duration."""
    if importlib.util.find_spec("mutagen") is None:
        pytest.skip("mutagen not installed")
    # Imported dynamically so type checking does not depend on mutagen being installed.
    mp3_type: Any = importlib.import_module("mutagen.mp3").MP3
    info = mp3_type(io.BytesIO(render_audio("jazz trio", 5, 6.0, "mp3"))).info
    assert math.isclose(info.length, 6.0, abs_tol=0.25)
    assert info.sample_rate == 22050
    assert info.channels == 1


@pytest.mark.parametrize(
    ("duration", "fmt", "kbps"),
    [
        (5.0, "flac", None),
        (0.0, "wav", None),
        (-1.0, "mp3", None),
        (math.nan, "wav", None),
        (math.inf, "wav", None),
        (5.0, "mp3", 100),
        (5.0, "mp3", 0),
    ],
)
def test_rejects_bad_arguments(duration: float, fmt: str, kbps: int | None) -> None:
    """Unsupported formats, non-positive durations and odd bitrates raise ValueError."""
    with pytest.raises(ValueError):
        render_audio("x", 1, duration, fmt, bitrate_kbps=kbps)


def test_long_wav_renders() -> None:
    """A 190 s WAV renders at full size from the tiled loop."""
    data = render_audio("long form", 99, 190.0, "wav")
    assert len(data) == 44 + 190 * 44100 * 4
    (rate, _, _, frames), samples = _read_wav(data)
    assert (rate, frames, len(samples)) == (44100, 190 * 44100, 2 * 190 * 44100)
