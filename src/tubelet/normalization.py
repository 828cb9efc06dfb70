"""The pixel statistics clips are normalised with, defined once for every layer.

A clip's float value is `(pixel / 255 - mean) / std` per RGB channel. Data transforms default to
ImageNet's statistics; a saved model records the ones it was trained or published with
(`tubelet.models.spec.Preprocessing`). This module imports nothing of tubelet, so every layer may
use it.
"""

from __future__ import annotations

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Pixels in [-1, 1]: x / 255 * 2 - 1 is normalising with mean 0.5 and std 0.5 (diffusion, RAFT).
SIGNED_MEAN = (0.5, 0.5, 0.5)
SIGNED_STD = (0.5, 0.5, 0.5)
