"""The launcher: train or evaluate any method of this repository; the config alone picks it.

``train_net.py`` is a thin script over this module, and ``python -m projects.engine.main`` runs
the same without a checkout (the benchmark's toy runs start it that way)::

    python -m projects.engine.main --config-file configs/toy/mask_rcnn.yaml
    python -m projects.engine.main --config-file configs/toy/mask_rcnn.yaml --resume
    python -m projects.engine.main --config-file configs/toy/mask_rcnn.yaml --eval-only \\
        MODEL.WEIGHTS model.pth
    python -m projects.engine.main --config-file configs/toy/mask_rcnn.yaml --num-gpus 2

Flags are Detectron2's (``default_argument_parser``); without CUDA, ``--num-gpus N`` starts N CPU
processes over gloo (:func:`projects.engine.launch.launch`).
"""

from detectron2.engine import default_argument_parser, default_setup

from .checkpoint import load_weights_for_evaluation
from .launch import launch
from .setup import load_config
from .trainer import Trainer

__all__ = ["cli", "main", "setup"]


def setup(args):
    """The frozen config of ``args`` (every method's keys, then the file, then the options)."""
    cfg = load_config(args.config_file, args.opts)
    default_setup(cfg, args)
    return cfg


def main(args):
    """Train (``Trainer.train``'s results) or, with ``args.eval_only``, evaluate the weights of
    ``MODEL.WEIGHTS`` (or the last checkpoint with ``args.resume``) in this process."""
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        load_weights_for_evaluation(cfg, model, resume=args.resume)
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def cli(argv=None):
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run :func:`main` in every process."""
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
