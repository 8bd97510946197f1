#!/usr/bin/env python
"""Run any method of this project on images or a video and draw its predictions.

    python demo.py --config-file configs/toy/mask_rcnn.yaml --input img.jpg dir/ "imgs/*.png" \
        --output out/ --opts MODEL.WEIGHTS model_final.pth

Flags follow Detectron2's demo: ``--config-file``, ``--input`` (files, directories, globs),
``--output`` (a directory, or a file name for a single input), ``--confidence-threshold``,
``--video-input``, ``--opts``; plus ``--json`` (predictions as a COCO-format file) and
``--max-inputs``.
"""

import argparse
import logging
import sys

from detectron2.utils.logger import setup_logger

from projects.demo import (
    Predictor,
    expand_inputs,
    metadata_for,
    run_on_images,
    run_on_video,
    set_confidence_threshold,
)
from projects.engine.checkpoint import CheckpointError
from projects.engine.setup import load_config


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to config file")
    parser.add_argument("--input", nargs="+", help="image files, directories or glob patterns")
    parser.add_argument("--video-input", help="a video file")
    parser.add_argument("--output", help="output directory, or output file for a single input")
    parser.add_argument("--json", help="also write the predictions to this COCO-format JSON file")
    parser.add_argument(
        "--confidence-threshold",
        type=float,
        default=0.5,
        help="minimum score of the instances drawn (any method)",
    )
    parser.add_argument(
        "--max-inputs", type=int, default=0, help="only the first N inputs (0: all)"
    )
    parser.add_argument(
        "--opts", default=[], nargs=argparse.REMAINDER, help="config overrides as KEY VALUE pairs"
    )
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logger(name="fvcore")
    logger = setup_logger()
    if not args.input and not args.video_input:
        logger.error("give --input and/or --video-input")
        return 2
    try:
        cfg = load_config(args.config_file, args.opts)
        cfg = set_confidence_threshold(cfg, args.confidence_threshold)
        files = expand_inputs(args.input) if args.input else []
        if args.max_inputs > 0:
            files = files[: args.max_inputs]
        predictor = Predictor(cfg, args.confidence_threshold)
    except (FileNotFoundError, KeyError, ValueError, CheckpointError) as e:
        logger.error("%s", e)
        return 2
    metadata = metadata_for(cfg)
    if files:
        drawn, skipped = run_on_images(predictor, files, args.output, metadata, args.json)
        logger.info("drew %d image(s)%s", drawn, f" into {args.output}" if args.output else "")
        if skipped:
            logger.warning("skipped %d unreadable file(s): %s", len(skipped), ", ".join(skipped))
    if args.video_input:
        try:
            frames = run_on_video(predictor, args.video_input, args.output, metadata)
        except (FileNotFoundError, ValueError) as e:
            logger.error("%s", e)
            return 2
        logger.info("processed %d frame(s) of %s", frames, args.video_input)
    return 0


if __name__ == "__main__":
    logging.captureWarnings(True)
    sys.exit(main())
