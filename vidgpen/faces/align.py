"""Face alignment: GPEN's crop template, the similarity fit, and the crop warp.

Everything here is a pure function on numpy arrays. A *crop matrix* is a (2, 3) float64 affine that maps full-frame
pixel coordinates to crop coordinates (``crop_xy = M[:, :2] @ frame_xy + M[:, 2]``), the convention of
``cv2.warpAffine``. Its inverse maps the crop back into the frame and drives the paste-back.

GPEN's numbers are reproduced exactly (reference README section 5): the similarity is an Umeyama least-squares fit
computed on float32 copies of the points (as the official code does; a float64 fit moves crop pixels by a level),
stored in a float64 matrix, and the crop is a bilinear warp with a black border.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import cv2
import numpy as np

Template = Literal["gpen", "ffhq"]
TEMPLATES: tuple[str, ...] = ("gpen", "ffhq")

# GPEN's base 5 points for a 96x112 crop (align_faces.py): image-left eye, image-right eye, nose tip,
# image-left mouth corner, image-right mouth corner. The official table holds these 4-decimal values rounded to
# float32 (30.29459953...), so round them the same way to reproduce its reference points to 1e-8.
GPEN_BASE_POINTS = np.array(
    [[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366], [33.5493, 92.3655], [62.7299, 92.2041]],
    dtype=np.float32,
).astype(np.float64)
# FaceEnhancement's settings: square the 96x112 crop (x += 8 -> 112x112), then inner padding 0.25 on each side
# (+28 px -> 168x168). The face fills the central 2/3 of the crop at every size.
GPEN_TEMPLATE_OFFSET = np.array([8.0 + 28.0, 28.0])
GPEN_TEMPLATE_SIZE = 168.0

# The FFHQ 5-point template at 512x512 used by GFPGAN/CodeFormer (facexlib's FaceRestoreHelper): a tighter crop
# than GPEN's (the face fills more of it). Same point order.
FFHQ_POINTS_512 = np.array(
    [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935], [201.26117, 371.41043],
     [313.08905, 371.15118]],
    dtype=np.float64,
)


class SimilarityFit(NamedTuple):
    """Result of :func:`umeyama`: ``matrix`` (2, 3) float64 maps source points onto target points; ``scale`` > 0."""

    matrix: np.ndarray
    scale: float


class CropFit(NamedTuple):
    """GPEN's pair of transforms for one face.

    matrix: (2, 3) float64, frame -> crop (what the crop warp uses).
    inverse: (2, 3) float64, crop -> frame, fitted the official way (reference -> landmarks with the scale fixed to
        1/scale); equal to ``invert_affine(matrix)`` up to float32 rounding of the fit.
    scale: crop pixels per frame pixel.
    """

    matrix: np.ndarray
    inverse: np.ndarray
    scale: float


def reference_points(size: int, template: Template = "gpen") -> np.ndarray:
    """The 5 template points inside a ``size`` x ``size`` crop.

    Returns (5, 2) float64 x, y in crop pixels, in GPEN's landmark order. ``"gpen"`` is GPEN's own template
    (``(base + (36, 28)) * size / 168``), ``"ffhq"`` the FFHQ template scaled from 512.
    """
    if size <= 0:
        raise ValueError(f"crop size must be positive, got {size}")
    if template == "gpen":
        return (GPEN_BASE_POINTS + GPEN_TEMPLATE_OFFSET) * (size / GPEN_TEMPLATE_SIZE)
    if template == "ffhq":
        return FFHQ_POINTS_512 * (size / 512.0)
    raise ValueError(f"unknown alignment template {template!r}; expected one of {TEMPLATES}")


def umeyama(
    source: np.ndarray, target: np.ndarray, *, estimate_scale: bool = True, fixed_scale: float = 1.0
) -> SimilarityFit:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``source`` onto ``target``.

    Umeyama (1991), computed in float32 like GPEN's alignment so that crops match the official ones bit for bit.
    source, target: (N, 2) float arrays, N >= 2. With ``estimate_scale=False`` the scale is ``fixed_scale``.
    Returns the (2, 3) float64 matrix and the scale. Raises ValueError when the points are degenerate.
    """
    source32 = np.asarray(source, dtype=np.float32)
    target32 = np.asarray(target, dtype=np.float32)
    if source32.ndim != 2 or source32.shape[1] != 2 or source32.shape != target32.shape or len(source32) < 2:
        raise ValueError(f"umeyama needs two (N, 2) point sets with N >= 2, got {source32.shape} and {target32.shape}")
    if not (np.isfinite(source32).all() and np.isfinite(target32).all()):
        raise ValueError("umeyama got non-finite points")
    count = source32.shape[0]
    source_mean = source32.mean(axis=0)
    target_mean = target32.mean(axis=0)
    source_centered = source32 - source_mean
    target_centered = target32 - target_mean

    covariance = target_centered.T @ source_centered / np.float32(count)  # (2, 2) float32
    left, singular, right_t = np.linalg.svd(covariance)  # float32, as the official fit
    rank = np.linalg.matrix_rank(covariance)
    if rank == 0:
        raise ValueError("umeyama got degenerate points (all identical)")

    # Reflection guard: the last sign flips when the best orthogonal map would be a reflection.
    signs = np.ones(2, dtype=np.float64)
    if np.linalg.det(covariance) < 0:
        signs[1] = -1.0
    if rank == 1:
        # Collinear points: the SVD's own orientation decides whether a flip is needed.
        flip = np.linalg.det(left) * np.linalg.det(right_t) <= 0
        rotation_signs = np.array([1.0, -1.0 if flip else 1.0])
    else:
        rotation_signs = signs
    rotation = (left.astype(np.float64) * rotation_signs) @ right_t.astype(np.float64)

    if estimate_scale:
        # Same precision path as the official fit: float32 variance, float64 trace term.
        inverse_variance = np.float32(1.0) / source_centered.var(axis=0).sum(dtype=np.float32)
        scale = float(inverse_variance) * float(singular.astype(np.float64) @ signs)
    else:
        scale = float(fixed_scale)
    if not scale > 0.0:
        raise ValueError("umeyama got degenerate points (zero scale)")

    matrix = np.empty((2, 3), dtype=np.float64)
    matrix[:, 2] = target_mean - scale * (rotation @ source_mean)
    matrix[:, :2] = rotation * scale
    return SimilarityFit(matrix, scale)


def fit_crop(landmarks: np.ndarray, size: int, template: Template = "gpen") -> CropFit:
    """Fit GPEN's crop for one face: landmarks (5, 2) in frame pixels -> crop of ``size`` x ``size``.

    Returns both transforms exactly as the official code computes them (see :class:`CropFit`).
    """
    landmarks = _check_landmarks(landmarks)
    reference = reference_points(size, template)
    forward = umeyama(landmarks, reference)
    backward = umeyama(reference, landmarks, estimate_scale=False, fixed_scale=1.0 / forward.scale)
    return CropFit(forward.matrix, backward.matrix, forward.scale)


def crop_matrix(landmarks: np.ndarray, size: int, template: Template = "gpen") -> np.ndarray:
    """The (2, 3) float64 frame -> crop matrix that puts ``landmarks`` (5, 2) onto the template of a ``size`` crop."""
    return umeyama(_check_landmarks(landmarks), reference_points(size, template)).matrix


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Exact inverse of a (2, 3) affine matrix, as (2, 3) float64."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (2, 3):
        raise ValueError(f"affine matrix must have shape (2, 3), got {matrix.shape}")
    linear_inverse = np.linalg.inv(matrix[:, :2])
    inverse = np.empty((2, 3), dtype=np.float64)
    inverse[:, :2] = linear_inverse
    inverse[:, 2] = -linear_inverse @ matrix[:, 2]
    return inverse


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine to points (N, 2); returns (N, 2) float64."""
    matrix = np.asarray(matrix, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def warp_crop(frame: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Cut the aligned face out of a frame.

    frame: (H, W, C) uint8 (any channel order; the warp treats channels alike).
    matrix: (2, 3) frame -> crop. Returns (size, size, C) uint8; crop pixels that fall outside the frame are black.
    """
    if frame.ndim != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be (H, W, C) uint8, got {frame.shape} {frame.dtype}")
    # GPEN passes flags=3 (INTER_AREA), which warpAffine treats as bilinear; say bilinear directly.
    return cv2.warpAffine(
        frame, np.asarray(matrix, dtype=np.float64), (size, size),
        flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )


def _check_landmarks(landmarks: np.ndarray) -> np.ndarray:
    landmarks = np.asarray(landmarks)
    if landmarks.shape != (5, 2):
        raise ValueError(f"landmarks must have shape (5, 2), got {landmarks.shape}")
    return landmarks
