"""Robust image reading for dataset dicts: clear errors naming the file, correct mode conversion.

Detectron2's ``detection_utils.read_image`` lets PIL errors escape without the file name, clips
16-bit images instead of scaling them, turns palette label maps into luminance, and raises a bare
size mismatch when EXIF rotation and the JSON disagree. :func:`read_image_for_dict` and
:func:`read_label_map` fix those:

* missing file -> :class:`ImageNotFoundError` (a ``FileNotFoundError``);
* corrupt or truncated file -> :class:`CorruptImageError`;
* image size differing from the dict's ``height``/``width`` -> :class:`ImageSizeError`
  (a Detectron2 ``SizeMismatchError``);
* grayscale, gray+alpha, RGBA, palette, CMYK, 16-bit and 32-bit integer images are converted to
  the requested format (``"RGB"``, ``"BGR"``, ``"L"``, ...); integer images wider than 8 bits are
  scaled by their bit depth (16-bit: ``v * 255 / 65535``), never clipped;
* EXIF orientation is applied. When the orientation swaps height and width and the dict's size
  matches the *stored* (un-rotated) pixels but not the rotated ones, the annotations were made on
  the stored pixels: the image is returned unrotated, with a warning naming the file.

All errors derive from :class:`BadImageError` so that a mapper can skip bad images in one place.
"""

import logging

import numpy as np
from detectron2.data.detection_utils import SizeMismatchError
from detectron2.utils.file_io import PathManager
from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

__all__ = [
    "BadImageError",
    "ImageNotFoundError",
    "CorruptImageError",
    "ImageSizeError",
    "read_image_for_dict",
    "read_image_robust",
    "read_label_map",
    "to_uint8",
]

_EXIF_ORIENTATION = 0x0112
# EXIF orientations 5-8 swap height and width.
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)


class BadImageError(ValueError):
    """An image file that cannot be used; the message names the file."""


class ImageNotFoundError(BadImageError, FileNotFoundError):
    """The image file does not exist."""


class CorruptImageError(BadImageError):
    """PIL could not decode the file (not an image, corrupt, truncated)."""


class ImageSizeError(BadImageError, SizeMismatchError):
    """The decoded image's size differs from the ``height``/``width`` of its dataset dict."""


def _open_decoded(file_name):
    """Open and fully decode ``file_name`` with PIL.

    Returns:
        PIL.Image.Image: the decoded image (stored orientation, EXIF not yet applied).

    Raises:
        ImageNotFoundError, CorruptImageError: naming ``file_name``.
    """
    try:
        with PathManager.open(file_name, "rb") as f:
            image = Image.open(f)
            image.load()  # decode now: truncated data raises here, inside the try
    except FileNotFoundError as e:
        raise ImageNotFoundError(f"Image file not found: {file_name}") from e
    except IsADirectoryError as e:
        raise ImageNotFoundError(f"Image path is a directory, not a file: {file_name}") from e
    except UnidentifiedImageError as e:
        raise CorruptImageError(
            f"Not a readable image (corrupt or unknown format): {file_name}"
        ) from e
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise CorruptImageError(f"Corrupt or truncated image file {file_name}: {e}") from e
    return image


def _exif_orientation(image):
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    except Exception:  # malformed EXIF blocks: treat as no orientation
        return 1


def to_uint8(image, file_name="<array>"):
    """Convert a PIL image of any integer mode into an 8-bit mode, scaling by bit depth.

    Args:
        image (PIL.Image.Image): image in any mode.
        file_name (str): used in error messages.

    Returns:
        PIL.Image.Image: in mode ``"L"``, ``"LA"``, ``"RGB"``, ``"RGBA"``, ``"P"``, ``"CMYK"``,
        ... (whatever 8-bit mode PIL can convert from); wide integer images become ``"L"``.

    Raises:
        CorruptImageError: for floating-point images, which have no defined range.
    """
    mode = image.mode
    if mode.startswith("I"):
        array = np.asarray(image)
        if mode.startswith("I;16"):
            depth = 16
        else:  # 32-bit container (PIL stores 16-bit PNGs as "I" in some versions)
            depth = 16 if array.size == 0 or (array.min() >= 0 and array.max() < 2**16) else 32
        if array.size and array.min() < 0:
            raise CorruptImageError(f"Signed integer image with negative values: {file_name}")
        scaled = np.round(array.astype(np.float64) * (255.0 / (2**depth - 1)))
        return Image.fromarray(scaled.astype(np.uint8), mode="L")
    if mode == "F":
        raise CorruptImageError(
            f"Floating-point image (PIL mode 'F') has no defined 0-255 range: {file_name}"
        )
    if mode == "1":
        return image.convert("L")
    return image


def _convert(image, format, file_name):
    """PIL image -> (H, W, C) numpy array in ``format`` (uint8 except YUV-BT.601)."""
    image = to_uint8(image, file_name)
    if image.mode == "P":  # palette, possibly with transparency: expand through RGBA
        image = image.convert("RGBA")
    if format is None:
        array = np.asarray(image)
        return array[:, :, None] if array.ndim == 2 else array
    pil_format = "RGB" if format in ("BGR", "YUV-BT.601") else format
    if image.mode != pil_format:
        image = image.convert(pil_format)  # RGBA/LA -> RGB/L drops alpha, keeps stored colours
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if format == "BGR":
        array = array[:, :, ::-1]
    elif format == "YUV-BT.601":
        rgb_to_yuv = np.array(
            [[0.299, 0.587, 0.114], [-0.14713, -0.28886, 0.436], [0.615, -0.51499, -0.10001]]
        )
        array = (array / 255.0) @ rgb_to_yuv.T
    return np.ascontiguousarray(array)


def read_image_robust(file_name, format=None, expected_hw=None):
    """Read an image, apply EXIF orientation and convert it to ``format``.

    Args:
        file_name (str): image path (any ``PathManager`` path).
        format (str or None): ``"RGB"``, ``"BGR"``, ``"L"``, ``"YUV-BT.601"`` or another PIL
            mode; None keeps the stored channels.
        expected_hw (tuple[int, int] or None): the (height, width) the annotations expect. Used
            only to decide whether to apply a height/width-swapping EXIF rotation (see the module
            docstring) and checked: a different size raises :class:`ImageSizeError`.

    Returns:
        np.ndarray: (H, W, C) image, uint8 (float for YUV-BT.601).

    Raises:
        ImageNotFoundError, CorruptImageError, ImageSizeError: each naming ``file_name``.
    """
    image = _open_decoded(file_name)
    stored_hw = (image.height, image.width)
    orientation = _exif_orientation(image)
    if orientation != 1:
        use_stored = (
            orientation in _SWAPPING_ORIENTATIONS
            and expected_hw is not None
            and tuple(expected_hw) == stored_hw
            and stored_hw[0] != stored_hw[1]
        )
        if use_stored:
            logger.warning(
                f"{file_name}: EXIF orientation {orientation} would rotate the image to "
                f"{stored_hw[::-1]} (h, w), but the dataset says {tuple(expected_hw)}, the stored "
                "size; using the stored (unrotated) pixels the annotations were made on."
            )
        else:
            try:
                image = ImageOps.exif_transpose(image)
            except Exception as e:
                raise CorruptImageError(f"Cannot apply EXIF orientation of {file_name}: {e}") from e
    array = _convert(image, format, file_name)
    if expected_hw is not None and tuple(array.shape[:2]) != tuple(expected_hw):
        extra = ""
        if orientation != 1 and tuple(expected_hw) == stored_hw[::-1]:
            extra = f" (EXIF orientation {orientation} was applied)"
        raise ImageSizeError(
            f"Image {file_name} has size (h, w) = {tuple(array.shape[:2])}{extra} but its dataset "
            f"entry says (height, width) = {tuple(expected_hw)}. Fix the width/height in the "
            "annotation file (or re-export the image)."
        )
    return array


def read_image_for_dict(dataset_dict, format=None):
    """Read ``dataset_dict["file_name"]`` checked against its ``height``/``width``.

    Fills in ``height``/``width`` when the dict lacks them (as Detectron2's
    ``check_image_size`` does), so that boxes are always mapped back to the original size.

    Args:
        dataset_dict (dict): Detectron2 dataset dict with ``file_name`` and optionally
            ``height``/``width``.
        format (str or None): see :func:`read_image_robust`.

    Returns:
        np.ndarray: (H, W, C) image.

    Raises:
        BadImageError: naming the file (or the dict, when it has no ``file_name``).
    """
    if "file_name" not in dataset_dict:
        raise BadImageError(
            f"Dataset dict has no 'file_name' (image_id={dataset_dict.get('image_id')!r})"
        )
    expected = None
    if "height" in dataset_dict and "width" in dataset_dict:
        expected = (int(dataset_dict["height"]), int(dataset_dict["width"]))
    image = read_image_robust(dataset_dict["file_name"], format, expected_hw=expected)
    dataset_dict.setdefault("height", image.shape[0])
    dataset_dict.setdefault("width", image.shape[1])
    return image


def read_label_map(file_name, expected_hw=None):
    """Read a semantic label map keeping its stored values (palette indices for ``"P"``).

    Detectron2 reads label maps with PIL mode ``"L"``, which turns palette images (VOC style)
    into luminance; here ``"P"``, ``"L"`` and 16-bit maps keep their label values.

    Args:
        file_name (str): label-map path.
        expected_hw (tuple[int, int] or None): required (height, width).

    Returns:
        np.ndarray: (H, W) integer array (uint8, or int32 for 16-bit maps).

    Raises:
        ImageNotFoundError, CorruptImageError, ImageSizeError: naming ``file_name``;
        CorruptImageError also for colour (RGB) label maps, which have no single label value.
    """
    image = _open_decoded(file_name)
    if image.mode in ("P", "L", "1"):
        labels = np.asarray(image).astype(np.uint8)
    elif image.mode.startswith("I"):
        labels = np.asarray(image).astype(np.int32)
    else:
        raise CorruptImageError(
            f"Label map {file_name} has PIL mode {image.mode!r}; expected a single-channel "
            "(L, P or 16-bit) image of class ids."
        )
    if expected_hw is not None and tuple(labels.shape) != tuple(expected_hw):
        raise ImageSizeError(
            f"Label map {file_name} has size (h, w) = {labels.shape} but the image is "
            f"{tuple(expected_hw)}."
        )
    return labels
