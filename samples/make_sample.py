"""Write the sample clip: NASA's astronaut portrait (public domain), moving and degraded like old footage.

    python samples/make_sample.py                       # samples/astronaut_degraded.mp4, 3 s at 640x360
    python samples/make_sample.py --out clip.mp4 --frames 240 --width 1280 --height 720
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vidgpen.samples import write_face_clip

DEFAULT_OUT = Path(__file__).resolve().parent / "astronaut_degraded.mp4"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output video (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=72, help="frames at 24 fps (default: %(default)s, 3 s)")
    parser.add_argument("--width", type=int, default=640, help="frame width, even (default: %(default)s)")
    parser.add_argument("--height", type=int, default=360, help="frame height, even (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.frames < 1 or args.width < 64 or args.height < 64 or args.width % 2 or args.height % 2:
        parser.error("--frames must be >= 1; --width and --height even and >= 64")
    path = write_face_clip(args.out, frames=args.frames, width=args.width, height=args.height)
    print(f"wrote {path} ({args.frames} frames, {args.width}x{args.height}, {path.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
