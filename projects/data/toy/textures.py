"""Procedural textures of the toy dataset: value noise, the stuff background, object fills.

Every function draws its randomness from the ``numpy.random.Generator`` it is given, so a sample is
a pure function of its seed. Images are float32 ``(H, W, 3)`` arrays in [0, 255] until the very end.
"""

import colorsys
import logging

import cv2
import numpy as np

logger = logging.getLogger(__name__)

# Stuff classes painted into the background, in label order (after the thing classes).
STUFF_CLASSES = ("sky", "grass", "gravel")
SKY, GRASS, GRAVEL = range(len(STUFF_CLASSES))
STUFF_COLORS = ((135, 190, 235), (70, 150, 60), (150, 130, 110))
# Hue ranges of the stuff painters (most skies; every grass; gravel, at low saturation).
SKY_HUES = (0.53, 0.66)
GRASS_HUES = (0.18, 0.4)
GRAVEL_HUES = (0.04, 0.13)


def hsv_color(hue, saturation, value):
    """One RGB colour, shape (3,), float32 in [0, 255], from HSV components in [0, 1]."""
    rgb = colorsys.hsv_to_rgb(
        hue % 1.0, float(np.clip(saturation, 0, 1)), float(np.clip(value, 0, 1))
    )
    return np.asarray(rgb, dtype=np.float32) * 255.0


def value_noise(rng, height, width, cell_y, cell_x=None):
    """Smooth random field: a coarse uniform grid upsampled bicubically.

    Args:
        rng (np.random.Generator): source of randomness.
        height, width (int): output size.
        cell_y, cell_x (int): feature size in pixels along each axis (``cell_x`` defaults to
            ``cell_y``); anisotropic cells give streaks.

    Returns:
        np.ndarray: (height, width) float32, roughly in [0, 1].
    """
    cell_x = cell_y if cell_x is None else cell_x
    cell_y, cell_x = max(1, int(cell_y)), max(1, int(cell_x))
    grid_h = height // cell_y + 3
    grid_w = width // cell_x + 3
    grid = rng.random((grid_h, grid_w), dtype=np.float32)
    big = cv2.resize(grid, (grid_w * cell_x, grid_h * cell_y), interpolation=cv2.INTER_CUBIC)
    off_y = int(rng.integers(0, cell_y))
    off_x = int(rng.integers(0, cell_x))
    return big[off_y : off_y + height, off_x : off_x + width]


def fractal_noise(rng, height, width, cell, octaves=3, persistence=0.5):
    """Sum of ``octaves`` value-noise layers, each half the cell size of the previous one.

    Returns:
        np.ndarray: (height, width) float32 normalised to [0, 1].
    """
    total = np.zeros((height, width), np.float32)
    amplitude = 1.0
    for _ in range(octaves):
        total += amplitude * value_noise(rng, height, width, cell)
        amplitude *= persistence
        cell = max(1, cell // 2)
    low, high = float(total.min()), float(total.max())
    return (total - low) / max(high - low, 1e-6)


def _smooth_curve(rng, length, cell):
    """A smooth 1-D random curve of ``length`` samples in [0, 1] (shape (length,))."""
    return value_noise(rng, 1, length, 1, cell)[0]


def stuff_layout(rng, height, width):
    """Split the image into large stuff regions.

    With probability 0.7 a wavy horizon puts sky above the ground; the ground is divided into
    grass and gravel by thresholding a low-frequency field (sometimes all one of them).

    Returns:
        np.ndarray: (height, width) uint8 stuff index in ``range(len(STUFF_CLASSES))``.
    """
    labels = np.full((height, width), GRASS, np.uint8)
    ys = np.arange(height, dtype=np.float32)[:, None]
    ground = np.ones((height, width), bool)
    if rng.random() < 0.7:
        base = rng.uniform(0.15, 0.55) * height
        wave = (
            (_smooth_curve(rng, width, int(rng.integers(40, 160))) - 0.5)
            * rng.uniform(0.1, 0.4)
            * height
        )
        horizon = base + wave
        ground = ys >= horizon[None, :]
        labels[~ground] = SKY
    split = rng.random()
    if split < 0.15:
        labels[ground] = GRAVEL
    elif split < 0.85:
        field = value_noise(rng, height, width, int(rng.integers(60, 140)))
        field += np.linspace(0, rng.uniform(-0.5, 0.5), height, dtype=np.float32)[:, None]
        values = field[ground]
        if values.size:
            threshold = np.quantile(values, rng.uniform(0.25, 0.75))
            labels[ground & (field < threshold)] = GRAVEL
    return labels


def _sky(rng, height, width):
    hue = rng.uniform(*SKY_HUES) if rng.random() < 0.75 else rng.random()
    top = hsv_color(hue, rng.uniform(0.35, 0.8), rng.uniform(0.6, 0.95))
    bottom = hsv_color(hue + rng.uniform(-0.05, 0.05), rng.uniform(0.05, 0.35), rng.uniform(0.8, 1))
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    img = top * (1 - ramp) + bottom * ramp
    clouds = fractal_noise(rng, height, width, int(rng.integers(24, 64)), octaves=4)
    cover = np.clip((clouds - rng.uniform(0.45, 0.8)) * 3.0, 0, 1)[..., None]
    return img * (1 - cover) + 245.0 * cover


def _grass(rng, height, width):
    base = hsv_color(rng.uniform(*GRASS_HUES), rng.uniform(0.35, 0.85), rng.uniform(0.3, 0.7))
    blades = value_noise(rng, height, width, int(rng.integers(6, 14)), int(rng.integers(1, 3)))
    patches = fractal_noise(rng, height, width, int(rng.integers(20, 50)))
    shade = 0.6 + 0.5 * blades * 0.8 + 0.3 * patches
    return base * shade[..., None]


def _gravel(rng, height, width):
    base = hsv_color(rng.uniform(*GRAVEL_HUES), rng.uniform(0.08, 0.4), rng.uniform(0.4, 0.7))
    pebbles = value_noise(rng, height, width, int(rng.integers(3, 7)))
    grain = rng.random((height, width), dtype=np.float32)
    mottle = fractal_noise(rng, height, width, 32)
    shade = 0.55 + 0.5 * (pebbles > 0.55) * pebbles + 0.2 * grain + 0.25 * mottle
    return base * shade[..., None]


def render_stuff(rng, height, width):
    """Background image and its stuff labels.

    Returns:
        tuple: image (height, width, 3) float32 in [0, 255]; labels (height, width) uint8.
    """
    labels = stuff_layout(rng, height, width)
    image = np.empty((height, width, 3), np.float32)
    for index, painter in ((SKY, _sky), (GRASS, _grass), (GRAVEL, _gravel)):
        region = labels == index
        if region.any():
            image[region] = painter(rng, height, width)[region]
    return np.clip(image, 0, 255), labels


# Object fills: (name, probability).
PATTERNS = (("flat", 0.25), ("stripes", 0.2), ("checker", 0.15), ("spots", 0.2), ("gradient", 0.2))


def object_texture(
    rng,
    height,
    width,
    class_hue,
    angle,
    cue_prob=0.6,
    jitter=0.05,
    second_hue_prob=0.5,
    saturation=(0.3, 1.0),
    value=(0.35, 1.0),
    second_saturation=(0.2, 1.0),
):
    """Fill for one object: a pattern of two colours with a weak class colour tendency.

    Args:
        rng (np.random.Generator): source of randomness.
        height, width (int): size of the object's window.
        class_hue (float): hue the class leans to.
        angle (float): the object's rotation, so patterns turn with it.
        cue_prob (float): probability that the main colour takes ``class_hue`` (with a normal
            ``jitter``), else any hue.
        jitter (float): standard deviation of the main hue around ``class_hue``.
        second_hue_prob (float): probability that the second colour is a shade of the main one.
        saturation, value (tuple[float, float]): ranges of the main colour's HSV saturation and
            value.
        second_saturation (tuple[float, float]): range of the second colour's saturation.

    Returns:
        np.ndarray: (height, width, 3) float32 in [0, 255].
    """
    hue = class_hue + rng.normal(0, jitter) if rng.random() < cue_prob else rng.random()
    first = hsv_color(hue, rng.uniform(*saturation), rng.uniform(*value))
    if rng.random() < second_hue_prob:
        second = hsv_color(
            hue + rng.normal(0, 0.03), rng.uniform(*second_saturation), rng.uniform(0.1, 0.6)
        )
    else:
        second = hsv_color(rng.random(), rng.uniform(*second_saturation), rng.uniform(0.3, 1.0))
    names, probs = zip(*PATTERNS)
    pattern = names[int(rng.choice(len(names), p=np.asarray(probs)))]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    u = xs * np.cos(angle) + ys * np.sin(angle)
    v = -xs * np.sin(angle) + ys * np.cos(angle)
    if pattern == "flat":
        mix = 0.15 * value_noise(rng, height, width, 4)
    elif pattern == "stripes":
        period = rng.uniform(3.0, 10.0)
        mix = (np.sin(u * (2 * np.pi / period)) > 0).astype(np.float32)
    elif pattern == "checker":
        period = rng.uniform(3.0, 9.0)
        mix = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    elif pattern == "spots":
        mix = (value_noise(rng, height, width, int(rng.integers(3, 8))) > 0.55).astype(np.float32)
    else:
        mix = (u - u.min()) / max(float(u.max() - u.min()), 1.0)
    image = first * (1 - mix[..., None]) + second * mix[..., None]
    light = 1.0 + rng.uniform(-0.2, 0.2) * (v - v.mean()) / max(height, width, 1)
    return np.clip(image * light[..., None], 0, 255)
