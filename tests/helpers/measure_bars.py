"""Measure what a toy config's bars in ``configs/toy/bars.yaml`` are set from: its toy training and
its memorisation run over seeds, each seed paired with the yardstick's run of the same seed, in
the pool of the learning checks (two runs side by side on 2 cores)::

    python -m tests.helpers.measure_bars pointrend.yaml blendmask.yaml --seeds 7 8 9 \\
        --output /tmp/bars

For each config it prints, per seed, box / mask / boundary AP (with APs / APm / APl), the loss
factors the learning checks read (each loss's end over its start), the memorisation mask AP and
the paired differences with the yardstick; then mean, SD and mean - 3 SD, the bar the learning
checks hold a config to. ``--no-memorise`` skips the memorisation runs; a config with no
``memorise`` entry in bars.yaml yet memorises for 100 iterations (or ``--memorise-iterations``).
"""

import argparse
import os
import statistics
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


def measure(configs, seeds, output, memorise=True, memorise_iterations=None):
    from tests.helpers import learning
    from tests.helpers.toy_jobs import ToyJobPool

    pool = ToyJobPool(output)
    jobs = []
    for seed in seeds:
        jobs.append(learning.train_job(learning.YARDSTICK, "SEED", str(seed)))
        for config in configs:
            jobs.append(learning.train_job(config, "SEED", str(seed)))
    if memorise:
        extra = ("SOLVER.MAX_ITER", str(memorise_iterations)) if memorise_iterations else ()
        memorised = {
            (config, seed): learning.memorise_job(config, "SEED", str(seed), *extra)
            for config in configs
            for seed in seeds
        }
        jobs += list(memorised.values())
    pool.plan(jobs)
    try:
        yardstick = {
            s: pool.result(learning.train_job(learning.YARDSTICK, "SEED", str(s))) for s in seeds
        }
        for config in configs:
            print(f"\n== {config}")
            rows = {}
            for seed in seeds:
                job = learning.train_job(config, "SEED", str(seed))
                results = pool.result(job)
                factors = _loss_factors(os.path.join(pool.output_dir(job), "metrics.json"))
                rows[seed] = results
                aps = " / ".join(f"{_ap(results, t) or 0:.2f}" for t in TASKS)
                sml = "/".join(f"{_ap(results, 'segm', m) or 0:.1f}" for m in ("APs", "APm", "APl"))
                diff = " / ".join(
                    f"{(_ap(results, t) or 0) - (_ap(yardstick[seed], t) or 0):+.2f}" for t in TASKS
                )
                loss = ", ".join(f"{k} x{v:.2f}" for k, v in factors.items())
                line = f"seed {seed}: box / mask / boundary AP {aps} (mask APs/m/l {sml}); "
                line += f"minus the yardstick {diff}; losses {loss}"
                if memorise:
                    mem = pool.result(memorised[config, seed])
                    line += f"; memorised mask AP {_ap(mem, 'segm') or 0:.2f}"
                print(line)
            for task in TASKS:
                print(f"  {task} AP: {_stats([_ap(rows[s], task) for s in seeds])}")
                diffs = [(_ap(rows[s], task) or 0) - (_ap(yardstick[s], task) or 0) for s in seeds]
                print(f"  {task} AP minus the yardstick: {_stats(diffs)}")
            if memorise:
                mems = [_ap(pool.result(memorised[config, s]), "segm") for s in seeds]
                print(f"  memorised mask AP: {_stats(mems)}")
        print(f"\n== {learning.YARDSTICK} (the yardstick)")
        for task in TASKS:
            print(f"  {task} AP: {_stats([_ap(yardstick[s], task) for s in seeds])}")
    finally:
        pool.close()
    for state in pool.finished():
        print(f"{state.job.label()}: {state.seconds:.0f} s, {state.threads} thread(s)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", help="toy config names (configs/toy/...)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[7, 8, 9])
    parser.add_argument("--output", required=True, help="folder of the runs")
    parser.add_argument("--no-memorise", action="store_true")
    parser.add_argument(
        "--memorise-iterations", type=int, help="instead of the memorise entry's iterations"
    )
    args = parser.parse_args(argv)
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    measure(
        args.configs,
        args.seeds,
        args.output,
        memorise=not args.no_memorise,
        memorise_iterations=args.memorise_iterations,
    )


if __name__ == "__main__":
    main()
