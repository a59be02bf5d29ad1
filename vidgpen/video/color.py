"""Colour tags of a video stream: the four numbers FFmpeg stores, their names, and the swscale matrix to use.

The numbers are FFmpeg's ``AVColorPrimaries``, ``AVColorTransferCharacteristic``, ``AVColorSpace`` and
``AVColorRange`` (ISO/IEC 23091-4 code points); the names are the ones ``ffprobe`` prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
import av.filter
import numpy as np
from av.video.reformatter import Interpolation

PRIMARIES_NAMES = {
    0: "reserved", 1: "bt709", 2: "unknown", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m",
    8: "film", 9: "bt2020", 10: "smpte428", 11: "smpte431", 12: "smpte432", 22: "ebu3213",
}
TRANSFER_NAMES = {
    0: "reserved", 1: "bt709", 2: "unknown", 4: "gamma22", 5: "gamma28", 6: "smpte170m", 7: "smpte240m",
    8: "linear", 9: "log100", 10: "log316", 11: "iec61966-2-4", 12: "bt1361e", 13: "iec61966-2-1",
    14: "bt2020-10", 15: "bt2020-12", 16: "smpte2084", 17: "smpte428", 18: "arib-std-b67",
}
MATRIX_NAMES = {
    0: "gbr", 1: "bt709", 2: "unknown", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "ycgco",
    9: "bt2020nc", 10: "bt2020c", 11: "smpte2085", 12: "chroma-derived-nc", 13: "chroma-derived-c", 14: "ictcp",
}
RANGE_NAMES = {0: "unknown", 1: "tv", 2: "pc"}

UNSPECIFIED = 2  # AVCOL_*_UNSPECIFIED for primaries, transfer and matrix
RANGE_UNSPECIFIED, RANGE_LIMITED, RANGE_FULL = 0, 1, 2

# swscale flags for every RGB <-> YUV conversion. With swscale's defaults a 4:2:0 round trip darkens the
# picture by about 1.2 levels of 255 (truncating rounding, chroma not interpolated); with these, on a smooth
# picture, RGB -> yuv420p -> RGB changes 0.01 levels on average and the mean does not move.
SWS_FLAGS = (Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
             | Interpolation.FULL_CHR_H_INP)
SCALE_FILTER_FLAGS = "bicubic+accurate_rnd+full_chroma_int+full_chroma_inp"

# Decoders of these codecs place subsampled chroma "left" (MPEG-2 style) when the stream does not say;
# the others (VP9, AV1, ProRes, FFV1) leave it unspecified, which swscale treats as centred. Encoding with
# the wrong siting shifts the colours a quarter pixel sideways on every pass.
LEFT_SITED_CODECS = frozenset({"h264", "hevc", "mpeg4", "mpeg2video", "vvc"})

# AVColorSpace -> the scale filter's matrix names; unknown is BT.601, as swscale assumes when decoding.
_SCALE_FILTER_MATRIX = {1: "bt709", 4: "fcc", 5: "bt470", 6: "smpte170m", 7: "smpte240m", 9: "bt2020",
                        10: "bt2020"}


@dataclass(frozen=True)
class ColorTags:
    """The colour description of a video stream, as FFmpeg code points (see module docstring)."""

    primaries: int = UNSPECIFIED
    transfer: int = UNSPECIFIED
    matrix: int = UNSPECIFIED
    range: int = RANGE_UNSPECIFIED

    @property
    def names(self) -> dict[str, str]:
        """``{"primaries": "bt709", "transfer": "bt709", "matrix": "bt709", "range": "tv"}``."""
        return {
            "primaries": PRIMARIES_NAMES.get(self.primaries, f"code {self.primaries}"),
            "transfer": TRANSFER_NAMES.get(self.transfer, f"code {self.transfer}"),
            "matrix": MATRIX_NAMES.get(self.matrix, f"code {self.matrix}"),
            "range": RANGE_NAMES.get(self.range, f"code {self.range}"),
        }

    @classmethod
    def from_av(cls, obj) -> "ColorTags":
        """Read the tags of a PyAV video frame or codec context."""
        return cls(
            primaries=int(obj.color_primaries), transfer=int(obj.color_trc),
            matrix=int(obj.colorspace), range=int(obj.color_range),
        )

    def apply_to(self, obj) -> None:
        """Write the tags onto a PyAV video frame or (encoder) codec context."""
        obj.color_primaries = self.primaries
        obj.color_trc = self.transfer
        obj.colorspace = self.matrix
        obj.color_range = self.range


# Luma weights (Kr, Kb) of the matrices whose full-range conversion vidgpen computes itself.
_LUMA_WEIGHTS = {1: (0.2126, 0.0722), 2: (0.299, 0.114), 4: (0.30, 0.11), 5: (0.299, 0.114),
                 6: (0.299, 0.114), 7: (0.212, 0.087), 9: (0.2627, 0.0593), 10: (0.2627, 0.0593)}


def rgb_to_full_range_yuv444(rgb: np.ndarray, matrix: int) -> np.ndarray:
    """``[H, W, 3]`` RGB (uint8, or uint16 on 0..65535) -> ``[3, H, W]`` full-range Y, Cb, Cr of the same dtype.

    swscale's RGB -> full-range YUV rounds chroma half a level low (8-bit), so a restore pass would tint
    full-range phone videos; this is the exact matrix, rounded to nearest.
    """
    kr, kb = _LUMA_WEIGHTS[matrix]
    peak = 65535.0 if rgb.dtype == np.uint16 else 255.0
    red, green, blue = (rgb[..., i].astype(np.float32) for i in range(3))
    luma = kr * red + (1.0 - kr - kb) * green + kb * blue
    middle = (peak + 1) / 2
    planes = np.stack([luma, (blue - luma) * (0.5 / (1.0 - kb)) + middle, (red - luma) * (0.5 / (1.0 - kr)) + middle])
    return np.clip(np.rint(planes), 0, peak).astype(rgb.dtype)


class RgbToYuv:
    """Converts RGB arrays into encoder-ready frames with a stream's matrix, range and chroma siting.

    PyAV cannot set a frame's chroma location, so this runs FFmpeg's ``scale`` filter, which can.
    Full-range output is converted to 4:4:4 by :func:`rgb_to_full_range_yuv444` first and the filter only
    subsamples. Output frames carry ``tags``. One instance per output stream (fixed size and formats).
    """

    def __init__(self, width: int, height: int, high_bit: bool, pix_fmt: str, tags: ColorTags,
                 chroma_location: str) -> None:
        self._tags = tags
        self._own_matrix = (tags.range == RANGE_FULL and tags.matrix in _LUMA_WEIGHTS
                            and not av.VideoFormat(pix_fmt).is_rgb)
        if self._own_matrix:
            self._source_format = "yuv444p16le" if high_bit else "yuv444p"
        else:
            self._source_format = "rgb48le" if high_bit else "rgb24"
        matrix = _SCALE_FILTER_MATRIX.get(tags.matrix, "bt601")
        value_range = "pc" if tags.range == RANGE_FULL else "tv"
        options = (f"out_color_matrix={matrix}:out_range={value_range}:out_chroma_loc={chroma_location}:"
                   f"flags={SCALE_FILTER_FLAGS}")
        if self._own_matrix:
            options = f"in_color_matrix={matrix}:in_range=pc:" + options
        self._graph = av.filter.Graph()
        source = self._graph.add_buffer(width=width, height=height, format=self._source_format,
                                        time_base=Fraction(1, 1))
        scale = self._graph.add("scale", options)
        pixel_format = self._graph.add("format", pix_fmt)
        sink = self._graph.add("buffersink")
        source.link_to(scale)
        scale.link_to(pixel_format)
        pixel_format.link_to(sink)
        self._graph.configure()
        self._count = 0

    def __call__(self, rgb: np.ndarray) -> av.VideoFrame:
        """``[H, W, 3]`` uint8 (or uint16 when built with ``high_bit``) RGB -> a tagged frame."""
        if self._own_matrix:
            planes = rgb_to_full_range_yuv444(rgb, self._tags.matrix)
            if planes.dtype == np.uint16:  # PyAV takes 16-bit 4:4:4 as [H, W, 3]
                planes = planes.transpose(1, 2, 0)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(planes), format=self._source_format)
            frame.color_range = RANGE_FULL
            frame.colorspace = self._tags.matrix
        else:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format=self._source_format)
        frame.pts = self._count  # the graph wants increasing timestamps; the writer sets the real ones
        self._count += 1
        self._graph.push(frame)
        converted = self._graph.pull()
        self._tags.apply_to(converted)
        return converted
