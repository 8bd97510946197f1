"""One toy run of the learning checks, in its own process: ``train_net.py`` (training with its final
evaluation, or ``--eval-only``) with the test-only registrations the learning checks use, and the
results written as JSON for the process that waits on them (:mod:`tests.helpers.toy_jobs`)::

    python -m tests.helpers.toy_job_runner --results out/results.json [--memorise] -- \\
        --config-file configs/toy/mask_rcnn.yaml OUTPUT_DIR out ...

``--memorise SOURCE`` registers the memorisation dataset of training set ``SOURCE``
(:func:`tests.helpers.learning.memorisation_dataset`; the options name it as ``DATASETS.TRAIN``
and ``DATASETS.TEST``). The deliberately broken yardsticks
(:mod:`tests.helpers.broken`) are always registered.
"""

import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _plain(results):
    """Detectron2's (nested, ordered) results as plain dicts of floats."""
    if isinstance(results, dict):
        return {str(k): _plain(v) for k, v in results.items()}
    return float(results)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", required=True, help="JSON file the results are written to")
    parser.add_argument("--memorise", metavar="SOURCE", help="training set to memorise from")
    parser.add_argument("train_net_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    train_net_args = args.train_net_args
    if train_net_args[:1] == ["--"]:
        train_net_args = train_net_args[1:]

    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    from detectron2.engine import default_argument_parser

    import tests.helpers.broken  # noqa: F401  (registers the broken variants)
    from projects.engine.checkpoint import atomic_write
    from projects.engine.main import main as train_net_main
    from tests.helpers.learning import memorisation_dataset

    if args.memorise:
        memorisation_dataset(args.memorise)
    results = train_net_main(default_argument_parser().parse_args(train_net_args))
    text = json.dumps(_plain(results or {}), indent=1)
    atomic_write(args.results, lambda f: f.write(text.encode("utf-8")))


if __name__ == "__main__":
    main()
