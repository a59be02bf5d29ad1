"""Which container an output path means, which encoder and pixel format to use, and how to configure it."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import av
from av.codec import find_best_pix_fmt_of_list

from vidgpen.errors import OptionError, OutputError

# Output extension -> FFmpeg muxer.
CONTAINER_FORMATS = {
    ".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm",
}

X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                "veryslow", "placebo")
# CPU milliseconds per 1280x720 frame, libx264 at CRF 18 with 2 threads, measured on the 2-core development machine
# (an AVX-512 Xeon with AMX; fast and medium measured under load, the others rechecked idle). GPEN-BFR-256
# costs ~66 CPU-ms per face there in bf16 (33 ms on 2 cores; ~230 CPU-ms in fp32 with AVX2 kernels only),
# GPEN-BFR-512 ~700 CPU-ms: veryfast keeps encoding below the model.
X264_PRESET_CPU_MS_720P = {"ultrafast": 9, "superfast": 25, "veryfast": 37, "faster": 57, "fast": 77, "medium": 113}
MAX_ENCODER_THREADS = 16


@dataclass(frozen=True)
class EncoderProfile:
    """How vidgpen drives one FFmpeg video encoder.

    ``crf_option``/``preset_option`` are the encoder's AVOption names (None: not supported).
    Defaults aim at "looks like the input": a low CRF, since every re-encode loses detail.
    """

    encoder: str
    family: str  # FFmpeg codec name of what it produces (what an input stream reports)
    crf_option: str | None = None
    default_crf: int | None = None
    crf_range: tuple[int, int] | None = None
    preset_option: str | None = None
    default_preset: str | None = None
    presets: tuple[str, ...] = ()
    fixed_options: dict[str, str] = field(default_factory=dict)
    max_side: int | None = None  # largest width or height the encoder opens with (FFmpeg 8.1's wrappers)
    threads_option: str | None = None  # set to encoder_threads(): pinned, since x264's bytes depend on it


ENCODERS: dict[str, EncoderProfile] = {
    p.encoder: p for p in (
        # cpu-independent: with x264's CPU-specific assembly (AVX-512 here) the same frames gave different files
        # depending on what the heap held before the encode (mbtree with B-frames; asm=0 or this option fix it;
        # ~8% slower encoding). Resumed runs must reproduce an uninterrupted run's bytes.
        # No level is set: x264 picks the lowest H.264 level that holds the frame size and rate, so an upscaled
        # picture gets a level that fits it. veryfast: see X264_PRESET_CPU_MS_720P; medium cost more than GPEN-256
        # itself at 1080p.
        EncoderProfile("libx264", "h264", "crf", 18, (0, 51), "preset", "veryfast", X26X_PRESETS,
                       {"x264-params": "cpu-independent=1"}, max_side=16384, threads_option="threads"),
        EncoderProfile("libx265", "hevc", "crf", 20, (0, 51), "preset", "medium", X26X_PRESETS,
                       {"x265-params": "log-level=error"}),
        EncoderProfile("libsvtav1", "av1", "crf", 25, (1, 63), "preset", "8",
                       tuple(str(i) for i in range(14)), max_side=16384),
        # libvpx needs bit rate 0 for pure constant-quality mode.
        EncoderProfile("libvpx-vp9", "vp9", "crf", 24, (0, 63), "cpu-used", "2",
                       tuple(str(i) for i in range(9)), {"b": "0", "row-mt": "1"}),
        EncoderProfile("libvpx", "vp8", "crf", 10, (4, 63), "cpu-used", "2",
                       tuple(str(i) for i in range(17)), {"b": "20M"}, max_side=16383),
        EncoderProfile("prores_ks", "prores", None, None, None, "profile", None,
                       ("proxy", "lt", "standard", "hq", "4444", "4444xq")),
        EncoderProfile("ffv1", "ffv1", fixed_options={"level": "3"}),
        # MPEG-4 part 2 has no constant-quality mode reachable through PyAV; a generous bit rate instead.
        EncoderProfile("mpeg4", "mpeg4", fixed_options={"b": "8M"}, max_side=8191),
    )
}
FAMILY_TO_ENCODER = {p.family: p.encoder for p in ENCODERS.values()}
FALLBACK_ENCODERS = ("libx264", "libvpx-vp9", "libsvtav1")


def container_format_for(path: Path) -> str:
    """The FFmpeg muxer for an output path, chosen by its extension; :class:`OutputError` if unknown."""
    fmt = CONTAINER_FORMATS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(CONTAINER_FORMATS))
        raise OutputError(f"{path}: unknown output extension {path.suffix or '(none)'!r}; use one of {known}")
    return fmt


def _encoder_available(name: str) -> bool:
    return name in av.codecs_available


def container_accepts(container_format: str, codec_family: str) -> bool:
    """Whether the muxer can hold a stream of this codec (FFmpeg's ``avformat_query_codec``)."""
    with av.open(io.BytesIO(), "w", format=container_format) as probe_container:
        return codec_family in probe_container.supported_codecs


def resolve_encoder(codec: str | None, source_family: str, container_format: str,
                    extension: str) -> EncoderProfile:
    """Pick the encoder: the requested one (encoder or codec name), else the input's family, else a fallback.

    Raises OptionError for an unknown codec, OutputError when the container cannot hold the requested one.
    """
    if codec is not None:
        name = FAMILY_TO_ENCODER.get(codec.lower(), codec.lower())
        profile = ENCODERS.get(name)
        if profile is None or not _encoder_available(name):
            choices = ", ".join(sorted(set(FAMILY_TO_ENCODER) | set(ENCODERS)))
            raise OptionError(f"unknown or unavailable video codec {codec!r}; choose one of {choices}")
        if not container_accepts(container_format, profile.family):
            raise OutputError(
                f"a {extension} file cannot hold {profile.family} video; pick another codec or extension"
            )
        return profile
    candidates = [FAMILY_TO_ENCODER[source_family]] if source_family in FAMILY_TO_ENCODER else []
    candidates += list(FALLBACK_ENCODERS)
    for name in candidates:
        profile = ENCODERS[name]
        if _encoder_available(name) and container_accepts(container_format, profile.family):
            return profile
    raise OutputError(f"no available video encoder can write a {extension} file; use .mkv or .mp4")


def resolve_pix_fmt(profile: EncoderProfile, source_pix_fmt: str, requested: str | None) -> str:
    """The output pixel format: the requested one if the encoder takes it, else the closest to the source.

    "Closest" is FFmpeg's choice among the encoder's formats, preferring no loss of bit depth or chroma
    resolution, so 10-bit stays 10-bit where the encoder allows. JPEG-range ``yuvj*`` formats are
    deprecated; their full range is carried by the colour tags instead.
    """
    supported = [f.name for f in (av.Codec(profile.encoder, "w").video_formats or [])]
    if requested is not None:
        if requested not in supported:
            raise OptionError(
                f"{profile.encoder} cannot encode pixel format {requested!r}; choose one of {', '.join(supported)}"
            )
        return requested
    source = source_pix_fmt.replace("yuvj", "yuv")
    candidates = [name for name in supported if not name.startswith("yuvj")]
    if source in candidates:
        return source
    best, _loss = find_best_pix_fmt_of_list(candidates, source)
    return best.name if best is not None else candidates[0]


def check_frame_size(profile: EncoderProfile, width: int, height: int) -> None:
    """:class:`OutputError` when the encoder cannot take a ``width x height`` picture (e.g. after --upscale)."""
    if profile.max_side is not None and max(width, height) > profile.max_side:
        raise OutputError(
            f"{profile.encoder} cannot encode {width}x{height} frames (at most {profile.max_side} pixels a side); "
            "choose a smaller --upscale, or --codec hevc, vp9, prores or ffv1"
        )
def encoder_threads() -> int:
    """Threads the encoder runs (beside the pipeline's threads): the CPUs this process may use, at most 16.

    x264 is frame-threaded, so encoding proceeds in its own threads while the model runs; its output bytes depend
    on the thread count, so the count is fixed here (not left to "auto") and resumed runs check it."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        available = os.cpu_count() or 1
    return max(1, min(MAX_ENCODER_THREADS, available))


def encoder_options(profile: EncoderProfile, crf: int | None, preset: str | None,
                    pix_fmt: str) -> dict[str, str]:
    """AVOptions for the encoder; :class:`OptionError` for a CRF or preset it does not take."""
    options = dict(profile.fixed_options)
    if crf is not None:
        if profile.crf_option is None:
            raise OptionError(f"{profile.encoder} has no CRF setting; leave out the crf option")
        low, high = profile.crf_range
        if not low <= crf <= high:
            raise OptionError(f"crf {crf} is out of range for {profile.encoder}; use {low}..{high}")
    if profile.crf_option is not None:
        options[profile.crf_option] = str(crf if crf is not None else profile.default_crf)
    if preset is not None:
        if profile.preset_option is None:
            raise OptionError(f"{profile.encoder} has no presets; leave out the preset option")
        if preset not in profile.presets:
            raise OptionError(f"unknown preset {preset!r} for {profile.encoder}; choose one of "
                              f"{', '.join(profile.presets)}")
    chosen_preset = preset if preset is not None else profile.default_preset
    if profile.encoder == "prores_ks" and chosen_preset is None:
        chosen_preset = "4444" if pix_fmt.startswith(("yuv444", "yuva444")) else "hq"
    if profile.preset_option is not None and chosen_preset is not None:
        options[profile.preset_option] = chosen_preset
    if profile.threads_option is not None:
        options[profile.threads_option] = str(encoder_threads())
    return options
