"""Paste restored faces back into a frame, touching only each face's region.

GPEN's rules (reference README section 6), applied per face in the order given:

1. small-face filter: when the detector box is under 100 px on its short side, the restored crop is smoothed with
   the 3x3 kernel [[1, 2, 1], [2, 4, 2], [1, 2, 1]] / 16 (the restorer's output is sharper than such a small face);
2. strength: ``cv2.addWeighted(restored, alpha, original_crop, 1 - alpha, 0)``;
3. the face and its mask are warped back with the inverse crop matrix (bilinear, black border);
4. several faces merge by a running maximum of their masks: a face replaces what is there only where its mask is
   strictly larger;
5. ``frame * (1 - m) + faces * m`` in float32, rounded and saturated to uint8 (``cv2.convertScaleAbs``).

The official code warps every face to the whole frame. Here each face is warped only into its *region*, the
bounding box of the inverse-warped crop square clipped to the frame (the inverse matrix's translation is moved to
the region's origin), and faces whose regions overlap are merged inside the union of their regions. Outside every
region the mask is zero, so those pixels are bit-identical to the input. The only difference from the official
whole-frame warp is OpenCV's fixed-point rounding of the shifted translation: a handful of pixels differ by one level.

Two blend modes:

- ``"replace"`` (GPEN's): the warped restored face replaces the frame under the mask.
- ``"residual"``: only the restorer's *change* is warped back, ``frame + m * warp(restored - original_crop)``.
  Warping a crop forward and back is not the identity (bilinear twice blurs edges by up to tens of levels), so in
  replace mode an unchanged crop still alters the frame; in residual mode an unchanged crop leaves the frame exactly
  as it was, and where the restorer changes little the frame keeps its own detail. It also puts back the frame's
  pixel-scale detail that the crop cannot carry, including noise, which is why GPEN's mode is the default.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, Sequence

import cv2
import numpy as np

from vidgpen.errors import OptionError
from vidgpen.faces.align import invert_affine, transform_points

PasteMode = Literal["replace", "residual"]
PASTE_MODES: tuple[str, ...] = ("replace", "residual")

# GPEN applies its small-face filter below this many pixels on the short side of the detector box.
SMALL_FACE_PX = 100.0
SMALL_FACE_KERNEL = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float32) / 16.0

Region = tuple[int, int, int, int]  # x0, y0, x1, y1 in frame pixels, half-open


@dataclass(frozen=True)
class PasteItem:
    """One restored face to paste into a frame.

    restored_crop: (S, S, 3) uint8 RGB, the restorer's output at the crop size.
    crop_matrix: (2, 3) float64 frame -> crop (the matrix the crop was cut with).
    mask: (S, S) float32 in [0, 1], 1 = restored face (see vidgpen.faces.mask).
    box: (4,) x1, y1, x2, y2 face box in frame pixels; only its size matters (the small-face filter). For video,
        pass a temporally steady box so the filter does not switch on and off between frames.
    original_crop: (S, S, 3) uint8, the crop the restorer was given; needed when alpha < 1 and in residual mode.
    """

    restored_crop: np.ndarray
    crop_matrix: np.ndarray
    mask: np.ndarray
    box: np.ndarray
    original_crop: np.ndarray | None = None

    def __post_init__(self) -> None:
        restored = np.ascontiguousarray(self.restored_crop)
        size = restored.shape[0]
        if restored.ndim != 3 or restored.shape != (size, size, 3) or restored.dtype != np.uint8:
            raise ValueError(f"restored_crop must be (S, S, 3) uint8, got {restored.shape} {restored.dtype}")
        mask = np.ascontiguousarray(self.mask, dtype=np.float32)
        if mask.shape != (size, size):
            raise ValueError(f"mask must be ({size}, {size}) to match the crop, got {mask.shape}")
        matrix = np.asarray(self.crop_matrix, dtype=np.float64)
        if matrix.shape != (2, 3) or not np.isfinite(matrix).all():
            raise ValueError(f"crop_matrix must be a finite (2, 3) matrix, got shape {matrix.shape}")
        box = np.asarray(self.box, dtype=np.float64).reshape(4)
        original = self.original_crop
        if original is not None:
            original = np.ascontiguousarray(original)
            if original.shape != restored.shape or original.dtype != np.uint8:
                raise ValueError(f"original_crop must be {restored.shape} uint8, got {original.shape} {original.dtype}")
        object.__setattr__(self, "restored_crop", restored)
        object.__setattr__(self, "mask", mask)
        object.__setattr__(self, "crop_matrix", matrix)
        object.__setattr__(self, "box", box)
        object.__setattr__(self, "original_crop", original)

    @property
    def size(self) -> int:
        """Crop side S in pixels."""
        return self.restored_crop.shape[0]


def scale_for_frame(item: PasteItem, factor: float) -> PasteItem:
    """The same face for a frame ``factor`` times larger (``--upscale``): the crop matrix composed with the
    enlargement's inverse, ``crop_matrix @ diag(1/factor, 1/factor, 1)`` (big frame -> crop), so the crop is warped
    straight to the big frame at its full resolution; the box scales too, so the small-face rule looks at the size
    the face has in the output. The crop and the mask live in crop space and stay as they are."""
    if factor == 1:
        return item
    matrix = item.crop_matrix.copy()
    matrix[:, :2] /= factor
    return replace(item, crop_matrix=matrix, box=item.box * factor)


def paste_region(crop_matrix: np.ndarray, size: int, frame_height: int, frame_width: int) -> Region | None:
    """Frame pixels a ``size`` crop can reach when warped back: (x0, y0, x1, y1), half-open, clipped to the frame.

    A frame pixel takes something from the crop when its sampling point lies within one pixel of the crop square
    (bilinear weights), i.e. inside (-1, size) on both axes; the region is the bounding box of that square mapped
    back into the frame, plus one pixel on each side for OpenCV's fixed-point rounding. None when it misses the frame.
    """
    corners = np.array([[-1.0, -1.0], [size, -1.0], [-1.0, size], [size, size]])
    frame_corners = transform_points(invert_affine(crop_matrix), corners)
    x0 = max(int(np.floor(frame_corners[:, 0].min())) - 1, 0)
    y0 = max(int(np.floor(frame_corners[:, 1].min())) - 1, 0)
    x1 = min(int(np.ceil(frame_corners[:, 0].max())) + 2, frame_width)
    y1 = min(int(np.ceil(frame_corners[:, 1].max())) + 2, frame_height)
    if x0 >= x1 or y0 >= y1:
        return None
    return x0, y0, x1, y1


def prepare_face(item: PasteItem, alpha: float = 1.0, small_face_px: float = SMALL_FACE_PX) -> np.ndarray:
    """GPEN's per-face post-processing before the warp: small-face filter, then the alpha blend.

    Returns (S, S, 3) uint8 (the restored crop itself when neither applies).
    """
    face = item.restored_crop
    box_width = item.box[2] - item.box[0]
    box_height = item.box[3] - item.box[1]
    if min(box_width, box_height) < small_face_px:
        face = cv2.filter2D(face, -1, SMALL_FACE_KERNEL)
    if alpha != 1.0:
        if item.original_crop is None:
            raise ValueError("alpha < 1 blends with the original crop; pass PasteItem.original_crop")
        face = cv2.addWeighted(face, alpha, item.original_crop, 1.0 - alpha, 0.0)
    return face


def paste_faces(
    frame: np.ndarray,
    items: Sequence[PasteItem],
    *,
    alpha: float = 1.0,
    mode: PasteMode = "replace",
    small_face_px: float = SMALL_FACE_PX,
) -> np.ndarray:
    """Paste restored faces into a frame; returns a new (H, W, 3) uint8 frame (the input is not modified).

    frame: (H, W, 3) uint8 (RGB in vidgpen; the math is per channel).
    items: the faces, merged in this order (a later face wins only where its mask is strictly larger).
    alpha: restoration strength in [0, 1] (GPEN's --alpha); 0 pastes the original crop back (in residual mode
        that leaves the frame exactly as it was).
    mode: "replace" (GPEN) or "residual" (see the module docstring).
    small_face_px: GPEN's small-face filter threshold on the box's short side; 0 disables the filter.
    """
    if not 0.0 <= alpha <= 1.0:
        raise OptionError(f"--alpha must be between 0 and 1 (1 = full restoration), got {alpha}")
    if mode not in PASTE_MODES:
        raise OptionError(f"unknown paste mode {mode!r}; choose one of {', '.join(PASTE_MODES)}")
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
    height, width = frame.shape[:2]
    output = frame.copy()

    placed: list[tuple[PasteItem, Region]] = []
    for item in items:
        if item.original_crop is None and (mode == "residual" or alpha != 1.0):
            raise ValueError(f"{'residual mode' if mode == 'residual' else 'alpha < 1'} needs PasteItem.original_crop")
        region = paste_region(item.crop_matrix, item.size, height, width)
        if region is not None:
            placed.append((item, region))

    for cluster_region, members in _group_overlapping([region for _, region in placed]):
        _paste_cluster(output, cluster_region, [placed[i] for i in members], alpha, mode, small_face_px)
    return output


def _paste_cluster(
    output: np.ndarray,
    cluster: Region,
    faces: list[tuple[PasteItem, Region]],
    alpha: float,
    mode: str,
    small_face_px: float,
) -> None:
    """Merge the faces whose regions overlap, inside the cluster's rectangle, and blend into ``output`` in place."""
    cx0, cy0, cx1, cy1 = cluster
    merged_mask = np.zeros((cy1 - cy0, cx1 - cx0), dtype=np.float32)
    # Replace mode accumulates warped faces (uint8, as GPEN's full_img); residual mode warped changes (float32).
    merged_face = np.zeros((cy1 - cy0, cx1 - cx0, 3), dtype=np.uint8 if mode == "replace" else np.float32)

    first = True
    for item, (x0, y0, x1, y1) in faces:
        face = prepare_face(item, alpha, small_face_px)
        if mode == "residual":
            face = face.astype(np.float32) - item.original_crop.astype(np.float32)
        # Warp into the region only: move the inverse matrix's origin to the region's corner.
        to_region = invert_affine(item.crop_matrix)
        to_region[:, 2] -= (x0, y0)
        region_size = (x1 - x0, y1 - y0)
        warped_mask = _warp(item.mask, to_region, region_size)
        warped_face = _warp(face, to_region, region_size)

        local = (slice(y0 - cy0, y1 - cy0), slice(x0 - cx0, x1 - cx0))
        if first:
            # Nothing merged yet: everything is "strictly larger" where the mask is positive, and where it is zero
            # the face is multiplied by zero in the blend, so plain assignment gives the same result, faster.
            merged_mask[local] = warped_mask
            merged_face[local] = warped_face
            first = False
        else:
            larger = warped_mask > merged_mask[local]  # running max: strictly larger replaces
            np.copyto(merged_mask[local], warped_mask, where=larger)
            np.copyto(merged_face[local], warped_face, where=larger[:, :, None])

    # Blend only where some mask is positive; elsewhere the frame stays as it is.
    rows = np.flatnonzero(merged_mask.any(axis=1))
    cols = np.flatnonzero(merged_mask.any(axis=0))
    if rows.size == 0:
        return
    inner = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    weight = merged_mask[inner][:, :, None]
    face = merged_face[inner]
    background = output[cy0:cy1, cx0:cx1][inner]
    if mode == "replace":
        blended = background * (1.0 - weight)  # float32, in GPEN's order of operations
        blended += face * weight
        background[...] = cv2.convertScaleAbs(blended)
    else:
        blended = face * weight
        blended += background
        background[...] = np.clip(np.rint(blended, out=blended), 0, 255)


def _warp(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    # GPEN's flags=3 (INTER_AREA) is bilinear in warpAffine.
    return cv2.warpAffine(image, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _group_overlapping(regions: Sequence[Region]) -> list[tuple[Region, list[int]]]:
    """Group regions into clusters with pairwise disjoint bounding rectangles.

    Returns (cluster rectangle, member indices in input order) for each cluster; a lone face is its own cluster.
    """
    clusters: list[tuple[Region, list[int]]] = [(region, [index]) for index, region in enumerate(regions)]
    merged_something = True
    while merged_something:
        merged_something = False
        for i in range(len(clusters)):
            for j in range(i + 1, len(clusters)):
                if _overlap(clusters[i][0], clusters[j][0]):
                    (a, members_a), (b, members_b) = clusters[i], clusters[j]
                    union = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    clusters[i] = (union, sorted(members_a + members_b))
                    del clusters[j]
                    merged_something = True
                    break
            if merged_something:
                break
    return clusters


def _overlap(a: Region, b: Region) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
