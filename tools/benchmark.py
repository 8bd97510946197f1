#!/usr/bin/env python
"""Benchmark the methods: parameters, FLOPs, latency, training step time and memory.

python tools/benchmark.py                               # every method's benchmark configs
python tools/benchmark.py --configs configs/PointRend/pointrend_rcnn_R_50_FPN_3x_coco.yaml \\
    --weights PointRend/pointrend_rcnn_R_50_FPN_3x_coco=model.pth --size 800x1333 --runs 20
python tools/benchmark.py --random-images --flop-images 2 --runs 3 --skip train   # quick look
python tools/benchmark.py --toy-accuracy        # + box/mask/boundary AP of each method on toy data
python tools/benchmark.py --toy-accuracy-only   # only train + evaluate every method's toy configs
python tools/benchmark.py --toy-accuracy-only --toy-opts SOLVER.MAX_ITER 5   # check the plumbing

Writes benchmark.{md,json,png} to --output-dir (the JSON after every config and toy run, so an
interrupted run keeps its rows) and prints the table; progress goes to stderr. See
projects/benchmark/driver.py for what is measured and how.

The default rows are every registered method's benchmark configs (projects.methods: each
method's Method.benchmark_configs), Detectron2's Mask R-CNN yardstick first. A config named with
--configs that a method declares is benchmarked as that method's row.

Toy accuracy: each row's toy config (the one its method declares for it, BenchmarkConfig.toy) is
trained from scratch on the bundled toy data by the launcher (python -m projects.engine.main,
what train_net.py runs), in <output-dir>/toy/<name>/ (its log streamed here and kept there as
train_net.log), about 5 min per toy config on 2 CPU cores. Every method's toy configs are
trained (those no benchmarked config maps to get rows of their own); a finished run of the same
config is reused unless --toy-retrain.
"""

import argparse
import logging
import os
import sys

from projects.benchmark import (
    PHASES,
    BenchmarkSettings,
    ToySettings,
    config_label,
    default_config_specs,
    markdown_report,
    parse_size,
    run_benchmark,
    spec_for_config,
)
from projects.benchmark.specs import same_config_file


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--configs",
        nargs="+",
        default=None,
        help="config files (or zoo:<Detectron2 model-zoo path>, or paths under the project's "
        "configs/); default: every registered method's benchmark configs",
    )
    p.add_argument(
        "--yardstick",
        default=None,
        help="config every latency is compared with (measured first); 'none' for no yardstick "
        "(default: the registered yardstick, Detectron2's Mask R-CNN R50-FPN 3x)",
    )
    p.add_argument(
        "--weights",
        action="append",
        default=[],
        metavar="CFG=PATH",
        help="weights for a config (CFG: its path, file name or table label); repeatable; "
        "configs without weights are benchmarked with random weights",
    )
    p.add_argument(
        "--size",
        type=parse_size,
        default=None,
        help="input HxW for every config "
        "(default: each config's MIN_SIZE_TEST x MAX_SIZE_TEST, 800x1333 for COCO)",
    )
    p.add_argument(
        "--train-size", type=parse_size, default=None, help="training HxW (default: --size)"
    )
    p.add_argument(
        "--random-images", action="store_true", help="random images instead of --dataset"
    )
    p.add_argument(
        "--dataset", default="toy_val", help="registered dataset for FLOP/latency images"
    )
    p.add_argument("--flop-images", type=int, default=5, help="images FLOPs are averaged over")
    p.add_argument("--warmup", type=int, default=2, help="untimed inference runs")
    p.add_argument("--runs", type=int, default=10, help="timed inference runs")
    p.add_argument("--train-warmup", type=int, default=1, help="untimed training steps")
    p.add_argument("--train-runs", type=int, default=3, help="timed training steps")
    p.add_argument("--train-batch", type=int, default=2, help="synthetic images per training step")
    p.add_argument(
        "--detections",
        type=int,
        default=100,
        help="TEST.DETECTIONS_PER_IMAGE (score "
        "thresholds set to 0 so that every model yields this many)",
    )
    p.add_argument("--device", default=None, help="cpu / cuda (default: cuda when available)")
    p.add_argument(
        "--mask-head-flops",
        action="store_true",
        help="require the per-box mask-head FLOPs (always measured where a registered "
        "method's head_flops counts the model's mask head)",
    )
    p.add_argument("--skip", nargs="*", default=[], choices=PHASES, help="phases to skip")
    p.add_argument("--matmul-size", type=int, default=2048, help="n of the n x n matmul ceiling")
    p.add_argument(
        "--toy-accuracy",
        action="store_true",
        help="also train and evaluate each method's toy config on the bundled toy data "
        "(box / mask / boundary AP, mIoU for semantic; ~5 min per toy config on 2 CPU cores)",
    )
    p.add_argument(
        "--toy-accuracy-only",
        action="store_true",
        help="only the toy accuracy: no config is built or measured",
    )
    p.add_argument(
        "--toy-retrain",
        action="store_true",
        help="train the toy configs again even where <output-dir>/toy/<name>/ holds a finished "
        "run of the same config (default: reuse it)",
    )
    p.add_argument(
        "--toy-opts",
        nargs="+",
        default=[],
        metavar="KEY VALUE",
        help="overrides for every toy run (e.g. SOLVER.MAX_ITER 5 for a quick check; this "
        "changes the shared budget, so the numbers are not the toy accuracy)",
    )
    p.add_argument("--output-dir", default="output/benchmark", help="where benchmark.* go")
    p.add_argument(
        "--opts",
        nargs=argparse.REMAINDER,
        default=[],
        help="KEY VALUE overrides for every benchmarked config (the toy runs take --toy-opts)",
    )
    return p


def _matches(spec, name):
    return name in (spec.path, spec.label) or same_config_file(spec.path, name)


def _specs(args):
    declared = default_config_specs()
    if args.configs:
        specs = [spec_for_config(name, declared) for name in args.configs]
    else:
        specs = [spec for spec in declared]
    yardstick = args.yardstick
    if yardstick is None:
        yardstick = next((s.path for s in declared if s.yardstick), "none")
    for spec in specs:
        spec.yardstick = False
    if yardstick.lower() != "none":
        matches = [s for s in specs if _matches(s, yardstick)]
        if matches:
            specs.remove(matches[0])
        else:
            matches = [spec_for_config(yardstick, declared)]
        matches[0].yardstick = True
        specs.insert(0, matches[0])
    for item in args.weights:
        key, sep, path = item.partition("=")
        if not sep or not path:
            raise SystemExit(f"--weights {item!r}: expected CFG=PATH")
        if not os.path.isfile(path):
            raise SystemExit(f"--weights {item!r}: file {path!r} does not exist")
        found = [
            s
            for s in specs
            if key in (s.path, s.label, os.path.basename(s.path), config_label(s.path))
            or same_config_file(s.path, key)
        ]
        if not found:
            raise SystemExit(
                f"--weights {item!r}: {key!r} names none of the configs {[s.label for s in specs]}"
            )
        for spec in found:
            spec.weights = path
    return specs


def main(argv=None):
    args = build_parser().parse_args(argv)
    for name in ("flop_images", "runs", "train_runs", "train_batch", "detections"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1")
    toy_accuracy = args.toy_accuracy or args.toy_accuracy_only
    if (args.toy_retrain or args.toy_opts) and not toy_accuracy:
        raise SystemExit("--toy-retrain / --toy-opts need --toy-accuracy or --toy-accuracy-only")
    if len(args.toy_opts) % 2:
        raise SystemExit(f"--toy-opts {' '.join(args.toy_opts)}: expected KEY VALUE pairs")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    settings = BenchmarkSettings(
        size=args.size,
        dataset=None if args.random_images else args.dataset,
        flop_images=args.flop_images,
        warmup=args.warmup,
        runs=args.runs,
        train_warmup=args.train_warmup,
        train_runs=args.train_runs,
        train_batch=args.train_batch,
        train_size=args.train_size,
        detections=args.detections,
        mask_head_flops=True if args.mask_head_flops else None,
        skip=tuple(args.skip),
        opts=tuple(args.opts),
        matmul_size=args.matmul_size,
        measure=not args.toy_accuracy_only,
        toy=(
            ToySettings(opts=tuple(args.toy_opts), retrain=args.toy_retrain)
            if toy_accuracy
            else None
        ),
    )
    if args.device:
        settings.device = args.device

    def progress(text):
        print(f"[benchmark] {text}", file=sys.stderr, flush=True)

    try:
        document = run_benchmark(_specs(args), settings, args.output_dir, progress)
    except KeyboardInterrupt:
        progress(f"interrupted: measured rows kept in {args.output_dir}/benchmark.json")
        return 130
    print(markdown_report(document))
    progress(f"wrote {args.output_dir}/benchmark.{{md,json,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
