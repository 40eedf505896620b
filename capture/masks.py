"""Polygons to pixel masks, and privacy masking of frames at the source (DESIGN.md decision 8).

Polygons come from config with coordinates normalised to 0..1 of width and height.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

Polygon = Sequence[tuple[float, float]]


def rasterize(polygons: Sequence[Polygon], width: int, height: int) -> np.ndarray:
    """A (height, width) bool array, True inside any of the polygons."""
    canvas = np.zeros((height, width), dtype=np.uint8)
    for poly in polygons:
        pts = np.array([[round(x * (width - 1)), round(y * (height - 1))] for x, y in poly],
                       dtype=np.int32)
        cv2.fillPoly(canvas, [pts], 1)
    return canvas.astype(bool)


# Limited-range ("TV") black, the range libx264/FFmpeg tag yuv420p with by default and the range
# OpenCV's YUV->BGR conversion assumes. On a full-range source it reads as very dark grey.
BLACK_Y = 16
NEUTRAL_C = 128


def chroma_mask(mask_full: np.ndarray) -> np.ndarray:
    """The (h/2, w/2) chroma-plane mask for a full-size mask: a chroma sample is masked if any of
    the 2x2 luma pixels it covers is, so no colour leaks out of the edge of a masked region."""
    h, w = mask_full.shape
    if h % 2 or w % 2:  # odd sizes round up, as FFmpeg's chroma planes do
        mask_full = np.pad(mask_full, ((0, h % 2), (0, w % 2)), mode="edge")
        h, w = mask_full.shape
    return np.asarray(mask_full.reshape(h // 2, 2, w // 2, 2).any(axis=(1, 3)))


def i420_planes(i420: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray,
                                                                      np.ndarray]:
    """Views (not copies) of the Y, U and V planes of a YUV 4:2:0 buffer.

    Accepts a packed I420 array of shape (h*3/2, w) and also picamera2's "YUV420" layout of shape
    (h*3/2, stride) with stride >= w, where each chroma plane has stride/2 bytes per row.
    """
    stride = i420.shape[1]
    if i420.shape[0] != height * 3 // 2 or stride < width:
        raise ValueError(f"i420_planes: shape {i420.shape} does not hold {width}x{height}")
    y = i420[:height, :width]
    chroma = i420[height:].reshape(height, stride // 2)  # h/2 rows of U, then h/2 rows of V
    u = chroma[: height // 2, : width // 2]
    v = chroma[height // 2:, : width // 2]
    return y, u, v


def apply_privacy(i420: np.ndarray, mask_full: np.ndarray, mask_chroma: np.ndarray) -> None:
    """Black out the masked pixels of a YUV 4:2:0 frame, in place (Y=16, U=V=128).

    ``mask_full`` is (h, w) bool, ``mask_chroma`` is (h/2, w/2) bool (see chroma_mask). The
    array may be packed I420 or picamera2's strided YUV420; it must be writeable.
    """
    height, width = mask_full.shape
    y, u, v = i420_planes(i420, width, height)
    y[mask_full] = BLACK_Y
    u[mask_chroma] = NEUTRAL_C
    v[mask_chroma] = NEUTRAL_C


class PrivacyMask:
    """Privacy polygons (normalised 0..1) rasterised once per frame size, then applied per frame."""

    def __init__(self, polygons: Sequence[Polygon]) -> None:
        self.polygons = tuple(tuple(p) for p in polygons)
        self._cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def __bool__(self) -> bool:
        return bool(self.polygons)

    def masks(self, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """(mask_full, mask_chroma) for a frame of this size, computed on first use."""
        key = (width, height)
        found = self._cache.get(key)
        if found is None:
            full = rasterize(self.polygons, width, height)
            found = (full, chroma_mask(full))
            self._cache[key] = found
        return found

    def apply(self, i420: np.ndarray, width: int, height: int) -> None:
        """Black out the polygons in a YUV 4:2:0 frame of ``width`` x ``height``, in place."""
        if self.polygons:
            full, chroma = self.masks(width, height)
            apply_privacy(i420, full, chroma)

    def apply_grey(self, grey: np.ndarray) -> None:
        """Black out the polygons in a grey (luma-only) image, in place."""
        if self.polygons:
            full, _ = self.masks(grey.shape[1], grey.shape[0])
            grey[full] = BLACK_Y
