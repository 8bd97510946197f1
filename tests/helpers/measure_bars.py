"""Measure what a toy config's bars in ``configs/toy/bars.yaml`` are set from: its toy training and
its memorisation run over seeds and toy-pretrained backbones, each run paired with the yardstick's
run of the same seed and backbone, in the pool of the learning checks (two runs side by side on 2
cores)::

    python -m tests.helpers.measure_bars pointrend.yaml blendmask.yaml --seeds 7 8 \\
        --backbones 7 8 --output /tmp/bars

For each config it prints, per run, box / mask / boundary AP (with APs / APm / APl), the loss
factors the learning checks read (each loss's end over its start), the memorisation mask AP and
the paired differences with the yardstick; then mean, SD and mean - 3 SD, the bar the learning
checks hold a config to. ``--no-memorise`` skips the memorisation runs; a config with no
``memorise`` entry in bars.yaml yet memorises for 100 iterations (or ``--memorise-iterations``).

Every machine makes its own toy-pretrained backbone, and one made on another CPU (or with another
thread count) differs from this machine's by more than rounding: the suite's runs on a CI machine
start from other weights. ``--backbones`` pretrains one backbone per seed given (once, under the
output folder; about 10 minutes each) and measures every seed on each, so that the spread the bars
are set from includes the backbone's; without it the runs start from this machine's backbone.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TASKS = ("bbox", "segm", "boundary")
LOSSES = ("total_loss", "loss_mask", "loss_cls", "loss_box_reg", "loss_fcos_cls", "loss_box")


def _stats(values):
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return f"{values[0]:.2f}" if values else "-"
    mean, sd = statistics.mean(values), statistics.stdev(values)
    return f"mean {mean:.2f}, SD {sd:.2f}, mean - 3 SD {mean - 3 * sd:.2f}"


def _ap(results, task, metric="AP"):
    return results.get(task, {}).get(metric)


def _loss_factors(metrics_file):
    from tests.helpers.learning import logged_loss

    factors = {}
    for key in LOSSES:
        try:
            factors[key] = logged_loss(metrics_file, False, key) / logged_loss(
                metrics_file, True, key
            )
        except (ZeroDivisionError, KeyError, ValueError, OSError):
            continue
    return factors


def make_backbone(seed, root):
    """A datasets root under ``root`` whose toy-pretrained backbone is pretrained with ``seed``
    (the recipe's other options unchanged; made once) beside a link to this machine's toy instance
    data, stamped as the recipe's so that the toy configs load it. Returns the datasets root.

    A backbone pretrained elsewhere (another CPU, another thread count) differs from this
    machine's as one pretrained with another seed does: the learning checks start from whichever
    backbone the machine they run on makes, so bars are measured over several.
    """
    from projects.data.toy.writer import default_root
    from projects.engine import toy_pretrained

    datasets = os.path.join(os.path.abspath(root), "datasets")
    os.makedirs(os.path.join(datasets, "toy_pretrained"), exist_ok=True)
    link = os.path.join(datasets, "toy_instance")
    if not os.path.lexists(link):
        os.symlink(os.path.join(default_root(), "toy_instance"), link)
    path = os.path.join(datasets, "toy_pretrained", toy_pretrained.KNOWN_FILES[0])
    if not os.path.isfile(path):
        work = os.path.join(root, "pretrain")
        command = [sys.executable, "-m", "tests.helpers.measure_bars", "--pretrain-into", work]
        command += ["--pretrain-seed", str(seed)]
        env = dict(os.environ, DETECTRON2_DATASETS=datasets)
        subprocess.run(command, env=env, cwd=REPO, check=True)
        os.replace(os.path.join(work, "backbone.pkl"), path)
    with open(path + toy_pretrained.STAMP_SUFFIX, "w") as f:
        json.dump(toy_pretrained.recipe_stamp(), f, indent=1, sort_keys=True)
    return datasets


def _pretrain_with_seed(work, seed):
    from projects.engine import toy_pretrained

    opts = list(toy_pretrained.RECIPE_OPTS)
    opts[opts.index("SEED") + 1] = str(seed)
    toy_pretrained.RECIPE_OPTS = tuple(opts)
    os.makedirs(work, exist_ok=True)
    toy_pretrained._train_into(work)


def _run_all(configs, runs, output, memorise, memorise_iterations):
    """Train (and memorise) every config and the yardstick for each ``(backbone, seed)`` of
    ``runs``; returns ``{(config, backbone, seed): (results, metrics file, memorised results)}``."""
    from tests.helpers import learning
    from tests.helpers.toy_jobs import ToyJobPool

    extra = ("SOLVER.MAX_ITER", str(memorise_iterations)) if memorise_iterations else ()
    found = {}
    for backbone in dict.fromkeys(b for b, _ in runs):
        seeds = [s for b, s in runs if b == backbone]
        root = output if backbone is None else os.path.join(output, f"backbone-{backbone}")
        pool = ToyJobPool(os.path.join(root, "runs") if backbone is not None else root)
        if backbone is not None:
            pool.environ["DETECTRON2_DATASETS"] = make_backbone(backbone, root)
        jobs = {}
        for seed in seeds:
            for config in [learning.YARDSTICK, *configs]:
                train = learning.train_job(config, "SEED", str(seed))
                mem = learning.memorise_job(config, "SEED", str(seed), *extra)
                jobs[config, seed] = (train, mem if memorise and config in configs else None)
        pool.plan([j for pair in jobs.values() for j in pair if j is not None])
        try:
            for (config, seed), (train, mem) in jobs.items():
                metrics = os.path.join(pool.output_dir(train), "metrics.json")
                memorised = pool.result(mem) if mem is not None else None
                found[config, backbone, seed] = (pool.result(train), metrics, memorised)
        finally:
            pool.close()
        for state in pool.finished():
            print(f"{state.job.label()}: {state.seconds:.0f} s, {state.threads} thread(s)")
    return found


def measure(configs, seeds, output, memorise=True, memorise_iterations=None, backbones=None):
    """Print what :mod:`configs/toy/bars.yaml` is set from, per config, over ``seeds`` (and, with
    ``backbones``, over backbones pretrained with those seeds: every backbone with every seed)."""
    from tests.helpers import learning

    runs = [(b, s) for b in (backbones or [None]) for s in seeds]
    found = _run_all(configs, runs, output, memorise, memorise_iterations)

    def name(backbone, seed):
        return f"seed {seed}" if backbone is None else f"backbone {backbone}, seed {seed}"

    for config in configs:
        print(f"\n== {config}")
        for backbone, seed in runs:
            results, metrics, memorised = found[config, backbone, seed]
            yardstick = found[learning.YARDSTICK, backbone, seed][0]
            factors = _loss_factors(metrics)
            aps = " / ".join(f"{_ap(results, t) or 0:.2f}" for t in TASKS)
            sml = "/".join(f"{_ap(results, 'segm', m) or 0:.1f}" for m in ("APs", "APm", "APl"))
            diff = " / ".join(
                f"{(_ap(results, t) or 0) - (_ap(yardstick, t) or 0):+.2f}" for t in TASKS
            )
            loss = ", ".join(f"{k} x{v:.2f}" for k, v in factors.items())
            line = f"{name(backbone, seed)}: box / mask / boundary AP {aps} (mask APs/m/l {sml}); "
            line += f"minus the yardstick {diff}; losses {loss}"
            if memorised is not None:
                line += f"; memorised mask AP {_ap(memorised, 'segm') or 0:.2f}"
            print(line)
        for task in TASKS:
            values = [_ap(found[config, b, s][0], task) for b, s in runs]
            print(f"  {task} AP: {_stats(values)}")
            diffs = [
                (_ap(found[config, b, s][0], task) or 0)
                - (_ap(found[learning.YARDSTICK, b, s][0], task) or 0)
                for b, s in runs
            ]
            print(f"  {task} AP minus the yardstick: {_stats(diffs)}")
        if memorise:
            mems = [_ap(found[config, b, s][2], "segm") for b, s in runs]
            print(f"  memorised mask AP: {_stats(mems)}")
    print(f"\n== {learning.YARDSTICK} (the yardstick)")
    for task in TASKS:
        values = [_ap(found[learning.YARDSTICK, b, s][0], task) for b, s in runs]
        print(f"  {task} AP: {_stats(values)}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", help="toy config names (configs/toy/...)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[7, 8, 9])
    parser.add_argument("--output", required=True, help="folder of the runs")
    parser.add_argument("--no-memorise", action="store_true")
    parser.add_argument(
        "--memorise-iterations", type=int, help="instead of the memorise entry's iterations"
    )
    parser.add_argument(
        "--backbones",
        nargs="+",
        type=int,
        help="measure over toy-pretrained backbones pretrained with these seeds (each made once, "
        "under OUTPUT/backbone-<seed>), every backbone with every seed; default: this machine's",
    )
    parser.add_argument("--pretrain-into", help=argparse.SUPPRESS)
    parser.add_argument("--pretrain-seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    if args.pretrain_into:
        _pretrain_with_seed(args.pretrain_into, args.pretrain_seed)
        return
    measure(
        args.configs,
        args.seeds,
        args.output,
        memorise=not args.no_memorise,
        memorise_iterations=args.memorise_iterations,
        backbones=args.backbones,
    )


if __name__ == "__main__":
    main()
