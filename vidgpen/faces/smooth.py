"""Temporal smoothing of face landmarks through a 4-DOF similarity transform.

Each frame's 5 landmarks are written as a similarity transform of a canonical template plus a small residual shape:

    landmarks = s * R(angle) @ (TEMPLATE + residual) + (tx, ty)

The pose (tx, ty, log s, angle) is what moves between frames, so that is what we smooth; smoothing the points directly
would shrink a rotating face (chords instead of arcs) and mix scale into translation. The residual (the shape the
detector sees beyond a similarity, in template units) is smoothed the same way so the points stay consistent.

Two smoothers, both pure numpy on per-track parameter arrays:

- :func:`local_linear_smooth` -- zero-phase, Gaussian-weighted local linear regression over a bounded window
  (``lookahead`` frames each side). A local *linear* fit reproduces ramps exactly, so a face moving at constant speed
  is followed without lag, also at the ends of a track where the window is one-sided.
- :class:`OneEuroFilter` -- causal, zero look-ahead; its cutoff adapts to speed and it uses the real time between
  frames (pts deltas), so variable frame rate video is filtered consistently in seconds rather than in frames.
"""

from __future__ import annotations

import math

import numpy as np

# GPEN's 5-point reference (align_faces.py, 96x112 crop), centred and scaled to unit eye distance. Any fixed shape
# works as the template; using GPEN's keeps the residuals small for frontal faces.
_GPEN_BASE_POINTS = np.array(
    [[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366], [33.5493, 92.3655], [62.7299, 92.2041]],
    dtype=np.float64,
)
TEMPLATE = (_GPEN_BASE_POINTS - _GPEN_BASE_POINTS.mean(axis=0)) / np.linalg.norm(
    _GPEN_BASE_POINTS[1] - _GPEN_BASE_POINTS[0]
)

# Pose vector layout.
TX, TY, LOG_SCALE, ANGLE = range(4)
POSE_SIZE = 4
RESIDUAL_SIZE = 10


def wrap_angle(angle: float | np.ndarray) -> float | np.ndarray:
    """Map angles (radians) into [-pi, pi)."""
    return (np.asarray(angle) + math.pi) % (2.0 * math.pi) - math.pi


def fit_similarity(source: np.ndarray, target: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Least-squares similarity (Umeyama, with scale) mapping ``source`` onto ``target``.

    source, target: (N, 2) float arrays, N >= 2.
    Returns (scale, angle, translation) with ``target ~= scale * R(angle) @ source + translation``, where
    R(angle) = [[cos, -sin], [sin, cos]]; angle in radians (in y-down pixel coordinates a positive angle turns
    clockwise on screen); translation (2,) float64.
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    source_mean = source.mean(axis=0)
    target_mean = target.mean(axis=0)
    source_centered = source - source_mean
    target_centered = target - target_mean
    # For 2-D similarity the optimum has a closed form: a = sum(x.x'), b = sum(x cross x').
    dot = float(np.sum(source_centered * target_centered))
    cross = float(np.sum(source_centered[:, 0] * target_centered[:, 1] - source_centered[:, 1] * target_centered[:, 0]))
    source_var = float(np.sum(source_centered**2))
    if source_var <= 0.0:
        raise ValueError("source points are all identical; a similarity is undefined")
    angle = math.atan2(cross, dot)
    scale = math.hypot(dot, cross) / source_var
    rotation = _rotation(angle)
    translation = target_mean - scale * rotation @ source_mean
    return scale, angle, translation


def _rotation(angle: float) -> np.ndarray:
    cos, sin = math.cos(angle), math.sin(angle)
    return np.array([[cos, -sin], [sin, cos]], dtype=np.float64)


def landmarks_to_pose(landmarks: np.ndarray, previous_angle: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decompose 5 landmarks into a pose and a residual shape.

    landmarks: (5, 2) float, full-frame pixels.
    previous_angle: the previous frame's (unwrapped) angle of the same track; the new angle is unwrapped next to it
        so that a face turning through +-180 degrees does not jump by 2 pi.
    Returns pose (4,) float64 [tx, ty, log s, angle] and residual (5, 2) float64 in template units.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    scale, angle, translation = fit_similarity(TEMPLATE, landmarks)
    if previous_angle is not None:
        angle = previous_angle + float(wrap_angle(angle - previous_angle))
    pose = np.array([translation[0], translation[1], math.log(scale), angle], dtype=np.float64)
    # Residual = the landmarks mapped back into template space, minus the template.
    inverse_rotation = _rotation(-angle)
    residual = (inverse_rotation @ (landmarks - translation).T).T / scale - TEMPLATE
    return pose, residual


def pose_to_landmarks(pose: np.ndarray, residual: np.ndarray | None = None) -> np.ndarray:
    """Inverse of :func:`landmarks_to_pose`: (4,) pose and (5, 2) residual -> (5, 2) float64 landmarks."""
    shape = TEMPLATE if residual is None else TEMPLATE + np.asarray(residual, dtype=np.float64).reshape(5, 2)
    scale = math.exp(pose[LOG_SCALE])
    return scale * (_rotation(float(pose[ANGLE])) @ shape.T).T + pose[[TX, TY]]


def local_linear_weights(offsets: np.ndarray, sigma: float) -> np.ndarray:
    """Weights of a Gaussian-weighted local linear fit evaluated at offset 0.

    offsets: (K,) frame offsets of the available samples relative to the frame being smoothed (may be one-sided).
    sigma: Gaussian width in frames.
    Returns (K,) float64 weights summing to 1 that reproduce any linear sequence exactly
    (sum w = 1, sum w * offset = 0).
    """
    offsets = np.asarray(offsets, dtype=np.float64)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    if offsets.size == 1:
        return np.ones(1)
    # Weighted least squares of y = a + b * offset; the estimate at 0 is a = sum(w_i y_i) with these w_i.
    s0 = kernel.sum()
    s1 = (kernel * offsets).sum()
    s2 = (kernel * offsets**2).sum()
    determinant = s0 * s2 - s1 * s1
    if determinant <= 1e-12 * max(s0 * s2, 1e-300):
        return kernel / s0
    return kernel * (s2 - s1 * offsets) / determinant


def local_linear_smooth(values: np.ndarray, center: int, lookahead: int, sigma: float) -> np.ndarray:
    """Zero-phase smoothed value of ``values[center]`` from a window of at most ``lookahead`` samples each side.

    values: (T, D) float64, consecutive frames of one track (bridged frames already interpolated in).
    center: index into values.
    lookahead: half-width of the window in frames; the window is clipped to the available samples, and then the
        local linear fit keeps ramps unbiased even when it is one-sided.
    sigma: Gaussian width of the weights in frames.
    Returns (D,) float64.
    """
    values = np.asarray(values, dtype=np.float64)
    start = max(0, center - lookahead)
    stop = min(len(values), center + lookahead + 1)
    offsets = np.arange(start, stop) - center
    weights = local_linear_weights(offsets, sigma)
    return weights @ values[start:stop]


class OneEuroFilter:
    """One Euro filter (Casiez et al., CHI 2012) over a vector, driven by real timestamps.

    The cutoff frequency rises with speed: ``cutoff = min_cutoff + beta * |speed|``, so a still face is smoothed hard
    and a moving one is followed closely. ``speed_scale`` divides each channel's speed before that, which lets one
    ``beta`` serve channels in different units (e.g. translation in pixels divided by the face size).

    min_cutoff, derivative_cutoff: Hz. beta: 1 / (speed unit). Frame-rate independent: every step uses the actual
    time since the previous sample, so variable frame rate video is filtered consistently in seconds.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.5, derivative_cutoff: float = 1.0) -> None:
        if min_cutoff <= 0 or derivative_cutoff <= 0 or beta < 0:
            raise ValueError("min_cutoff and derivative_cutoff must be > 0 and beta >= 0")
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.derivative_cutoff = derivative_cutoff
        self._value: np.ndarray | None = None
        self._previous_raw: np.ndarray | None = None
        self._derivative: np.ndarray | None = None
        self._time: float | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
        # Exponential smoothing factor of a first-order low-pass with time constant 1 / (2 pi cutoff).
        tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff))
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, time_seconds: float, value: np.ndarray, speed_scale: np.ndarray | float = 1.0) -> np.ndarray:
        """Filter one sample. value: (D,) float; speed_scale: scalar or (D,). Returns (D,) float64."""
        value = np.asarray(value, dtype=np.float64)
        if self._value is None:
            self._value = value.copy()
            self._previous_raw = value.copy()
            self._derivative = np.zeros_like(value)
            self._time = float(time_seconds)
            return self._value.copy()
        dt = float(time_seconds) - self._time
        if dt <= 0:
            # Same or earlier timestamp (duplicated pts): nothing to integrate over; keep the state.
            return self._value.copy()
        # The speed is that of the signal itself (raw differences, then low-passed), as in the paper.
        raw_derivative = (value - self._previous_raw) / dt
        alpha_derivative = self._alpha(self.derivative_cutoff, dt)
        self._derivative = self._derivative + alpha_derivative * (raw_derivative - self._derivative)
        cutoff = self.min_cutoff + self.beta * np.abs(self._derivative) / np.asarray(speed_scale, dtype=np.float64)
        alpha = self._alpha(cutoff, dt)
        self._value = self._value + alpha * (value - self._value)
        self._previous_raw = value
        self._time = float(time_seconds)
        return self._value.copy()
