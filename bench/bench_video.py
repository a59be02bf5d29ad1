"""Video I/O speed and memory: decode fps, encode fps, and peak RSS of an identity pass on a short clip and on
a clip `--long-factor` times longer (the RSS must not grow with length).

Run on an idle machine:  python3 bench/bench_video.py            (1080p, 3 s and 30 s clips)
Smoke run:               python3 bench/bench_video.py --width 160 --height 96 --seconds 1 --long-factor 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

from vidgpen.video import VideoWriter, open_video
from vidgpen.video.synthetic import SyntheticClip, write_synthetic_clip

# Runs in a fresh interpreter so its peak RSS is the identity pass alone.
_RSS_CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[4])
from peak_rss import peak_rss_mb
from vidgpen.video import transcode
started = time.perf_counter()
result = transcode(sys.argv[1], sys.argv[2], preset=sys.argv[3], overwrite=True)
seconds = time.perf_counter() - started
print(json.dumps({"frames": result.frames_written, "seconds": seconds,
                  "peak_rss_mb": peak_rss_mb()}))
"""


def make_clip(path: Path, width: int, height: int, seconds: float, fps: int) -> Path:
    clip = SyntheticClip(width=width, height=height, frames=max(2, round(seconds * fps)), fps=Fraction(fps),
                         audio=("aac",), options={"preset": "ultrafast"})
    return write_synthetic_clip(path, clip)


def decode_fps(path: Path) -> tuple[float, int]:
    started = time.perf_counter()
    with open_video(path) as reader:
        count = sum(1 for _ in reader)
    return count / (time.perf_counter() - started), count


def encode_fps(path: Path, out: Path, preset: str) -> tuple[float, int]:
    """Encode time only: decoded frames are held first (a short clip), then written."""
    with open_video(path) as reader:
        frames = list(reader)
        started = time.perf_counter()
        with VideoWriter(out, reader, preset=preset, overwrite=True) as writer:
            for frame in frames:
                writer.write(frame)
        return len(frames) / (time.perf_counter() - started), len(frames)


def identity_pass_in_child(src: Path, dst: Path, preset: str) -> dict:
    output = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(src), str(dst), preset,
                             str(Path(__file__).resolve().parent)],
                            check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the short clip")
    parser.add_argument("--long-factor", type=int, default=10, help="the long clip is this many times longer")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--preset", default="veryfast", help="x264 preset for the encode measurements")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="vidgpen-bench-") as folder:
        work = Path(folder)
        short = make_clip(work / "short.mp4", args.width, args.height, args.seconds, args.fps)
        long = make_clip(work / "long.mp4", args.width, args.height, args.seconds * args.long_factor, args.fps)
        decode, decoded = decode_fps(short)
        encode, encoded = encode_fps(short, work / "encoded.mp4", args.preset)
        rss_short = identity_pass_in_child(short, work / "short_out.mp4", args.preset)
        rss_long = identity_pass_in_child(long, work / "long_out.mp4", args.preset)

    growth = rss_long["peak_rss_mb"] - rss_short["peak_rss_mb"]
    results = {
        "size": f"{args.width}x{args.height}", "preset": args.preset,
        "decode_fps": round(decode, 2), "decode_frames": decoded,
        "encode_fps": round(encode, 2), "encode_frames": encoded,
        "identity_fps_short": round(rss_short["frames"] / rss_short["seconds"], 2),
        "peak_rss_mb_short": round(rss_short["peak_rss_mb"], 1), "frames_short": rss_short["frames"],
        "peak_rss_mb_long": round(rss_long["peak_rss_mb"], 1), "frames_long": rss_long["frames"],
        "rss_growth_mb": round(growth, 1),
        # A few frames' worth of slack (allocator noise); growth with length would be far larger.
        "rss_bounded": growth < max(32.0, 4 * args.width * args.height * 3 / 2**20),
    }
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            print(f"{key:<22}{value}")
    return 0 if results["rss_bounded"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
