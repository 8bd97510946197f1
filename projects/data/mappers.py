"""Dataset mappers every method can use.

* :class:`InstanceDatasetMapper` (the default ``INPUT.DATASET_MAPPER_NAME``): robust image
  reading (:mod:`projects.data.image_io`), augmentations by ``INPUT.AUGMENTATIONS_NAME``,
  annotation checks (:mod:`projects.data.annotations`), ``Instances`` with ``gt_boxes``,
  ``gt_classes`` and ``gt_masks`` (``PolygonMasks`` or ``BitMasks`` by ``INPUT.MASK_FORMAT``),
  optionally a semantic target ``sem_seg`` derived from the instance masks
  (:mod:`projects.data.masks`).
* :class:`SemanticDatasetMapper`: image + ``sem_seg`` read from ``sem_seg_file_name``.

RLE segmentations with ``INPUT.MASK_FORMAT == "polygon"`` (Detectron2 v0.6 crashes deep inside
``PolygonMasks``) are converted to polygons from the mask's outer contours, traced on a 4x
upsampled mask so the polygon follows pixel edges; holes are filled, since polygon masks cannot
represent them. A warning is logged once. ``INPUT.POLYGON_FROM_RLE = False`` raises instead,
naming the annotation and telling to set ``INPUT.MASK_FORMAT bitmask``.

Images left with no (non-crowd) annotation give empty ``Instances`` in the mapper (as in
Detectron2) and are dropped by :func:`projects.data.annotations.filter_dataset_dicts`.

Polygons reaching beyond the image grown by its own size on every side are clipped to that box
before anything rasterizes them: pycocotools' rasterizer takes seconds on coordinates of 1e7 and
crashes the process (integer overflow) from about 1e9. Other polygons are unchanged; the masks of
clipped ones may differ by a pixel along the clipped edges (pycocotools rounds vertices to 1/5
pixel).

16-bit label maps are resized as 8-bit ones are (Detectron2 resizes other dtypes with torch, which
has no nearest resize of integers). In training, a label map (``sem_seg_file_name``) left without
a single labelled pixel after the augmentations has nothing to teach and its cross-entropy is NaN:
the mapper returns None, counted and logged (Detectron2's ``MapDataset`` and the project's loader
then draw another image).
"""

import copy
import logging

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as d2_utils
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, BoxMode, PolygonMasks

from .annotations import (
    ANNOTATION_STATS,
    BadAnnotationError,
    _count,
    _where,
    filter_dataset_dicts,
    log_annotation_summary,
    sanitize_annotations,
    sanitize_label_map,
)
from .augmentations import (
    AUGMENTATION_REGISTRY,
    build_augmentations,
    centre_keep_mask,
    clip_polygon,
    has_crop,
)
from .image_io import BadImageError, read_image_for_dict, read_label_map
from .mapper_registry import DATASET_MAPPER_REGISTRY
from .masks import _masks_as_bool, _segmentation_as_bool, instances_to_sem_seg, rle_to_polygons

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

_rle_warning_done = False


# ---------------------------------------------------------------------------------------------
# Mappers
# ---------------------------------------------------------------------------------------------
def _clip_polygons(polygons, height, width):
    """Clip the flat polygons reaching beyond [-width, 2 * width] x [-height, 2 * height] to it
    (the others are returned as they are); drop those left empty."""
    low, high = np.array([-width, -height]), np.array([2 * width, 2 * height])
    kept = []
    for poly in polygons:
        xy = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        if (xy >= low).all() and (xy <= high).all():
            kept.append(poly)
            continue
        clipped = clip_polygon(xy - low, 3 * width, 3 * height)
        if len(clipped) >= 3:
            kept.append((clipped + low).reshape(-1).tolist())
    return kept


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
    None in training for a bad image when ``skip_bad_images`` and for a label map without a
    labelled pixel (Detectron2's ``MapDataset`` then draws another index).
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
        sem_seg_num_classes=None,
        crowd_boxes: bool = False,
        min_box_side: float = 0.0,
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
            sem_seg_num_classes: number of classes of label maps read from
                ``sem_seg_file_name``; other values than the classes and ``ignore_value`` are
                bad annotations (``bad_annotations``). None skips the check.
            crowd_boxes: in training, also return ``crowd_boxes``: the crowd annotations'
                boxes after the augmentations, ``(C, 4)`` float32 XYXY (those an SSD crop drops
                by their centre, or that leave the image, are dropped).
            min_box_side: in training, drop instances (and crowd boxes) whose box is narrower
                than this fraction of the image width or lower than this fraction of its height.
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
        self.sem_seg_num_classes = sem_seg_num_classes
        self.crowd_boxes = crowd_boxes
        if not 0.0 <= float(min_box_side) < 1.0:
            raise ValueError(f"INPUT.MIN_BOX_SIDE must be in [0, 1), got {min_box_side!r}")
        self.min_box_side = float(min_box_side)
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
            "crowd_boxes": cfg.INPUT.CROWD_BOXES and is_train,
            "min_box_side": cfg.INPUT.MIN_BOX_SIDE,
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
            if self.sem_seg_num_classes is not None:
                sem_seg = sanitize_label_map(
                    sem_seg,
                    file_name=dataset_dict["file_name"],
                    label_file=dataset_dict["sem_seg_file_name"],
                    num_classes=self.sem_seg_num_classes,
                    ignore_value=self.ignore_value,
                    mode=self.bad_annotations,
                )
            if sem_seg.dtype != np.uint8:
                # Detectron2 resizes uint8 label maps with PIL and others with torch, which has no
                # nearest resize of integers: 16-bit maps become uint8 where their values fit,
                # else float32 (exact below 2**24).
                fits = sem_seg.size == 0 or (sem_seg.min() >= 0 and sem_seg.max() <= 255)
                sem_seg = sem_seg.astype(np.uint8 if fits else np.float32)
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
            need_mask=self.use_instance_mask,
        )
        height, width = (int(s) for s in image_hw)
        for anno in annos:
            segm = anno.get("segmentation")
            if isinstance(segm, np.ndarray):  # Detectron2 v0.6 cannot transform array masks
                anno["segmentation"] = mask_util.encode(np.asfortranarray(segm.astype(np.uint8)))
            elif isinstance(segm, dict):  # Detectron2 decodes compressed RLE only
                segm = {"size": [height, width], "counts": segm["counts"]}
                if isinstance(segm["counts"], list):
                    segm = mask_util.frPyObjects(segm, height, width)
                anno["segmentation"] = segm
            elif isinstance(segm, list):  # see the module docstring
                anno["segmentation"] = _clip_polygons(segm, height, width)
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

    def _large_enough(self, boxes, image_hw):
        """Which XYXY boxes ``(n, 4)`` reach ``min_box_side`` of the image in both sides."""
        side = self.min_box_side
        return ((boxes[:, 2] - boxes[:, 0]) >= side * image_hw[1]) & (
            (boxes[:, 3] - boxes[:, 1]) >= side * image_hw[0]
        )

    def _crowd_boxes(self, crowd, transforms, image_hw):
        """The crowd annotations' boxes after ``transforms``, ``(C, 4)`` float32 XYXY."""
        boxes = np.array(
            [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in crowd],
            dtype=np.float64,
        ).reshape(-1, 4)
        keep = np.asarray(centre_keep_mask(transforms, boxes, image_hw), dtype=bool).reshape(-1)
        moved = transforms.apply_box(boxes[keep]).reshape(-1, 4) if keep.any() else boxes[:0]
        moved[:, 0::2] = moved[:, 0::2].clip(0, image_hw[1])
        moved[:, 1::2] = moved[:, 1::2].clip(0, image_hw[0])
        out = torch.as_tensor(moved, dtype=torch.float32).reshape(-1, 4)
        nonempty = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
        if self.min_box_side > 0:
            nonempty &= self._large_enough(out, image_hw)
        return out[nonempty]

    # -- main --------------------------------------------------------------------------------
    def __call__(self, dataset_dict):
        """
        Args:
            dataset_dict (dict): one image in Detectron2's dataset format.

        Returns:
            dict or None: model input (see the class docstring); None for a skipped image.
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
        label_file = dataset_dict.pop("sem_seg_file_name", None)
        if not self.is_train:
            return dataset_dict

        valid = None
        if sem_seg is not None or self.instance_sem_seg:
            valid = transforms.apply_segmentation(np.ones(orig_hw, dtype=np.uint8)).astype(bool)
        if sem_seg is not None:
            sem_seg = sem_seg.astype(np.int64)
            sem_seg[~valid] = self.ignore_value
            if (sem_seg == self.ignore_value).all():
                ANNOTATION_STATS["training images without labelled pixels"] += 1
                logger.warning(
                    f"Skipping {file_name}: no labelled pixel in its label map {label_file} "
                    "(after the augmentations)"
                )
                return None
            dataset_dict["sem_seg"] = torch.as_tensor(sem_seg)
        if annos is None:
            return dataset_dict

        keep = centre_keep_mask(transforms, boxes, image_hw)
        things = [a for a, k in zip(things, keep) if k]
        instances = self._instances(things, transforms, image_hw)
        if self.min_box_side > 0 and len(instances):
            instances = instances[self._large_enough(instances.gt_boxes.tensor, image_hw)]
        dataset_dict["instances"] = instances
        if self.crowd_boxes:
            dataset_dict["crowd_boxes"] = self._crowd_boxes(crowd, transforms, image_hw)
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

    Augmentations: ``INPUT.AUGMENTATIONS_NAME`` ``"default"`` means Detectron2's semantic recipe
    here (``"semantic"`` in :func:`~projects.data.augmentations.build_augmentations`: resize, then
    the category-area-constrained crop of ``INPUT.CROP``, ``INPUT.COLOR_AUG_SSD``, flip), as
    Detectron2's PointRend and DeepLab projects build for semantic datasets.

    Label maps keep their stored values (palette indices included); padding added by the
    augmentations is ``MODEL.SEM_SEG_HEAD.IGNORE_VALUE``. Values that are neither a class of
    ``MODEL.SEM_SEG_HEAD.NUM_CLASSES`` nor the ignore value are bad annotations (ignored or an
    error, by ``DATALOADER.BAD_ANNOTATIONS``). Instance annotations are ignored.
    """

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        if cfg.INPUT.AUGMENTATIONS_NAME == "default":
            # Detectron2's semantic recipes crop after the resize (build_sem_seg_train_aug).
            ret["augmentations"] = AUGMENTATION_REGISTRY.get("semantic")(cfg, is_train)
        ret.update(
            use_instance_mask=False,
            use_keypoint=False,
            keypoint_hflip_indices=None,
            recompute_boxes=False,
            instance_sem_seg=False,
            use_instances=False,
            require_sem_seg_file=True,
            ignore_value=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            sem_seg_num_classes=cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
        )
        return ret
