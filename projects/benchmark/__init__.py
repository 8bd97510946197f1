"""The benchmark tool (``tools/benchmark.py``): cost and toy accuracy of every method's configs.

It reads only the method contract (:mod:`projects.methods`): which configs to measure, the toy
config standing for each, score-threshold keys, class-count keys, FLOP handles and mask-head FLOP
counters. The metrics it uses live in :mod:`projects.evaluation` (FLOP counting, op handles,
the conv-mask-head count).

* :mod:`.specs`: the rows (:class:`ConfigSpec`), from the contract or the command line;
* :mod:`.contract`: what the contract says about a built model (detections, classes, FLOPs);
* :mod:`.measure`: inputs, FLOPs, latency, training step, memory, matmul ceiling;
* :mod:`.toy`: toy accuracy (each toy config trained by ``python -m projects.engine.main``);
* :mod:`.report`: machine description, markdown table, JSON, plot;
* :mod:`.driver`: :func:`run_benchmark`, the phases in order.
"""

from .driver import PHASES, BenchmarkSettings, parse_size, run_benchmark
from .report import markdown_report
from .specs import ConfigSpec, config_label, default_config_specs, spec_for_config
from .toy import ToySettings

__all__ = [
    "BenchmarkSettings",
    "ConfigSpec",
    "PHASES",
    "ToySettings",
    "config_label",
    "default_config_specs",
    "markdown_report",
    "parse_size",
    "run_benchmark",
    "spec_for_config",
]
