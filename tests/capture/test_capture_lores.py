"""make_lores: the detector's image keeps every source pixel's contribution, at any size."""

from __future__ import annotations

import numpy as np
import pytest

from doorstep.capture.lores import make_lores


@pytest.mark.parametrize("shape", [(720, 1280), (1080, 1920), (721, 1281), (576, 768),
                                   (240, 352)])
def test_flat_stays_flat_and_blocks_keep_their_brightness(shape: tuple[int, int]) -> None:
    h, w = shape
    y = np.full((h, w), 40, np.uint8)
    lores = make_lores(y, (320, 240))
    assert lores.shape == (240, 320)
    assert int(lores.min()) == int(lores.max()) == 40
    y[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 200  # the middle quarter, bright
    lores = make_lores(y, (320, 240))
    assert abs(float(lores.mean()) - float(y.mean())) < 1.5
    assert lores[120, 160] == 200 and lores[5, 5] == 40


@pytest.mark.parametrize("shape", [(720, 1280), (1080, 1920)])
def test_no_row_or_column_is_skipped(shape: tuple[int, int]) -> None:
    """A one-pixel line anywhere still shows in the lores image: every source row and column
    is averaged in, so a thin object cannot fall between samples. (At 1080p a lores pixel is
    six source pixels wide: an exact area average would give 255/6 = 42, the bilinear last step
    gives 48 or 16 by position. A skipping resize would give 0 for most lines.)"""
    h, w = shape
    for col in range(0, w, 7):
        y = np.zeros((h, w), np.uint8)
        y[:, col] = 255
        assert make_lores(y, (320, 240)).max() >= 10, f"column {col} vanished"
    for row in range(0, h, 5):
        y = np.zeros((h, w), np.uint8)
        y[row, :] = 255
        assert make_lores(y, (320, 240)).max() >= 10, f"row {row} vanished"


def test_a_plane_of_the_right_size_is_returned_as_owned_pixels() -> None:
    y = np.arange(240 * 320, dtype=np.uint32).astype(np.uint8).reshape(240, 320)
    y.flags.writeable = False
    lores = make_lores(y, (320, 240))
    assert lores.flags.writeable and np.array_equal(lores, y)
