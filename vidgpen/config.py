"""Run options, as one frozen dataclass the library takes and the CLI fills in."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path

from vidgpen.errors import OptionError
from vidgpen.faces.align import TEMPLATES


@dataclass(frozen=True)
class RestoreOptions:
    """Everything a restore run can be told. Defaults are what ``vidgpen restore`` uses.

    Model: ``model`` is an official variant name (GPEN-BFR-512, ...), or None with ``weights`` to use whatever
    BFR variant that file holds; ``weights`` a checkpoint path that
    overrides looking the model up in ``weights_dir``; ``offline`` forbids downloading a missing checkpoint.
    Faces: ``detector`` auto|yunet|retinaface|retinaface-mobile|mtcnn, detection on a copy whose long side is at most
    ``detect_max_side`` (None: the detector's own, YuNet 640, the others 1000), every ``detect_every`` frames
    (optical flow follows the faces between, and a face that drifts or leaves the frame triggers detection);
    ``faces``
    all|largest|center; ``min_face`` pixels between the eyes; ``max_faces``; ``template`` gpen (GPEN's own crop, what its checkpoints were trained on) | ffhq (the tighter crop of
    GFPGAN/CodeFormer).
    Time: ``smoothing`` window|one-euro|none with ``lookahead`` frames each side; ``temporal_strength`` 0..1.
    Paste: ``mask`` auto|parsenet|bisenet|feathered; ``alpha`` 0..1 restoration strength; ``paste_mode``
    replace (official) | residual (keeps what the restorer did not change).
    Video out: ``start``/``end`` trim, ``codec``, ``crf``, ``preset``, ``pix_fmt``, ``drop_incompatible``.
    Extras: ``compare`` writes before|after side by side; ``save_faces`` a folder for restored crops;
    ``report`` a JSON file of every face in every frame; ``overwrite`` an existing output.
    Resume: ``resume`` continues an interrupted video run from the faces it kept beside the output (same input
    and options required; see :mod:`vidgpen.resume`); photos ignore it.
    """

    model: str | None = "GPEN-BFR-512"
    weights: Path | None = None
    weights_dir: Path | None = None
    offline: bool = False
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int | None = None
    compile: bool = False
    detector: str = "auto"
    detect_max_side: int | None = None
    detect_every: int = 3
    faces: str = "all"
    min_face: float = 8.0
    max_faces: int | None = None
    template: str = "gpen"
    smoothing: str = "window"
    lookahead: int = 4
    temporal_strength: float = 0.6
    mask: str = "auto"
    alpha: float = 1.0
    paste_mode: str = "replace"
    start: float | str | None = None
    end: float | str | None = None
    codec: str | None = None
    crf: int | None = None
    preset: str | None = None
    pix_fmt: str | None = None
    drop_incompatible: bool = False
    compare: bool = False
    save_faces: Path | None = None
    report: Path | None = None
    overwrite: bool = False
    resume: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise OptionError(f"--alpha must be within 0..1, got {self.alpha}")
        if not 0.0 <= self.temporal_strength <= 1.0:
            raise OptionError(f"--temporal-strength must be within 0..1, got {self.temporal_strength}")
        if self.batch_size is not None and self.batch_size < 1:
            raise OptionError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.detect_max_side is not None and self.detect_max_side < 64:
            raise OptionError(f"--detect-max-side must be at least 64 pixels, got {self.detect_max_side}")
        if self.template not in TEMPLATES:
            raise OptionError(f"--template must be one of {', '.join(TEMPLATES)}, got {self.template!r}")
        if self.paste_mode not in ("replace", "residual"):
            raise OptionError(f"--paste-mode must be replace or residual, got {self.paste_mode!r}")
        if self.detect_every < 1:
            raise OptionError(f"--detect-every must be at least 1 frame, got {self.detect_every}")
        if self.lookahead < 0:
            raise OptionError(f"--lookahead must be >= 0 frames, got {self.lookahead}")

    @classmethod
    def from_kwargs(cls, **kwargs) -> "RestoreOptions":
        """Build from keyword arguments, with a one-line error for a misspelt option."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise OptionError(f"unknown option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**kwargs)

    def replace(self, **changes) -> "RestoreOptions":
        return dataclasses.replace(self, **changes)
