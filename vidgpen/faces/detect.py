"""Face detection: RetinaFace (facexlib networks) or MTCNN (facenet-pytorch, weights inside its wheel).

Both detectors take full frames ((H, W, 3) uint8 RGB), detect on a copy whose long side is at most ``max_side``
(small faces are not worth restoring, and detection cost grows with the pixel count), and return
:class:`~vidgpen.faces.types.Detection` objects in full-frame pixels with the 5 landmarks in GPEN's order.

Neither library is allowed to fetch or unpickle anything itself: we build the networks without weights and load the
state dicts with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import logging
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from vidgpen.errors import OptionError, WeightsError
from vidgpen.faces.types import Detection

logger = logging.getLogger(__name__)

DETECTOR_KINDS = ("auto", "retinaface", "retinaface-mobile", "mtcnn")

# kind -> (facexlib network name, checkpoint file name, registry name for `vidgpen weights download`)
RETINAFACE_VARIANTS = {
    "retinaface": ("resnet50", "detection_Resnet50_Final.pth", "RetinaFace-R50"),
    "retinaface-mobile": ("mobile0.25", "detection_mobilenet0.25_Final.pth", "RetinaFace-MobileNet0.25"),
}

DEFAULT_MAX_SIDE = 1000  # the official GPEN code detects at long side <= 1000 as well
DEFAULT_SCORE_THRESHOLD = 0.9  # the official GPEN code skips faces below 0.9

# RetinaFace anchor layout and box encoding (facexlib's cfg for both backbones).
_RETINAFACE_MIN_SIZES = ((16, 32), (64, 128), (256, 512))
_RETINAFACE_STEPS = (8, 16, 32)
_RETINAFACE_VARIANCES = (0.1, 0.2)
_RETINAFACE_BGR_MEAN = np.array([104.0, 117.0, 123.0], dtype=np.float32)
_RETINAFACE_NMS_IOU = 0.4

# MTCNN cascade settings (facenet-pytorch defaults).
_MTCNN_STAGE_THRESHOLDS = (0.6, 0.7, 0.7)
_MTCNN_PYRAMID_FACTOR = 0.709


def downscale_for_detection(frame_rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Shrink a frame so its long side is at most ``max_side``.

    frame_rgb: (H, W, 3) uint8. Returns (small (h, w, 3) uint8, scale (2,) float64) where full-frame
    x, y = small x, y * scale. Frames already small enough are returned as they are, with scale (1, 1).
    """
    height, width = frame_rgb.shape[:2]
    long_side = max(height, width)
    if long_side <= max_side:
        return frame_rgb, np.ones(2)
    factor = max_side / long_side
    small_width = max(1, round(width * factor))
    small_height = max(1, round(height * factor))
    small = cv2.resize(frame_rgb, (small_width, small_height), interpolation=cv2.INTER_AREA)
    # Per-axis factors: rounding the size makes them differ slightly from 1 / factor.
    return small, np.array([width / small_width, height / small_height])


def _check_frame(frame: np.ndarray) -> None:
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        shape = getattr(frame, "shape", None)
        raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got {shape} {getattr(frame, 'dtype', type(frame))}")


class FaceDetector(ABC):
    """Finds faces in full frames. Subclasses implement :meth:`_detect_small` on downscaled frames."""

    name: str

    def __init__(self, *, max_side: int, score_threshold: float) -> None:
        if max_side < 32:
            raise OptionError(f"detection size must be >= 32 pixels on the long side, got {max_side}")
        if not 0.0 <= score_threshold <= 1.0:
            raise OptionError(f"detection score threshold must be in [0, 1], got {score_threshold}")
        self.max_side = int(max_side)
        self.score_threshold = float(score_threshold)

    def detect(self, frame_rgb: np.ndarray) -> list[Detection]:
        """Faces in one frame ((H, W, 3) uint8 RGB), best score first, in full-frame coordinates."""
        return self.detect_batch([frame_rgb])[0]

    def detect_batch(self, frames_rgb: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Faces in several frames at once; frames of equal size are run as one batch."""
        results: list[list[Detection] | None] = [None] * len(frames_rgb)
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, frame in enumerate(frames_rgb):
            _check_frame(frame)
            by_size.setdefault(frame.shape[:2], []).append(index)
        for indices in by_size.values():
            smalls, scales = zip(*(downscale_for_detection(frames_rgb[i], self.max_side) for i in indices))
            batch = np.ascontiguousarray(np.stack(smalls))
            for index, scale, found in zip(indices, scales, self._detect_small(batch)):
                results[index] = [_rescale(d, scale) for d in found]
        return results  # type: ignore[return-value]

    @abstractmethod
    def _detect_small(self, frames_rgb: np.ndarray) -> list[list[Detection]]:
        """Detect on a batch (N, h, w, 3) uint8 RGB of already downscaled frames, in their own coordinates."""


def _rescale(detection: Detection, scale: np.ndarray) -> Detection:
    if np.all(scale == 1.0):
        return detection
    return Detection(
        box=detection.box * np.tile(scale, 2).astype(np.float32),
        score=detection.score,
        landmarks=detection.landmarks * scale.astype(np.float32),
    )


# ----------------------------------------------------------------------------------------------------- RetinaFace


def retinaface_priors(height: int, width: int) -> np.ndarray:
    """RetinaFace anchor boxes for an input of this size.

    Returns (P, 4) float32 [cx, cy, w, h] normalised by the image size, in the order of the network's heads:
    per pyramid level, row-major over the feature map, then per anchor size.
    """
    levels = []
    for step, min_sizes in zip(_RETINAFACE_STEPS, _RETINAFACE_MIN_SIZES):
        rows, cols = -(-height // step), -(-width // step)  # ceil division
        center_y, center_x = np.meshgrid((np.arange(rows) + 0.5) * step / height,
                                         (np.arange(cols) + 0.5) * step / width, indexing="ij")
        level = np.empty((rows, cols, len(min_sizes), 4), dtype=np.float64)
        level[..., 0] = center_x[..., None]
        level[..., 1] = center_y[..., None]
        level[..., 2] = np.array(min_sizes, dtype=np.float64) / width
        level[..., 3] = np.array(min_sizes, dtype=np.float64) / height
        levels.append(level.reshape(-1, 4))
    return np.concatenate(levels).astype(np.float32)


def load_retinaface_network(network_name: str, weights_path: Path | None, device: str | torch.device = "cpu"):
    """Build facexlib's RetinaFace and load a checkpoint into it (random weights when ``weights_path`` is None).

    network_name: "resnet50" or "mobile0.25". Raises WeightsError for a missing, unreadable or foreign file.
    """
    from facexlib.detection.retinaface import RetinaFace

    with warnings.catch_warnings():
        # torchvision warns about the deprecated `pretrained=False` facexlib passes to resnet50.
        warnings.simplefilter("ignore", UserWarning)
        network = RetinaFace(network_name=network_name, half=False, phase="test", device=torch.device("cpu"))
    if weights_path is not None:
        state_dict = _load_state_dict(weights_path)
        # Checkpoints saved from DataParallel carry a 'module.' prefix.
        state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
        expected = network.state_dict()
        missing = [key for key in expected if key not in state_dict]
        unexpected = [key for key in state_dict if key not in expected]
        misshapen = [key for key in expected if key in state_dict and state_dict[key].shape != expected[key].shape]
        if missing or unexpected or misshapen:
            raise WeightsError(
                f"{weights_path} is not a RetinaFace {network_name} checkpoint ({len(missing)} tensors missing, "
                f"{len(unexpected)} unexpected, {len(misshapen)} of the wrong shape); "
                "check the file name or download it again"
            )
        network.load_state_dict(state_dict, strict=True)
    return network.to(device).eval()


def _load_state_dict(path: Path) -> dict:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"weights file not found: {path}") from None
    except Exception as exc:  # torch raises several types for truncated or non-checkpoint files
        raise WeightsError(f"cannot read {path} as a checkpoint ({type(exc).__name__}: {exc}); "
                           "delete it and download it again") from None
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise WeightsError(f"{path} does not hold a plain state dict of tensors; download the official file again")
    return checkpoint


class RetinaFaceDetector(FaceDetector):
    """RetinaFace with cached anchors, batched forward and vectorised decoding.

    network: a facexlib ``RetinaFace`` module (weights already loaded). Preprocessing matches facexlib's
    ``detect_faces`` at the original size: BGR, float32, minus the mean (104, 117, 123), no scaling.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        *,
        name: str = "retinaface",
        max_side: int = DEFAULT_MAX_SIDE,
        score_threshold: float = DEFAULT_SCORE_THRESHOLD,
        nms_iou: float = _RETINAFACE_NMS_IOU,
    ) -> None:
        super().__init__(max_side=max_side, score_threshold=score_threshold)
        self.network = network
        self.name = name
        self.nms_iou = nms_iou
        self._device = next(network.parameters()).device
        self._priors: dict[tuple[int, int], torch.Tensor] = {}

    def _priors_for(self, height: int, width: int) -> torch.Tensor:
        key = (height, width)
        if key not in self._priors:
            self._priors[key] = torch.from_numpy(retinaface_priors(height, width)).to(self._device)
        return self._priors[key]

    @torch.inference_mode()
    def _detect_small(self, frames_rgb: np.ndarray) -> list[list[Detection]]:
        import torchvision

        batch, height, width = frames_rgb.shape[:3]
        bgr = frames_rgb[..., ::-1].astype(np.float32) - _RETINAFACE_BGR_MEAN
        inputs = torch.from_numpy(np.ascontiguousarray(bgr.transpose(0, 3, 1, 2))).to(self._device)
        locations, confidences, landmark_offsets = self.network(inputs)  # (N,P,4), (N,P,2) softmaxed, (N,P,10)
        priors = self._priors_for(height, width)
        prior_centers, prior_sizes = priors[:, :2], priors[:, 2:]
        image_size = torch.tensor([width, height], dtype=torch.float32, device=self._device)
        centers = prior_centers + locations[..., :2] * _RETINAFACE_VARIANCES[0] * prior_sizes
        sizes = prior_sizes * torch.exp(locations[..., 2:] * _RETINAFACE_VARIANCES[1])
        boxes = torch.cat([centers - sizes / 2, centers + sizes / 2], dim=-1) * image_size.repeat(2)
        landmarks = prior_centers[:, None, :] + landmark_offsets.reshape(batch, -1, 5, 2) * (
            _RETINAFACE_VARIANCES[0] * prior_sizes[:, None, :]
        )
        landmarks = landmarks * image_size
        scores = confidences[..., 1]
        results = []
        for index in range(batch):
            keep = scores[index] >= self.score_threshold
            frame_boxes, frame_scores, frame_landmarks = boxes[index][keep], scores[index][keep], landmarks[index][keep]
            order = torchvision.ops.nms(frame_boxes.float(), frame_scores.float(), self.nms_iou)  # best first
            results.append([
                Detection(box=frame_boxes[i].cpu().numpy(), score=float(frame_scores[i]),
                          landmarks=frame_landmarks[i].cpu().numpy())
                for i in order.tolist()
            ])
        return results


# ---------------------------------------------------------------------------------------------------------- MTCNN


def load_mtcnn_networks(device: str | torch.device = "cpu"):
    """MTCNN's three networks with the trained weights shipped inside facenet-pytorch's wheel."""
    import facenet_pytorch
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

    data_dir = Path(facenet_pytorch.__file__).resolve().parent / "data"
    networks = []
    for network_class, file_name in ((PNet, "pnet.pt"), (RNet, "rnet.pt"), (ONet, "onet.pt")):
        network = network_class(pretrained=False)
        network.load_state_dict(_load_state_dict(data_dir / file_name), strict=True)
        networks.append(network.to(device).eval())
    return tuple(networks)


class MTCNNDetector(FaceDetector):
    """MTCNN (facenet-pytorch): no download needed; landmarks come in GPEN's order.

    min_face_size: smallest face searched for, in pixels of the downscaled frame (the pyramid's first scale).
    """

    name = "mtcnn"

    def __init__(
        self,
        *,
        device: str | torch.device = "cpu",
        max_side: int = DEFAULT_MAX_SIDE,
        score_threshold: float = DEFAULT_SCORE_THRESHOLD,
        min_face_size: int = 20,
    ) -> None:
        super().__init__(max_side=max_side, score_threshold=score_threshold)
        if min_face_size < 12:
            raise OptionError(f"MTCNN min face size must be >= 12 pixels, got {min_face_size}")
        self.device = torch.device(device)
        self.min_face_size = int(min_face_size)
        self._pnet, self._rnet, self._onet = load_mtcnn_networks(self.device)

    @torch.inference_mode()
    def _detect_small(self, frames_rgb: np.ndarray) -> list[list[Detection]]:
        from facenet_pytorch.models.utils.detect_face import detect_face

        batch_boxes, batch_points = detect_face(
            frames_rgb, self.min_face_size, self._pnet, self._rnet, self._onet,
            list(_MTCNN_STAGE_THRESHOLDS), _MTCNN_PYRAMID_FACTOR, self.device,
        )
        results = []
        for index in range(len(frames_rgb)):
            # facenet-pytorch returns object arrays; rows are [x1, y1, x2, y2, probability] and (5, 2) points.
            boxes = np.asarray(batch_boxes[index], dtype=np.float32).reshape(-1, 5)
            points = np.asarray(batch_points[index], dtype=np.float32).reshape(-1, 5, 2)
            found = [
                Detection(box=box[:4], score=float(box[4]), landmarks=landmarks)
                for box, landmarks in zip(boxes, points)
                if box[4] >= self.score_threshold
            ]
            found.sort(key=lambda d: -d.score)
            results.append(found)
        return results


# -------------------------------------------------------------------------------------------------------- factory


def retinaface_weights(kind: str, weights_dir: str | os.PathLike | None = None) -> Path:
    """Where the checkpoint of "retinaface" or "retinaface-mobile" is (or would be) in the weights folder."""
    from vidgpen.weights import find_weights, weights_dir as resolve_weights_dir

    registry_name = RETINAFACE_VARIANTS[kind][2]
    found = find_weights(registry_name, weights_dir)
    return found if found is not None else resolve_weights_dir(weights_dir) / RETINAFACE_VARIANTS[kind][1]


def check_detector_weights(kind: str, weights_dir: str | os.PathLike | None = None) -> None:
    """Raise the WeightsError :func:`make_detector` would, without loading anything: an explicitly requested
    RetinaFace whose checkpoint is not in the weights folder."""
    if kind not in DETECTOR_KINDS:
        raise OptionError(f"unknown detector {kind!r}; use one of {', '.join(DETECTOR_KINDS)}")
    if kind in RETINAFACE_VARIANTS:
        path = retinaface_weights(kind, weights_dir)
        if not path.is_file():
            raise WeightsError(f"{kind} weights not found: {path}; run 'vidgpen weights download "
                               f"{RETINAFACE_VARIANTS[kind][2]}' or use --detector mtcnn")


def make_detector(
    kind: str = "auto",
    *,
    weights_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    max_side: int = DEFAULT_MAX_SIDE,
    score_threshold: float = DEFAULT_SCORE_THRESHOLD,
    mtcnn_min_face_size: int = 20,
    notice: Callable[[str], None] | None = None,
) -> FaceDetector:
    """Build the detector for ``--detector``.

    kind: "auto" (RetinaFace ResNet-50 when its weights are present, else MTCNN), "retinaface" (ResNet-50),
        "retinaface-mobile" (MobileNet-0.25, faster) or "mtcnn" (weights ship with facenet-pytorch).
    weights_dir: where RetinaFace checkpoints are looked up (default: vidgpen's weights folder).
    max_side: detection runs on a copy whose long side is at most this many pixels.
    mtcnn_min_face_size: MTCNN's smallest face (box side, in pixels of that copy); its cost falls roughly with the
        square of this value. RetinaFace's smallest anchor is fixed (16 px).
    notice: receives the one-line message when "auto" falls back to MTCNN (default: logged as a warning).
    Raises OptionError for an unknown kind or bad sizes, WeightsError when an explicitly requested RetinaFace has no
    usable checkpoint.
    """
    if kind not in DETECTOR_KINDS:
        raise OptionError(f"unknown detector {kind!r}; use one of {', '.join(DETECTOR_KINDS)}")
    def build_mtcnn() -> MTCNNDetector:
        return MTCNNDetector(device=device, max_side=max_side, score_threshold=score_threshold,
                             min_face_size=mtcnn_min_face_size)

    if kind == "mtcnn":
        return build_mtcnn()
    requested = "retinaface" if kind == "auto" else kind
    path = retinaface_weights(requested, weights_dir)
    if not path.is_file():
        if kind == "auto":
            registry_name = RETINAFACE_VARIANTS[requested][2]
            message = (f"RetinaFace weights not found ({path}); detecting faces with MTCNN instead "
                       f"('vidgpen weights download {registry_name}' gets the better detector)")
            (notice or logger.warning)(message)
            return build_mtcnn()
        check_detector_weights(kind, weights_dir)
    network = load_retinaface_network(RETINAFACE_VARIANTS[requested][0], path, device)
    return RetinaFaceDetector(network, name=requested, max_side=max_side, score_threshold=score_threshold)
