"""Whether a large changed region is a thing in front of the background or only light on it.

A person hides the background: where the background had texture (a wall's edges, furniture,
paving), the frame no longer follows it. Light does not hide it: a headlight sweep, a cloud's
shadow or a porch lamp multiplies the background and adds to it, and an insect or a web right
in front of the lens is so far out of focus that it only adds a glow; the texture shows through
either way. So in a small window around every pixel of the region, correlate the frame with the
background: where the background is textured and the correlation is gone, something hides it.
Over a featureless background nothing can be told from texture; there the change counts as a
thing unless a smoothly varying gain and offset explain it (a soft light cone on a bare wall).
Only the region's box is computed, once per region that could start an event.
"""

from __future__ import annotations

import cv2
import numpy as np

WINDOW = 7  # work pixels: the window the correlation and the gain are computed over
TEXTURE_K = 2.0  # the background is textured where its fine detail's local sigma exceeds
# this many noises
KEPT = 0.5  # correlation above this: the texture shows through
FLAT_SHARE = 0.2  # less than this share of the region over texture: judge by smoothness
CLIPPED = 245.0  # grey levels at or above this are left out
EDGE = 3  # work pixels along the frame's edges that are left out


def hidden(x: np.ndarray, bg: np.ndarray, mask: np.ndarray, noise: float,
           box: tuple[int, int, int, int]) -> float:
    """How much of the region (``mask`` uint8, 255 inside, within ``box`` x0, y0, x1, y1)
    hides the background, 0 to 1: the share of its textured pixels whose local correlation with
    the background is gone; over a mostly featureless background, the share of its change that
    a smooth gain and offset leave unexplained."""
    x0, y0, x1, y1 = box
    h, w = x.shape
    xa, ya = max(0, x0 - WINDOW), max(0, y0 - WINDOW)
    xb, yb = min(w, x1 + WINDOW), min(h, y1 + WINDOW)
    img, ref = x[ya:yb, xa:xb], bg[ya:yb, xa:xb]
    # where the sensor clips (a glow on a lit screen), neither texture nor gain can be told;
    # nor at the frame's edge, where the windows run out of picture
    inside = (mask[ya:yb, xa:xb] > 0) & (img < CLIPPED) & (ref < CLIPPED)
    inside[:, :max(0, EDGE - xa)] = False
    inside[:max(0, EDGE - ya), :] = False
    if xb > w - EDGE:
        inside[:, inside.shape[1] - (xb - (w - EDGE)):] = False
    if yb > h - EDGE:
        inside[inside.shape[0] - (yb - (h - EDGE)):, :] = False
    n = int(np.count_nonzero(inside))
    if n == 0:
        return 0.0
    k = (WINDOW, WINDOW)
    # Texture: what is left after a 5x5 average is taken away (a glow or a light cone is
    # smooth and goes with it), compared in each window by its correlation.
    hr = ref - cv2.blur(ref, (5, 5))
    hx = img - cv2.blur(img, (5, 5))
    var_r = cv2.blur(hr * hr, k)
    textured = inside & (var_r > (TEXTURE_K * noise) ** 2)
    nt = int(np.count_nonzero(textured))
    if nt >= FLAT_SHARE * n:
        cov = cv2.blur(hr * hx, k)
        var_x = cv2.blur(hx * hx, k)
        corr = cov[textured] / np.sqrt(var_r[textured] * var_x[textured] + noise ** 4)
        return float(np.count_nonzero(corr < KEPT)) / nt
    mean_r, mean_x = cv2.blur(ref, k), cv2.blur(img, k)
    cov = cv2.blur(ref * img, k) - mean_r * mean_x
    var_r = cv2.blur(ref * ref, k) - mean_r * mean_r
    gain = cov / (var_r + (2.0 * noise) ** 2)
    offset = mean_x - gain * mean_r
    model = cv2.blur(gain, k) * ref + cv2.blur(offset, k)
    change = float(np.abs(img - ref)[inside].sum())
    if change <= 0.0:
        return 0.0
    resid = np.abs(img - model)[inside] - 2.0 * noise  # what noise alone leaves is explained
    return float(np.maximum(resid, 0.0).sum()) / change
