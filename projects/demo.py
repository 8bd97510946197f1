"""What ``demo.py`` does: run any method's model on images or a video and draw its predictions.

Inputs may be files, directories (their images, sorted) and glob patterns. A file that cannot be
read as an image is named in a warning and skipped; a path that does not exist is an error. Images
are read as the mappers read them (:func:`projects.data.image_io.read_image_robust`: EXIF
orientation applied, 16-bit images scaled by their bit depth instead of clipped, palette and
alpha images converted) and resized as at test time.
"""

import glob
import json
import logging
import os

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.modeling import build_model
from detectron2.utils.visualizer import ColorMode, Visualizer

from .data.augmentations import build_augmentations
from .data.image_io import BadImageError, read_image_robust
from .engine.checkpoint import load_weights_for_evaluation
from .methods import score_threshold_keys

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def expand_inputs(inputs):
    """Turn files, directories and glob patterns into a sorted, de-duplicated list of files.

    Args:
        inputs (list[str]): paths, directories or glob patterns.

    Returns:
        list[str]: image files (a directory contributes the files with an image extension).

    Raises:
        FileNotFoundError: naming an input that is neither an existing path nor a matching glob.
    """
    files = []
    for item in inputs:
        if os.path.isdir(item):
            names = sorted(os.listdir(item))
            files += [os.path.join(item, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
        elif os.path.isfile(item):
            files.append(item)
        else:
            matches = sorted(p for p in glob.glob(os.path.expanduser(item)) if os.path.isfile(p))
            if not matches:
                raise FileNotFoundError(f"--input {item!r}: no such file, directory or glob match")
            files += matches
    seen = set()
    return [f for f in files if not (f in seen or seen.add(f))]


def set_confidence_threshold(cfg, threshold, keys=None):
    """Write ``threshold`` into every score-threshold key the config has (any method).

    Args:
        cfg (CfgNode): the config (frozen again on return).
        threshold (float): the score threshold.
        keys (list[str] or None): dotted keys; None: every registered method's
            (:func:`projects.methods.score_threshold_keys`).

    Returns:
        CfgNode: ``cfg``.

    The predictor also filters by score afterwards, so a method that declares no key still
    honours ``--confidence-threshold``.
    """
    keys = score_threshold_keys() if keys is None else keys
    cfg.defrost()
    for path in keys:
        *parents, leaf = path.split(".")
        node = cfg
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node:
            node[leaf] = threshold
    cfg.freeze()
    return cfg


class Predictor:
    """Single-image inference with the test-time augmentations of the config's recipe
    (``INPUT.AUGMENTATIONS_NAME``: Detectron2's shortest-edge resize, YOLACT's fixed square, ...).

    Args:
        cfg (CfgNode): a frozen config whose ``MODEL.WEIGHTS`` are loaded (weights that do not fit
            the model, or none at all, are an error: never silent random weights).
        confidence_threshold (float): instances scoring below it are dropped.
    """

    def __init__(self, cfg, confidence_threshold=0.5):
        self.cfg = cfg
        self.model = build_model(cfg).eval()
        load_weights_for_evaluation(cfg, self.model)
        self.resize = T.AugmentationList(build_augmentations(cfg, is_train=False))
        self.input_format = cfg.INPUT.FORMAT
        self.threshold = confidence_threshold

    @torch.no_grad()
    def __call__(self, image):
        """
        Args:
            image (np.ndarray): (H, W, 3) uint8 in the config's ``INPUT.FORMAT``.

        Returns:
            dict: the model's output for the image, instances filtered by score, on the CPU.
        """
        height, width = image.shape[:2]
        aug_input = T.AugInput(image)
        self.resize(aug_input)
        resized = aug_input.image
        tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
        output = self.model([{"image": tensor, "height": height, "width": width}])[0]
        if "instances" in output:
            instances = output["instances"].to("cpu")
            if instances.has("scores"):
                instances = instances[instances.scores >= self.threshold]
            output["instances"] = instances
        return output


def draw(image_rgb, output, metadata):
    """Draw instances (masks, boxes, class names) or a semantic map with Detectron2's Visualizer.

    Returns:
        np.ndarray: (H, W, 3) RGB drawing.
    """
    visualizer = Visualizer(image_rgb, metadata, instance_mode=ColorMode.IMAGE)
    if "instances" in output:
        vis = visualizer.draw_instance_predictions(output["instances"])
    elif "sem_seg" in output:
        vis = visualizer.draw_sem_seg(output["sem_seg"].argmax(dim=0).cpu())
    else:
        vis = visualizer.output
    return vis.get_image()


def output_path(output, input_file, num_inputs):
    """Where the drawing of ``input_file`` goes (``output`` itself for one named input file)."""
    if num_inputs == 1 and os.path.splitext(output)[1].lower() in IMAGE_EXTENSIONS:
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        return output
    os.makedirs(output, exist_ok=True)
    stem = os.path.splitext(os.path.basename(input_file))[0]
    return os.path.join(output, stem + ".png")


def coco_categories(metadata):
    names = metadata.get("thing_classes", [])
    to_dataset = {v: k for k, v in metadata.get("thing_dataset_id_to_contiguous_id", {}).items()}
    return [{"id": to_dataset.get(i, i), "name": n} for i, n in enumerate(names)], to_dataset


def run_on_images(predictor, files, output, metadata, json_file=None, progress=True):
    """Predict, draw and optionally collect COCO-format predictions for every file.

    Returns:
        tuple[int, list[str]]: number of images drawn, and the files skipped as unreadable.
    """
    from tqdm import tqdm

    categories, to_dataset = coco_categories(metadata)
    images, annotations, skipped = [], [], []
    for image_id, path in enumerate(tqdm(files, desc="demo", unit="img", disable=not progress)):
        try:
            image = read_image_robust(path, format=predictor.input_format)
        except BadImageError as e:
            logger.warning("skipping %s: not a readable image (%s: %s)", path, type(e).__name__, e)
            skipped.append(path)
            continue
        out = predictor(image)
        rgb = image[:, :, ::-1] if predictor.input_format == "BGR" else image
        drawing = draw(rgb, out, metadata)
        if output:
            import cv2

            cv2.imwrite(output_path(output, path, len(files)), drawing[:, :, ::-1])
        if json_file is not None and "instances" in out:
            images.append(
                {
                    "id": image_id,
                    "file_name": path,
                    "height": image.shape[0],
                    "width": image.shape[1],
                }
            )
            for ann in instances_to_coco_json(out["instances"], image_id):
                ann["category_id"] = to_dataset.get(ann["category_id"], ann["category_id"])
                annotations.append(ann)
    if json_file is not None:
        for i, ann in enumerate(annotations, start=1):
            ann["id"] = i
        os.makedirs(os.path.dirname(os.path.abspath(json_file)), exist_ok=True)
        with open(json_file, "w") as f:
            json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
        logger.info(
            "wrote %d predictions on %d images to %s", len(annotations), len(images), json_file
        )
    return len(files) - len(skipped), skipped


def run_on_video(predictor, video_file, output, metadata):
    """Predict and draw every frame of ``video_file``; write an .mp4 to ``output`` if given."""
    import cv2
    from tqdm import tqdm

    if not os.path.isfile(video_file):
        raise FileNotFoundError(f"--video-input {video_file!r} does not exist")
    video = cv2.VideoCapture(video_file)
    if not video.isOpened():
        raise ValueError(f"--video-input {video_file!r}: OpenCV cannot open it as a video")
    width, height = int(video.get(cv2.CAP_PROP_FRAME_WIDTH)), int(
        video.get(cv2.CAP_PROP_FRAME_HEIGHT)
    )
    fps = video.get(cv2.CAP_PROP_FPS) or 25.0
    frames = int(video.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    writer = None
    if output:
        path = (
            output
            if output.lower().endswith(".mp4")
            else os.path.join(output, os.path.splitext(os.path.basename(video_file))[0] + ".mp4")
        )
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    count = 0
    with tqdm(total=frames, desc="video", unit="frame") as bar:
        while True:
            ok, frame_bgr = video.read()
            if not ok:
                break
            frame = frame_bgr if predictor.input_format == "BGR" else frame_bgr[:, :, ::-1]
            drawing = draw(frame_bgr[:, :, ::-1], predictor(np.ascontiguousarray(frame)), metadata)
            if writer is not None:
                writer.write(np.ascontiguousarray(drawing[:, :, ::-1]))
            count += 1
            bar.update(1)
    video.release()
    if writer is not None:
        writer.release()
    return count


def metadata_for(cfg):
    """Metadata of the first test (else train) dataset: class names and colours to draw."""
    names = list(cfg.DATASETS.TEST) or list(cfg.DATASETS.TRAIN)
    return MetadataCatalog.get(names[0] if names else "__unused")
