"""Synthesises cheap, deterministic, playable WAV/MP3 files for the provider emulator."""

from __future__ import annotations

import array
import functools
import hashlib
import json
import math
import struct
import sys
from typing import NamedTuple

import lameenc

__all__ = ["CONTENT_TYPES", "SUPPORTED_FORMATS", "render_audio"]

SUPPORTED_FORMATS: frozenset[str] = frozenset({"wav", "mp3"})
CONTENT_TYPES: dict[str, str] = {"wav": "audio/wav", "mp3": "audio/mpeg"}

WAV_RATE = 44100
# Stereo because real providers return stereo WAVs; the second channel is a rotated copy of
# the first, so it costs one slice rather than a second render.
WAV_CHANNELS = 2
_SAMPLE_WIDTH = 2

# MPEG-2 (22050 Hz) tops out at 160 kbps; above that LAME would silently cap the bitrate, so
# higher requests are rendered at the MPEG-1 rate to keep file sizes honest.
_MP3_LOW_RATE = 22050
_MP3_HIGH_RATE = 44100
_MP3_LOW_RATE_MAX_KBPS = 160
_MP3_DEFAULT_KBPS = 64
_MP3_QUALITY = 7  # LAME's fast end: the emulator cares about CPU, not transparency.
_MP3_BITRATES = frozenset(
    {8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160, 192, 224, 256, 320}
)

# RIFF sizes are unsigned 32-bit; beyond this a WAV cannot be represented at all.
_MAX_WAV_DATA_BYTES = 0xFFFFFFFF - 36

_STEPS = 16  # two 8-step phrases of eighth notes: long enough not to sound like a buzz
_PENTATONIC_MAJOR = (0, 2, 4, 7, 9)
_PENTATONIC_MINOR = (0, 3, 5, 7, 10)
# Each wavetable holds enough whole cycles to be this long, so rounding the table length to
# whole samples detunes notes by only a few cents even for high notes at 22050 Hz.
_MIN_TABLE_SAMPLES = 192
_ENVELOPE_LEVELS = 48
_PEAK = 0.6 * 32767  # headroom keeps the lossy encoder from clipping overshoots
_LOOP_CACHE_SIZE = 32  # a loop is at most ~1 MB (stereo, slowest tempo), so this bounds memory


class _LoopParams(NamedTuple):
    """Hash-derived musical parameters; hashable so rendered loops can be cached on them."""

    bpm: int
    notes: tuple[int | None, ...]  # MIDI note per eighth-note step, None for a rest
    harmonics: tuple[float, ...]  # relative amplitude of partials 1..n: the timbre
    decay_s: float  # exponential decay time constant: plucky vs sustained
    gate: float  # fraction of each step that sounds: staccato vs legato
    stereo_delay_s: float  # Haas-style offset of the right channel


def render_audio(
    prompt: str,
    seed: int | None,
    duration: float,
    fmt: str,
    *,
    bitrate_kbps: int | None = None,
) -> bytes:
    """Return a complete audio file (WAV or MP3 bytes) `duration` seconds long (±1 frame),
    deterministic in all arguments."""
    if fmt not in SUPPORTED_FORMATS:
        raise ValueError(
            f"unsupported audio format {fmt!r}; expected one of {sorted(SUPPORTED_FORMATS)}"
        )
    if not math.isfinite(duration) or duration <= 0:
        raise ValueError(f"duration must be a positive finite number of seconds, got {duration!r}")
    params = _derive_params(prompt, seed)
    if fmt == "wav":
        return _render_wav(params, duration)
    kbps = _MP3_DEFAULT_KBPS if bitrate_kbps is None else bitrate_kbps
    if kbps not in _MP3_BITRATES:
        raise ValueError(
            f"unsupported MP3 bitrate {bitrate_kbps!r} kbps; valid: {sorted(_MP3_BITRATES)}"
        )
    return _render_mp3(params, duration, kbps)


def _derive_params(prompt: str, seed: int | None) -> _LoopParams:
    # JSON keeps (prompt, seed) unambiguous (no separator collisions) and, unlike hash(), is
    # stable across processes; SHAKE gives as many bytes as the parameters need.
    # ASCII escaping also keeps lone surrogates in a prompt from failing to encode.
    key = json.dumps([prompt, seed]).encode("ascii")
    stream = iter(hashlib.shake_256(key).digest(64))

    def pick(n: int) -> int:
        return next(stream) % n

    bpm = 84 + pick(60)
    root = 45 + pick(12)  # A2..G#3: keeps two octaves of melody in a comfortable range
    scale = _PENTATONIC_MINOR if pick(2) else _PENTATONIC_MAJOR
    degrees = [root + 12 * octave + step for octave in range(2) for step in scale] + [root + 24]

    def phrase(start: int) -> list[int | None]:
        idx = start
        out: list[int | None] = []
        for i in range(8):
            if i and pick(6) == 0:
                out.append(None)
                continue
            # Mostly stepwise motion with occasional leaps reads as a melody, not noise.
            idx = min(max(idx + (-2, -1, -1, 0, 1, 1, 2, 3)[pick(8)], 0), len(degrees) - 1)
            out.append(degrees[idx])
        return out

    first = phrase(pick(len(degrees)))
    # The answering phrase repeats the opening half and varies the ending, like a real riff.
    second = first[:4] + phrase(pick(len(degrees)))[4:]
    second[-1] = degrees[0] if pick(2) else degrees[5]  # resolve to the root or its octave

    odd_only = pick(3) == 0  # hollow, clarinet-like timbre instead of a sawtooth-like one
    brightness = 0.25 + pick(50) / 100
    harmonics = tuple(
        0.0 if odd_only and h % 2 == 0 else brightness ** (h - 1) for h in range(1, 7)
    )
    return _LoopParams(
        bpm=bpm,
        notes=tuple(first + second),
        harmonics=harmonics,
        decay_s=0.06 + pick(40) / 100,
        gate=0.6 + pick(40) / 100,
        stereo_delay_s=0.006 + pick(15) / 1000,
    )


def _render_wav(params: _LoopParams, duration: float) -> bytes:
    frames = max(1, round(duration * WAV_RATE))
    data_len = frames * WAV_CHANNELS * _SAMPLE_WIDTH
    if data_len > _MAX_WAV_DATA_BYTES:
        raise ValueError(f"duration {duration!r} s is too long for a WAV file")
    loop = _render_loop(params, WAV_RATE, WAV_CHANNELS)
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + data_len,
        b"WAVE",
        b"fmt ",
        16,
        1,  # PCM
        WAV_CHANNELS,
        WAV_RATE,
        WAV_RATE * WAV_CHANNELS * _SAMPLE_WIDTH,
        WAV_CHANNELS * _SAMPLE_WIDTH,
        8 * _SAMPLE_WIDTH,
        b"data",
        data_len,
    )
    return header + _tile(loop, data_len)


def _render_mp3(params: _LoopParams, duration: float, kbps: int) -> bytes:
    rate = _MP3_LOW_RATE if kbps <= _MP3_LOW_RATE_MAX_KBPS else _MP3_HIGH_RATE
    frames = max(1, round(duration * rate))
    pcm = _tile(_render_loop(params, rate, 1), frames * _SAMPLE_WIDTH)
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(kbps)
    encoder.set_in_sample_rate(rate)
    encoder.set_out_sample_rate(rate)  # stop LAME from resampling: that would cost CPU
    encoder.set_channels(1)  # mono halves encoding cost; nobody listens closely to the emulator
    encoder.set_quality(_MP3_QUALITY)
    return bytes(encoder.encode(pcm) + encoder.flush())


def _tile(loop: bytes, length: int) -> bytes:
    # Byte repetition runs at memcpy speed, which is what makes long files cheap.
    whole, rest = divmod(length, len(loop))
    return loop * whole + loop[:rest]


@functools.lru_cache(maxsize=_LOOP_CACHE_SIZE)
def _render_loop(params: _LoopParams, rate: int, channels: int) -> bytes:
    """Render one seamless loop as interleaved little-endian 16-bit PCM."""
    step_len = round(rate * 60 / params.bpm / 2)
    tables: dict[int, list[float]] = {}
    scaled: dict[tuple[int, int], bytes] = {}
    silence = bytes(_SAMPLE_WIDTH)
    chunks: list[bytes] = []
    for note in params.notes:
        if note is None:
            chunks.append(silence * step_len)
            continue
        if note not in tables:
            tables[note] = _wavetable(note, params.harmonics, rate)
        table = tables[note]
        table_len = len(table)
        sounding = int(step_len * params.gate) // table_len
        attack = max(1, round(0.004 * rate / table_len))
        played = 0
        for rep in range(sounding):
            t = rep * table_len / rate
            gain = math.exp(-t / params.decay_s) * min(1.0, (rep + 1) / attack)
            level = round(gain * _ENVELOPE_LEVELS)
            if level == 0:
                # Stop once inaudible: the rest of the step is silence anyway.
                break
            chunk_key = (note, level)
            chunk = scaled.get(chunk_key)
            if chunk is None:
                factor = level / _ENVELOPE_LEVELS
                # Tables start and end at zero crossings, so stepping the gain between whole
                # tables does not click.
                chunk = array.array("h", [round(v * factor) for v in table]).tobytes()
                scaled[chunk_key] = chunk
            chunks.append(chunk)
            played += 1
        chunks.append(silence * (step_len - played * table_len))
    mono = array.array("h")
    mono.frombytes(b"".join(chunks))
    if sys.byteorder == "big":
        mono.byteswap()  # WAV and LAME both expect little-endian samples
    if channels == 1:
        return mono.tobytes()
    # Rotating the loop (rather than delaying it) keeps the right channel seamless too.
    delay = round(params.stereo_delay_s * rate)
    right = mono[-delay:] + mono[:-delay]
    stereo = array.array("h", bytes(2 * len(mono) * _SAMPLE_WIDTH))
    stereo[0::2] = mono
    stereo[1::2] = right
    return stereo.tobytes()


def _wavetable(note: int, harmonics: tuple[float, ...], rate: int) -> list[float]:
    """One note's waveform: a whole number of cycles, scaled to the common peak level."""
    freq = 440.0 * 2 ** ((note - 69) / 12)
    cycles = max(1, math.ceil(_MIN_TABLE_SAMPLES * freq / rate))
    length = round(cycles * rate / freq)
    two_pi_over = 2 * math.pi / length
    table = [
        sum(
            amp * math.sin(two_pi_over * cycles * h * i)
            for h, amp in enumerate(harmonics, start=1)
            if amp
        )
        for i in range(length)
    ]
    peak = max(abs(v) for v in table) or 1.0
    scale = _PEAK / peak
    return [v * scale for v in table]
