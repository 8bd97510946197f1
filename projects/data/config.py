"""Config keys of the data layer (mappers, augmentations, dataset registration)."""

from ..config import add_missing_keys


def add_data_config(cfg):
    """Add the data keys to ``cfg`` in place where they are missing.

    Only new names under INPUT.* and DATALOADER.*; a key that exists is kept (see
    :func:`projects.config.add_missing_keys`).

    Mapper:

    * ``INPUT.DATASET_MAPPER_NAME``: name in ``DATASET_MAPPER_REGISTRY`` of the mapper used by the
      trainer for training and testing (default ``"InstanceDatasetMapper"``).
    * ``INPUT.POLYGON_FROM_RLE``: with ``INPUT.MASK_FORMAT == "polygon"``, convert RLE
      segmentations to polygons (outer contours; holes are filled) with a one-time warning
      (True), or raise an error naming the annotation and saying to use ``bitmask`` (False).
    * ``INPUT.INSTANCE_SEM_SEG.ENABLED``: also return ``sem_seg``, an (H, W) long tensor of class
      ids derived from the ground-truth instance masks (never from side files).
    * ``INPUT.INSTANCE_SEM_SEG.BACKGROUND``: ``"last"``: things keep ids 0..K-1, background is K
      (K = number of thing classes); ``"zero"``: background 0, things 1..K.
    * ``INPUT.INSTANCE_SEM_SEG.IGNORE_VALUE``: label of crowd regions and padding (255).
    * ``INPUT.CROWD_BOXES``: in training, also return ``crowd_boxes``, the crowd annotations'
      boxes after the augmentations, ``(C, 4)`` float32 XYXY (YOLACT's matcher neutralises the
      anchors they cover).
    * ``INPUT.MIN_BOX_SIDE``: in training, drop instances (and crowd boxes) whose box is
      narrower or lower than this fraction of the augmented image's side (0: keep all).

    Augmentations (see ``projects.data.augmentations.build_augmentations``):

    * ``INPUT.AUGMENTATIONS_NAME``: the recipe's name in
      :data:`projects.data.augmentation_registry.AUGMENTATION_REGISTRY`. Built in: ``"default"``
      (Detectron2's ResizeShortestEdge + flip), ``"lsj"`` (large-scale jitter), ``"ssd"``
      (YOLACT's SSD-style pipeline), ``"semantic"`` (Detectron2's semantic-segmentation recipe);
      a method package registers its own recipes when it is imported.
    * ``INPUT.LSJ.MIN_SCALE`` / ``MAX_SCALE``: range of the random scale of the target size.
    * ``INPUT.LSJ.IMAGE_SIZE``: target and crop size (square).
    * ``INPUT.LSJ.PAD_VALUE``: image padding value of the fixed-size crop.
    * ``INPUT.SSD.SIZE``: side of the square the images are resized to (YOLACT: 550).
    * ``INPUT.SSD.EXPAND_MAX_RATIO`` / ``EXPAND_PROB``: Expand's largest canvas ratio and its
      probability (the canvas is filled with ``MODEL.PIXEL_MEAN``).
    * ``INPUT.SSD.MIN_IOUS``: IoU options of the min-IoU random crop (plus "keep" and "any").
    * ``INPUT.SSD.MIN_CROP_SIZE``: smallest crop side as a fraction of the image side.
    * ``INPUT.SSD.KEEP_ASPECT``: resize the long side to ``INPUT.SSD.SIZE`` keeping the aspect
      ratio (batches are then padded) instead of squashing every image to a square.
    * ``INPUT.CROP.SINGLE_CATEGORY_MAX_AREA`` (1.0) and ``INPUT.COLOR_AUG_SSD`` (False), read by
      the ``"semantic"`` recipe (the names and defaults of Detectron2's PointRend and DeepLab
      projects, whose YAMLs set them; this is their only adder here).

    Bad input:

    * ``DATALOADER.SKIP_BAD_IMAGES``: in training, a missing, corrupt or wrongly sized image is
      skipped with a warning naming the file (the mapper returns None, and Detectron2's
      ``MapDataset`` draws another index); otherwise, and always at test time, it raises.
    * ``DATALOADER.BAD_ANNOTATIONS``: ``"filter"`` drops invalid annotations (bad or NaN boxes,
      polygons under 3 points, unknown category ids, RLEs that do not fit the image, no mask for a
      mask model, ...) and ignores label-map values that are not classes, with a logged, counted
      warning; ``"error"`` raises naming the annotation id (or label map) and file.
    """
    add_missing_keys(
        cfg,
        {
            "INPUT.DATASET_MAPPER_NAME": "InstanceDatasetMapper",
            "INPUT.POLYGON_FROM_RLE": True,
            "INPUT.INSTANCE_SEM_SEG.ENABLED": False,
            "INPUT.INSTANCE_SEM_SEG.BACKGROUND": "last",
            "INPUT.INSTANCE_SEM_SEG.IGNORE_VALUE": 255,
            "INPUT.AUGMENTATIONS_NAME": "default",
            "INPUT.LSJ.MIN_SCALE": 0.1,
            "INPUT.LSJ.MAX_SCALE": 2.0,
            "INPUT.LSJ.IMAGE_SIZE": 1024,
            "INPUT.LSJ.PAD_VALUE": 128.0,
            "INPUT.SSD.SIZE": 550,
            "INPUT.SSD.EXPAND_MAX_RATIO": 4.0,
            "INPUT.SSD.EXPAND_PROB": 0.5,
            "INPUT.SSD.MIN_IOUS": (0.1, 0.3, 0.7, 0.9),
            "INPUT.SSD.MIN_CROP_SIZE": 0.3,
            "INPUT.SSD.KEEP_ASPECT": False,
            "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA": 1.0,
            "INPUT.COLOR_AUG_SSD": False,
            "INPUT.CROWD_BOXES": False,
            "INPUT.MIN_BOX_SIDE": 0.0,
            "DATALOADER.SKIP_BAD_IMAGES": False,
            "DATALOADER.BAD_ANNOTATIONS": "filter",
        },
    )
