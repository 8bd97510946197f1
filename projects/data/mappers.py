"""Dataset mappers every method can use, and the annotation checks they run.

* :class:`InstanceDatasetMapper` (the default ``INPUT.DATASET_MAPPER_NAME``): robust image
  reading (:mod:`projects.data.image_io`), augmentations by ``INPUT.AUGMENTATIONS_NAME``,
  ``Instances`` with ``gt_boxes``, ``gt_classes`` and ``gt_masks`` (``PolygonMasks`` or
  ``BitMasks`` by ``INPUT.MASK_FORMAT``), optionally a semantic target ``sem_seg`` derived from
  the instance masks.
* :class:`SemanticDatasetMapper`: image + ``sem_seg`` read from ``sem_seg_file_name``.

RLE segmentations with ``INPUT.MASK_FORMAT == "polygon"`` (Detectron2 v0.6 crashes deep inside
``PolygonMasks``) are converted to polygons from the mask's outer contours, traced on a 4x
upsampled mask so the polygon follows pixel edges; holes are filled, since polygon masks cannot
represent them. A warning is logged once. ``INPUT.POLYGON_FROM_RLE = False`` raises instead,
naming the annotation and telling to set ``INPUT.MASK_FORMAT bitmask``.

Annotation checks (:func:`sanitize_annotations`, also run over a whole dataset by
:func:`filter_dataset_dicts`, which a trainer can call on the loaded dicts): missing, unknown or
out-of-range category ids, missing / non-finite / zero-area / negative boxes, non-finite
polygons, polygons under 3 points (dropped; the annotation goes when none is left), RLEs whose
size differs from the image. ``DATALOADER.BAD_ANNOTATIONS``: ``"filter"`` drops them, counting
each reason in :data:`ANNOTATION_STATS` and logging (first occurrences and periodic summaries);
``"error"`` raises :class:`BadAnnotationError` naming the annotation id and the image file.
Images left with no (non-crowd) annotation give empty ``Instances`` in the mapper (as in
Detectron2) and are dropped by :func:`filter_dataset_dicts`.
"""

import collections
import copy
import logging
import numbers

import cv2
import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as d2_utils
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, BoxMode, PolygonMasks, polygons_to_bitmask

from .augmentations import build_augmentations, centre_keep_mask, has_crop
from .image_io import BadImageError, read_image_for_dict, read_label_map
from .mapper_registry import DATASET_MAPPER_REGISTRY

logger = logging.getLogger(__name__)

__all__ = [
    "ANNOTATION_STATS",
    "BadAnnotationError",
    "InstanceDatasetMapper",
    "SemanticDatasetMapper",
    "filter_dataset_dicts",
    "instances_to_sem_seg",
    "log_annotation_summary",
    "rle_to_polygons",
    "sanitize_annotations",
]

# Reason -> number of annotations (or images, for image-level reasons) dropped in this process.
ANNOTATION_STATS = collections.Counter()
_WARN_FIRST_N = 10  # per reason, then only periodic summaries
_SUMMARY_EVERY = 1000
_rle_warning_done = False


class BadAnnotationError(ValueError):
    """An invalid annotation; the message names its id and the image file."""


# ---------------------------------------------------------------------------------------------
# Annotation checks
# ---------------------------------------------------------------------------------------------
def _where(anno, file_name):
    return f"annotation id={anno.get('id', '<none>')} of image {file_name}"


def _annotation_problem(anno, image_hw, num_classes):
    """Return the reason ``anno`` is unusable (None if fine) and drop its degenerate polygons.

    Mutates ``anno["segmentation"]`` (list form) to remove polygons with fewer than 3 points.

    Returns:
        tuple[str or None, int]: the reason, and the number of degenerate polygons removed.
    """
    cat = anno.get("category_id")
    if cat is None:
        return "missing category_id", 0
    if isinstance(cat, bool) or not isinstance(cat, numbers.Integral):
        if not (isinstance(cat, numbers.Real) and float(cat).is_integer()):
            return f"category_id not an integer: {cat!r}", 0
    if int(cat) < 0 or (num_classes is not None and int(cat) >= num_classes):
        return f"category_id out of range: {cat} not in the categories [0, {num_classes})", 0

    if "bbox" not in anno or "bbox_mode" not in anno:
        return "missing bbox or bbox_mode", 0
    box = np.asarray(anno["bbox"], dtype=np.float64).reshape(-1)
    if box.size != 4:
        return f"malformed bbox: {anno['bbox']!r} does not have 4 numbers", 0
    if not np.isfinite(box).all():
        return f"non-finite bbox: {box.tolist()}", 0
    x0, y0, x1, y1 = BoxMode.convert(box.tolist(), anno["bbox_mode"], BoxMode.XYXY_ABS)
    if not (x1 > x0 and y1 > y0):
        return f"zero-area or negative bbox: {box.tolist()}", 0

    segm = anno.get("segmentation")
    if segm is None:
        return None, 0
    if isinstance(segm, list):
        kept, dropped = [], 0
        for poly in segm:
            coords = np.asarray(poly, dtype=np.float64).reshape(-1)
            if not np.isfinite(coords).all():
                return "non-finite polygon coordinates", 0
            if coords.size < 6 or coords.size % 2:
                dropped += 1
            else:
                kept.append(poly)
        anno["segmentation"] = kept
        if not kept:
            return "no polygon with at least 3 points", dropped
        return None, dropped
    if isinstance(segm, dict):
        if "counts" not in segm or "size" not in segm:
            return "malformed RLE: no 'counts' and 'size'", 0
        if image_hw is not None and tuple(segm["size"]) != tuple(image_hw):
            return f"RLE size mismatch: {list(segm['size'])} vs the image (h, w) {image_hw}", 0
        return None, 0
    if isinstance(segm, np.ndarray):
        if image_hw is not None and segm.shape[:2] != tuple(image_hw):
            return f"mask size mismatch: {segm.shape} vs the image (h, w) {image_hw}", 0
        return None, 0
    return f"unknown segmentation type: {type(segm).__name__}", 0


def _count(reason, message):
    ANNOTATION_STATS[reason] += 1
    if ANNOTATION_STATS[reason] <= _WARN_FIRST_N:
        logger.warning(f"Dropped {message}: {reason}")
    if sum(ANNOTATION_STATS.values()) % _SUMMARY_EVERY == 0:
        log_annotation_summary()


def sanitize_annotations(annos, *, file_name, image_hw=None, num_classes=None, mode="filter"):
    """Check a list of annotations of one image.

    Args:
        annos (list[dict]): Detectron2 annotations (modified in place: degenerate polygons go).
        file_name (str): the image, for messages.
        image_hw (tuple[int, int] or None): image (height, width), to check RLE/mask sizes.
        num_classes (int or None): category ids must be in [0, num_classes) (when given).
        mode (str): ``"filter"`` (drop with a counted warning) or ``"error"``.

    Returns:
        list[dict]: the valid annotations.

    Raises:
        BadAnnotationError: in ``"error"`` mode, naming the annotation id and ``file_name``.
    """
    if mode not in ("filter", "error"):
        raise ValueError(f"DATALOADER.BAD_ANNOTATIONS must be 'filter' or 'error', got {mode!r}")
    kept = []
    for anno in annos:
        reason, degenerate = _annotation_problem(anno, image_hw, num_classes)
        if degenerate and (mode == "error" or reason is None):
            msg = f"{degenerate} polygon(s) with fewer than 3 points in {_where(anno, file_name)}"
            if mode == "error":
                raise BadAnnotationError(f"Invalid {msg}")
            _count("polygon with fewer than 3 points", msg)
        if reason is None:
            kept.append(anno)
        elif mode == "error":
            raise BadAnnotationError(f"Invalid {_where(anno, file_name)}: {reason}")
        else:
            _count(reason.split(":")[0], f"{_where(anno, file_name)}: {reason}")
    return kept


def log_annotation_summary():
    """Log the counts of dropped annotations/images in this process."""
    if ANNOTATION_STATS:
        summary = ", ".join(f"{k}: {v}" for k, v in sorted(ANNOTATION_STATS.items()))
        logger.info(f"Bad annotations dropped so far: {summary}")


def filter_dataset_dicts(dataset_dicts, *, num_classes=None, mode="filter", drop_empty=True):
    """Check every annotation of a dataset; drop images left without non-crowd annotations.

    Args:
        dataset_dicts (list[dict]): Detectron2 dataset dicts (not modified).
        num_classes (int or None): see :func:`sanitize_annotations`.
        mode (str): ``"filter"`` or ``"error"``.
        drop_empty (bool): drop images with no valid non-crowd annotation (empty lists and
            all-crowd images included).

    Returns:
        list[dict]: copies with invalid annotations removed.
    """
    out = []
    for d in dataset_dicts:
        d = copy.copy(d)
        hw = (d["height"], d["width"]) if "height" in d and "width" in d else None
        annos = [dict(a) for a in d.get("annotations", [])]
        d["annotations"] = sanitize_annotations(
            annos, file_name=d.get("file_name"), image_hw=hw, num_classes=num_classes, mode=mode
        )
        if drop_empty and not any(a.get("iscrowd", 0) == 0 for a in d["annotations"]):
            ANNOTATION_STATS["images without valid non-crowd annotations"] += 1
            continue
        out.append(d)
    logger.info(f"filter_dataset_dicts: kept {len(out)} of {len(dataset_dicts)} images.")
    log_annotation_summary()
    return out


# ---------------------------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------------------------
def _decode_rle(segm, height, width):
    rle = segm
    if isinstance(segm["counts"], list):  # uncompressed RLE
        rle = mask_util.frPyObjects(segm, height, width)
    return mask_util.decode(rle).astype(bool)


def rle_to_polygons(segm, height, width, upsample=4):
    """Polygons of the outer contours of an RLE mask.

    Contours are traced on a ``upsample``-times enlarged crop of the mask so the polygons run
    within ``1 / (2 * upsample)`` pixel of the pixel edges (tracing pixel centres would lose
    half a pixel all around). Holes are filled.

    Args:
        segm (dict): COCO RLE (compressed or not).
        height, width (int): image size.

    Returns:
        list[list[float]]: flat [x0, y0, x1, y1, ...] polygons, each of at least 3 points.
    """
    mask = _decode_rle(segm, height, width)
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return []
    x0, y0 = xs.min(), ys.min()
    crop = mask[y0 : ys.max() + 1, x0 : xs.max() + 1].astype(np.uint8)
    big = np.kron(crop, np.ones((upsample, upsample), dtype=np.uint8))
    big = np.pad(big, 1)
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        pts = contour.reshape(-1, 2).astype(np.float64)
        if len(pts) < 3:
            continue
        pts = (pts - 1 + 0.5) / upsample + np.array([x0, y0])
        polygons.append(pts.reshape(-1).tolist())
    return polygons


def _masks_as_bool(gt_masks, image_hw):
    """(N, H, W) bool numpy array of PolygonMasks / BitMasks."""
    if isinstance(gt_masks, BitMasks):
        return gt_masks.tensor.numpy().astype(bool)
    out = np.zeros((len(gt_masks),) + tuple(image_hw), dtype=bool)
    for i, polys in enumerate(gt_masks.polygons):
        if polys:
            out[i] = polygons_to_bitmask(polys, *image_hw)
    return out


def _segmentation_as_bool(segm, image_hw):
    """A transformed annotation's segmentation (polygons, RLE or array) -> (H, W) bool."""
    if isinstance(segm, list):
        if not segm:
            return np.zeros(image_hw, dtype=bool)
        return polygons_to_bitmask([np.asarray(p) for p in segm], *image_hw)
    if isinstance(segm, dict):
        return _decode_rle(segm, *image_hw)
    return np.asarray(segm).astype(bool)


def instances_to_sem_seg(
    masks, classes, image_hw, *, num_classes, background="last", ignore_value=255, crowd_masks=()
):
    """Semantic target from instance masks.

    Larger instances are painted first, so where instances overlap the smaller one wins (equal
    areas: the later one). Crowd regions are ``ignore_value`` unless an instance covers them.

    Args:
        masks (np.ndarray): (N, H, W) bool instance masks.
        classes (np.ndarray): (N,) contiguous class ids in [0, num_classes).
        image_hw (tuple[int, int]): (H, W).
        num_classes (int or None): K; required for ``background="last"``.
        background (str): ``"last"``: background K, things keep their ids; ``"zero"``:
            background 0, things are id + 1.
        ignore_value (int): label of crowd pixels.
        crowd_masks (sequence[np.ndarray]): (H, W) bool masks of crowd regions.

    Returns:
        torch.Tensor: (H, W) int64.
    """
    if background == "last":
        if num_classes is None:
            raise ValueError("background='last' needs num_classes")
        bg, offset = num_classes, 0
    elif background == "zero":
        bg, offset = 0, 1
    else:
        raise ValueError(
            f"INPUT.INSTANCE_SEM_SEG.BACKGROUND must be 'last' or 'zero', got {background!r}"
        )
    sem = np.full(tuple(image_hw), bg, dtype=np.int64)
    for crowd in crowd_masks:
        sem[crowd] = ignore_value
    masks = np.asarray(masks, dtype=bool).reshape((-1,) + tuple(image_hw))
    areas = masks.reshape(len(masks), -1).sum(1)
    for i in np.argsort(-areas, kind="stable"):
        sem[masks[i]] = int(classes[i]) + offset
    return torch.from_numpy(sem)


# ---------------------------------------------------------------------------------------------
# Mappers
# ---------------------------------------------------------------------------------------------
def _thing_classes_count(dataset_names):
    for name in dataset_names:
        classes = MetadataCatalog.get(name).get("thing_classes")
        if classes:
            return len(classes)
    return None


@DATASET_MAPPER_REGISTRY.register()
class InstanceDatasetMapper:
    """Map a Detectron2 dataset dict to model input with robust reading and checked annotations.

    Returns a dict with ``image`` (C, H, W) uint8 tensor in ``image_format``, the input's
    ``height``/``width``/``file_name``/``image_id``, and in training ``instances`` (gt_boxes,
    gt_classes, gt_masks when masks are used) and optionally ``sem_seg`` (H, W) int64. Returns
    None for a bad image in training when ``skip_bad_images`` (Detectron2's ``MapDataset`` then
    draws another index).
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        augmentations,
        image_format: str,
        use_instance_mask: bool = True,
        instance_mask_format: str = "polygon",
        use_keypoint: bool = False,
        keypoint_hflip_indices=None,
        recompute_boxes: bool = False,
        polygon_from_rle: bool = True,
        num_classes=None,
        instance_sem_seg: bool = False,
        sem_seg_background: str = "last",
        ignore_value: int = 255,
        skip_bad_images: bool = False,
        bad_annotations: str = "filter",
        use_instances: bool = True,
        require_sem_seg_file: bool = False,
    ):
        """
        Args:
            is_train: training (annotations used) or inference (annotations dropped).
            augmentations (list[Augmentation or Transform]): applied in order.
            image_format: ``INPUT.FORMAT``.
            use_instance_mask: produce ``gt_masks``.
            instance_mask_format: ``"polygon"`` or ``"bitmask"``.
            use_keypoint, keypoint_hflip_indices: as Detectron2's ``DatasetMapper``.
            recompute_boxes: set boxes to the tight boxes of the (cropped) masks.
            polygon_from_rle: see the module docstring.
            num_classes: number of thing classes (id check; ``"last"`` background); None skips.
            instance_sem_seg: derive ``sem_seg`` from the instance masks.
            sem_seg_background: ``"last"`` or ``"zero"`` (see :func:`instances_to_sem_seg`).
            ignore_value: ``sem_seg`` label of crowd regions and of padding.
            skip_bad_images: in training, return None (with a warning) for unreadable images.
            bad_annotations: ``"filter"`` or ``"error"``.
            use_instances: produce ``instances`` at all.
            require_sem_seg_file: training dicts must have ``sem_seg_file_name``.
        """
        if instance_mask_format not in ("polygon", "bitmask"):
            raise ValueError(
                f"INPUT.MASK_FORMAT must be polygon or bitmask, got {instance_mask_format!r}"
            )
        if bad_annotations not in ("filter", "error"):
            raise ValueError(
                f"DATALOADER.BAD_ANNOTATIONS must be filter or error, got {bad_annotations!r}"
            )
        if instance_sem_seg and not use_instance_mask:
            raise ValueError("INPUT.INSTANCE_SEM_SEG.ENABLED needs instance masks (MODEL.MASK_ON)")
        if instance_sem_seg and sem_seg_background == "last" and num_classes is None:
            raise ValueError(
                "INPUT.INSTANCE_SEM_SEG.BACKGROUND='last' needs the number of classes: register "
                "thing_classes in the training dataset's metadata or use 'zero'"
            )
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.use_instance_mask = use_instance_mask
        self.instance_mask_format = instance_mask_format
        self.use_keypoint = use_keypoint
        self.keypoint_hflip_indices = keypoint_hflip_indices
        self.recompute_boxes = recompute_boxes and use_instance_mask
        self.polygon_from_rle = polygon_from_rle
        self.num_classes = num_classes
        self.instance_sem_seg = instance_sem_seg
        self.sem_seg_background = sem_seg_background
        self.ignore_value = ignore_value
        self.skip_bad_images = skip_bad_images
        self.bad_annotations = bad_annotations
        self.use_instances = use_instances
        self.require_sem_seg_file = require_sem_seg_file
        mode = "training" if is_train else "inference"
        logger.info(f"[{type(self).__name__}] augmentations in {mode}: {augmentations}")

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        augs = build_augmentations(cfg, is_train)
        names = cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST
        ret = {
            "is_train": is_train,
            "augmentations": augs,
            "image_format": cfg.INPUT.FORMAT,
            "use_instance_mask": cfg.MODEL.MASK_ON,
            "instance_mask_format": cfg.INPUT.MASK_FORMAT,
            "use_keypoint": cfg.MODEL.KEYPOINT_ON,
            "recompute_boxes": is_train and has_crop(augs),
            "polygon_from_rle": cfg.INPUT.POLYGON_FROM_RLE,
            "num_classes": _thing_classes_count(names),
            "instance_sem_seg": cfg.INPUT.INSTANCE_SEM_SEG.ENABLED and is_train,
            "sem_seg_background": cfg.INPUT.INSTANCE_SEM_SEG.BACKGROUND,
            "ignore_value": cfg.INPUT.INSTANCE_SEM_SEG.IGNORE_VALUE,
            "skip_bad_images": cfg.DATALOADER.SKIP_BAD_IMAGES,
            "bad_annotations": cfg.DATALOADER.BAD_ANNOTATIONS,
        }
        if cfg.MODEL.KEYPOINT_ON and is_train:
            ret["keypoint_hflip_indices"] = d2_utils.create_keypoint_hflip_indices(names)
        return ret

    # -- reading -----------------------------------------------------------------------------
    def _read(self, dataset_dict):
        """Image (H, W, C) and optional label map (H, W), or raise BadImageError."""
        image = read_image_for_dict(dataset_dict, self.image_format)
        sem_seg = None
        if self.is_train and "sem_seg_file_name" in dataset_dict:
            sem_seg = read_label_map(dataset_dict["sem_seg_file_name"], image.shape[:2])
        elif self.is_train and self.require_sem_seg_file:
            raise BadImageError(
                f"Dataset dict of {dataset_dict['file_name']} has no sem_seg_file_name"
            )
        return image, sem_seg

    # -- annotations -------------------------------------------------------------------------
    def _prepare_annotations(self, annos, file_name, image_hw):
        for anno in annos:
            if not self.use_instance_mask:
                anno.pop("segmentation", None)
            if not self.use_keypoint:
                anno.pop("keypoints", None)
        annos = sanitize_annotations(
            annos,
            file_name=file_name,
            image_hw=image_hw,
            num_classes=self.num_classes,
            mode=self.bad_annotations,
        )
        for anno in annos:  # Detectron2 v0.6 cannot transform array masks: store them as RLE
            if isinstance(anno.get("segmentation"), np.ndarray):
                mask = np.asfortranarray(anno["segmentation"].astype(np.uint8))
                anno["segmentation"] = mask_util.encode(mask)
        if self.use_instance_mask and self.instance_mask_format == "polygon":
            annos = [self._rle_as_polygons(a, file_name, image_hw) for a in annos]
            annos = [a for a in annos if a is not None]
        return annos

    def _rle_as_polygons(self, anno, file_name, image_hw):
        global _rle_warning_done
        segm = anno.get("segmentation")
        if not isinstance(segm, dict):
            return anno
        if not self.polygon_from_rle:
            raise BadAnnotationError(
                f"{_where(anno, file_name)} has an RLE/bitmask mask but INPUT.MASK_FORMAT is "
                "'polygon': set INPUT.MASK_FORMAT bitmask (or INPUT.POLYGON_FROM_RLE True)"
            )
        if not _rle_warning_done:
            _rle_warning_done = True
            logger.warning(
                "RLE segmentations found while INPUT.MASK_FORMAT is 'polygon' (first: "
                f"{_where(anno, file_name)}); converting them to contour polygons (holes filled). "
                "Set INPUT.MASK_FORMAT bitmask to keep them exact."
            )
        polygons = rle_to_polygons(segm, *image_hw)
        if not polygons:
            if anno.get("iscrowd", 0) == 0:
                _count("empty mask", f"{_where(anno, file_name)}: empty mask")
            return None
        anno["segmentation"] = polygons
        return anno

    def _instances(self, annos, transforms, image_hw):
        annos = [
            d2_utils.transform_instance_annotations(
                a, transforms, image_hw, keypoint_hflip_indices=self.keypoint_hflip_indices
            )
            for a in annos
        ]
        for a in annos:  # PIL-resized masks are read-only views; torch warns on those
            if (
                isinstance(a.get("segmentation"), np.ndarray)
                and not a["segmentation"].flags.writeable
            ):
                a["segmentation"] = a["segmentation"].copy()
        instances = d2_utils.annotations_to_instances(
            annos, image_hw, mask_format=self.instance_mask_format
        )
        if self.use_instance_mask and not instances.has("gt_masks"):
            if self.instance_mask_format == "polygon":
                instances.gt_masks = PolygonMasks([])
            else:
                instances.gt_masks = BitMasks(torch.zeros((0,) + tuple(image_hw), dtype=torch.bool))
        if self.recompute_boxes and len(instances):
            instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        return d2_utils.filter_empty_instances(instances)

    # -- main --------------------------------------------------------------------------------
    def __call__(self, dataset_dict):
        """
        Args:
            dataset_dict (dict): one image in Detectron2's dataset format.

        Returns:
            dict or None: model input (see the class docstring); None for a skipped bad image.
        """
        dataset_dict = copy.deepcopy(dataset_dict)
        try:
            image, sem_seg = self._read(dataset_dict)
        except BadImageError as e:
            if self.is_train and self.skip_bad_images:
                ANNOTATION_STATS["skipped bad images"] += 1
                logger.warning(f"Skipping bad image (DATALOADER.SKIP_BAD_IMAGES): {e}")
                return None
            raise
        file_name = dataset_dict["file_name"]
        orig_hw = image.shape[:2]

        annos = dataset_dict.pop("annotations", None)
        if not self.is_train or not self.use_instances:
            annos = None
        if annos is not None:
            annos = self._prepare_annotations(annos, file_name, orig_hw)
        things = [a for a in annos or [] if a.get("iscrowd", 0) == 0]
        crowd = [a for a in annos or [] if a.get("iscrowd", 0) != 0]
        boxes = np.array(
            [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in things],
            dtype=np.float64,
        ).reshape(-1, 4)

        aug_input = T.AugInput(image, boxes=boxes, sem_seg=sem_seg)
        transforms = self.augmentations(aug_input)
        image, sem_seg = aug_input.image, aug_input.sem_seg
        image_hw = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        dataset_dict.pop("sem_seg_file_name", None)
        if not self.is_train:
            return dataset_dict

        valid = None
        if sem_seg is not None or self.instance_sem_seg:
            valid = transforms.apply_segmentation(np.ones(orig_hw, dtype=np.uint8)).astype(bool)
        if sem_seg is not None:
            sem_seg = sem_seg.astype(np.int64)
            sem_seg[~valid] = self.ignore_value
            dataset_dict["sem_seg"] = torch.as_tensor(sem_seg)
        if annos is None:
            return dataset_dict

        keep = centre_keep_mask(transforms, boxes, image_hw)
        things = [a for a, k in zip(things, keep) if k]
        instances = self._instances(things, transforms, image_hw)
        dataset_dict["instances"] = instances
        if len(instances) == 0:
            ANNOTATION_STATS["training images without instances"] += 1
        if self.instance_sem_seg:
            crowd = [
                d2_utils.transform_instance_annotations(a, transforms, image_hw) for a in crowd
            ]
            crowd_masks = [
                _segmentation_as_bool(a["segmentation"], image_hw)
                for a in crowd
                if "segmentation" in a
            ]
            sem = instances_to_sem_seg(
                _masks_as_bool(instances.gt_masks, image_hw),
                instances.gt_classes.numpy(),
                image_hw,
                num_classes=self.num_classes,
                background=self.sem_seg_background,
                ignore_value=self.ignore_value,
                crowd_masks=crowd_masks,
            )
            sem[torch.from_numpy(~valid)] = self.ignore_value
            dataset_dict["sem_seg"] = sem
        return dataset_dict


@DATASET_MAPPER_REGISTRY.register()
class SemanticDatasetMapper(InstanceDatasetMapper):
    """Semantic segmentation: image plus ``sem_seg`` (H, W) int64 read from ``sem_seg_file_name``.

    Label maps keep their stored values (palette indices included); padding added by the
    augmentations is ``MODEL.SEM_SEG_HEAD.IGNORE_VALUE``. Instance annotations are ignored.
    """

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        ret.update(
            use_instance_mask=False,
            use_keypoint=False,
            keypoint_hflip_indices=None,
            recompute_boxes=False,
            instance_sem_seg=False,
            use_instances=False,
            require_sem_seg_file=True,
            ignore_value=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
        )
        return ret
