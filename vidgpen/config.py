"""Run options, as one frozen dataclass the library takes and the CLI fills in."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path

from vidgpen.errors import OptionError
from vidgpen.faces.align import TEMPLATES
from vidgpen.faces.color import COLOR_MODES
from vidgpen.video.deinterlace import DEINTERLACE_MODES


# The official variants that do another job than blind face restoration: refused by restore, with what they are for.
NOT_FOR_RESTORE = {
    "GPEN-Colorization-1024": "colours a grey aligned 1024x1024 face crop",
    "GPEN-Inpainting-1024": "fills in masked-out parts of an aligned 1024x1024 face crop",
    "GPEN-Seg2face-512": "draws a face from a 512x512 face-parsing label map",
}


# The options that take one of a few words, checked when the options are made (before anything is loaded).
_CHOICES = {
    "detector": ("auto", "retinaface", "retinaface-mobile", "mtcnn"),
    "faces": ("all", "largest", "center"),
    "smoothing": ("window", "one-euro", "none"),
    "mask": ("auto", "parsenet", "bisenet", "feathered"),
}


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
    Video in: ``deinterlace`` auto (when the video says it is interlaced) | on | off | field-rate (one frame per
    field, twice the frame rate).
    Fidelity: ``color`` auto (the input face's low-frequency colour; black-and-white or tinted faces keep the
    input's chroma) | match (colour only) | off; ``max_drift`` landmark shift of the restored face (fraction of
    the eye distance) beyond which its strength is lowered smoothly, None: never.
    Video out: ``start``/``end`` trim, ``codec``, ``crf``, ``preset``, ``pix_fmt``, ``drop_incompatible``.
    Size: ``upscale`` 1|2|3|4|"auto" makes the output N times the input (faces pasted at that resolution, see
    :mod:`vidgpen.upscale`); ``bg_upscaler`` lanczos|realesrgan-x2|realesrgan-x4|realesr-general-x4v3|a checkpoint
    path (None: a learned model present in ``weights_dir``, else lanczos); ``tile`` input tile side for a learned
    upscaler (None: automatic, 0: whole frames).
    Extras: ``compare`` writes before|after side by side; ``save_faces`` a folder for restored crops;
    ``report`` a JSON file of every face in every frame; ``overwrite`` an existing output.
    Resume: ``resume`` continues an interrupted video run from the faces it kept beside the output (same input
    and options required; see :mod:`vidgpen.resume`); photos ignore it. ``save_progress`` False keeps nothing
    (no disk used beside the output; an interrupted run starts over).
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
    deinterlace: str = "auto"
    color: str = "auto"
    max_drift: float | None = None
    start: float | str | None = None
    end: float | str | None = None
    codec: str | None = None
    crf: int | None = None
    preset: str | None = None
    pix_fmt: str | None = None
    drop_incompatible: bool = False
    upscale: int | str = 1
    bg_upscaler: str | None = None
    tile: int | None = None
    compare: bool = False
    save_faces: Path | None = None
    report: Path | None = None
    overwrite: bool = False
    resume: bool = False
    save_progress: bool = True

    def __post_init__(self) -> None:
        if self.model in NOT_FOR_RESTORE:
            raise OptionError(f"--model {self.model} {NOT_FOR_RESTORE[self.model]}, not for restoring faces in "
                              "videos and photos; use a GPEN-BFR model (the library still loads it: "
                              f"vidgpen.load_restorer(path, model={self.model!r}))")
        if not 0.0 <= self.alpha <= 1.0:
            raise OptionError(f"--alpha must be within 0..1, got {self.alpha}")
        if not 0.0 <= self.temporal_strength <= 1.0:
            raise OptionError(f"--temporal-strength must be within 0..1, got {self.temporal_strength}")
        if self.batch_size is not None and self.batch_size < 1:
            raise OptionError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.detect_max_side is not None and self.detect_max_side < 64:
            raise OptionError(f"--detect-max-side must be at least 64 pixels, got {self.detect_max_side}")
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                flag = "--" + name.replace("_", "-")
                raise OptionError(f"{flag} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.template not in TEMPLATES:
            raise OptionError(f"--template must be one of {', '.join(TEMPLATES)}, got {self.template!r}")
        if self.color not in COLOR_MODES:
            raise OptionError(f"--color must be one of {', '.join(COLOR_MODES)}, got {self.color!r}")
        if self.max_drift is not None and not self.max_drift > 0:
            raise OptionError(f"--max-drift must be a positive fraction of the eye distance, got {self.max_drift}")
        if self.paste_mode not in ("replace", "residual"):
            raise OptionError(f"--paste-mode must be replace or residual, got {self.paste_mode!r}")
        if self.detect_every < 1:
            raise OptionError(f"--detect-every must be at least 1 frame, got {self.detect_every}")
        if self.deinterlace not in DEINTERLACE_MODES:
            raise OptionError(f"--deinterlace must be one of {', '.join(DEINTERLACE_MODES)}, got {self.deinterlace!r}")
        if self.lookahead < 0:
            raise OptionError(f"--lookahead must be >= 0 frames, got {self.lookahead}")
        if self.resume and not self.save_progress:
            raise OptionError("--resume continues from the progress a run saves; drop --no-save-progress (or "
                              "--resume to start over)")
        self._check_upscale()

    def _check_upscale(self) -> None:
        from vidgpen.upscale import BG_UPSCALER_NAMES, is_checkpoint_path, parse_factor

        object.__setattr__(self, "upscale", parse_factor(self.upscale))
        if self.tile is not None and self.tile != 0 and self.tile < 32:
            raise OptionError(f"--tile must be at least 32 pixels (or 0 for whole frames), got {self.tile}")
        if self.upscale == 1 and (self.bg_upscaler is not None or self.tile is not None):
            raise OptionError("--bg-upscaler and --tile work with --upscale 2, 3, 4 or auto; add one or drop them")
        if self.bg_upscaler == "lanczos" and self.tile is not None:
            raise OptionError("--tile is for learned background upscalers; lanczos works on whole frames")
        if self.bg_upscaler is not None and self.bg_upscaler not in BG_UPSCALER_NAMES \
                and not is_checkpoint_path(self.bg_upscaler):
            raise OptionError(f"--bg-upscaler must be one of {', '.join(BG_UPSCALER_NAMES)} or a .pth file, "
                              f"got {self.bg_upscaler!r}")

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
