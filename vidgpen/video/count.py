"""How many frames a run will write, counted from the video packets' timestamps (demuxed, not decoded).

The progress bar's total must be exact: a count from the rate (``round((end - start) * fps)``) is one frame off
whenever the range does not fall on frame boundaries, and wrong for variable frame rate video.
"""

from __future__ import annotations

import av

from vidgpen.errors import VidgpenError
from vidgpen.video.probe import VideoInfo, open_input_container
from vidgpen.video.reader import TimeRange

# Packets come in decode order; frames past the end of the range may still be followed by B-frames inside it.
REORDER_MARGIN_SECONDS = 2.0


def count_frames(info: VideoInfo, time_range: TimeRange) -> int | None:
    """Frames of ``info``'s video stream whose presentation time ``time_range`` contains (the reader's rule).

    The whole file's count is the probe's (header or counted; None when it has none, so a long file without one is
    not read twice); for a trimmed range, packets are demuxed from (a keyframe before) the start to just past the
    end. None when the file cannot be read so.
    """
    if time_range == TimeRange():
        return info.frame_count
    try:
        with open_input_container(info.path) as container:
            stream = container.streams[info.video_index]
            time_base = stream.time_base
            if time_range.start is not None and time_range.start > 0:
                container.seek(int(time_range.start / time_base), stream=stream, backward=True)
            count = 0
            for packet in container.demux(stream):
                stamp = packet.pts if packet.pts is not None else packet.dts
                if stamp is None or packet.size == 0:
                    continue
                seconds = float(stamp * time_base)
                if time_range.contains(seconds):
                    count += 1
                decoded_up_to = float(packet.dts * time_base) if packet.dts is not None else seconds
                if time_range.end is not None and decoded_up_to > time_range.end + REORDER_MARGIN_SECONDS:
                    break
            return count
    except (av.error.FFmpegError, OSError, VidgpenError):
        return None
