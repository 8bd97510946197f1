#!/usr/bin/env python
"""Train or evaluate any method of this repository; the config alone picks the method.

python train_net.py --config-file configs/toy/mask_rcnn.yaml
python train_net.py --config-file configs/toy/mask_rcnn.yaml --resume
python train_net.py --config-file configs/toy/mask_rcnn.yaml --eval-only MODEL.WEIGHTS model.pth
python train_net.py --config-file configs/toy/mask_rcnn.yaml --num-gpus 2   # CPU: 2 processes
"""

from detectron2.engine import default_argument_parser, default_setup

from projects.engine.checkpoint import load_weights_for_evaluation
from projects.engine.launch import launch
from projects.engine.setup import load_config
from projects.engine.trainer import Trainer


def setup(args):
    """The frozen config of ``args`` (every method's keys, then the file, then the options)."""
    cfg = load_config(args.config_file, args.opts)
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        load_weights_for_evaluation(cfg, model, resume=args.resume)
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def cli(argv=None):
    args = default_argument_parser().parse_args(argv)
    return launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    cli()
