"""The method contract: what the shared tools know about each method, and nothing more.

Every method package declares one :class:`Method` and registers it when it is imported::

    # pointrend/method.py
    from projects.methods import BenchmarkConfig, Method, register_method

    register_method(
        Method(
            name="PointRend",
            package="pointrend",
            toy_configs=("pointrend.yaml", "pointrend_semseg.yaml"),
            benchmark_configs=(
                BenchmarkConfig("PointRend/pointrend_R_50_FPN_3x.yaml", toy="pointrend.yaml"),
            ),
            score_threshold_keys=("MODEL.ROI_HEADS.SCORE_THRESH_TEST",),
            head_flops=count_point_rend_head_flops,  # pointrend/flops.py
            readme="pointrend/README.md",
        )
    )

The benchmark (:mod:`projects.benchmark`), the demo (:mod:`projects.demo`), the toy-accuracy runs
and the test contract (``tests/contract``) read only :func:`registered_methods`; adding a method
edits nothing in ``projects/``. :func:`registered_methods` first imports every method package
(:func:`projects.config.method_config_adders`), so a method is known as soon as it is installed.

Configs are named relative to the project's config folder (:func:`config_root`), e.g.
``"toy/mask_rcnn.yaml"`` or ``"PointRend/x.yaml"``; ``"zoo:<path>"`` names a file of
Detectron2's model zoo. A method installed outside this repository names its configs by absolute
paths (toy configs included), since its files are not under :func:`config_root`.

Detectron2's own models, the yardsticks every method is measured against (Mask R-CNN for
instances, Semantic FPN for semantic segmentation), are declared here as the method
``"Detectron2"``.
"""

import logging
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, Mapping, Optional, Tuple

logger = logging.getLogger(__name__)

__all__ = [
    "BenchmarkConfig",
    "add_test_contract_config",
    "DETECTRON2",
    "Method",
    "ZOO_PREFIX",
    "config_root",
    "get_method",
    "method_of_toy_config",
    "register_method",
    "registered_methods",
    "resolve_config",
    "score_threshold_keys",
    "toy_config_names",
]

ZOO_PREFIX = "zoo:"
CONFIG_ROOT_ENV = "D2IS_CONFIG_ROOT"


@dataclass(frozen=True)
class BenchmarkConfig:
    """One published configuration of a method, benchmarked at the test size it was published at.

    Attributes:
        config: path under :func:`config_root` (``"PointRend/x.yaml"``), ``"zoo:<path>"`` for
            Detectron2's model zoo, or an absolute path (see :func:`resolve_config`).
        toy: the toy config (a name of ``Method.toy_configs``) that stands for it in the
            benchmark's toy-accuracy columns; None: no toy column.
        label: the name in the benchmark's table (default: ``<Method>/<file stem>``).
        yardstick: the row every latency is divided by (Detectron2's Mask R-CNN).
    """

    config: str
    toy: Optional[str] = None
    label: str = ""
    yardstick: bool = False


@dataclass(frozen=True)
class Method:
    """What the shared tools need to know about one method.

    Attributes:
        name: the method's name as users know it (``"PointRend"``), unique.
        package: the Python package that implements it (None for Detectron2's own models).
        toy_configs: its CPU-sized configs for the bundled toy data, file names under
            ``configs/toy/`` (or absolute paths, for a method outside this repository); each
            joins the test contract and has an entry in ``configs/toy/bars.yaml``, and the
            benchmark trains each for its toy-accuracy columns. Each sets
            ``TEST_CONTRACT.NUM_CLASSES_KEY`` (:func:`add_test_contract_config`).
        benchmark_configs: its published configurations (see :class:`BenchmarkConfig`).
        score_threshold_keys: config keys holding an inference score threshold: the demo sets
            them to ``--confidence-threshold`` and the benchmark to 0, where a config has them.
        num_classes_key: the config key with the number of classes of its benchmark configs
            (the benchmark's synthetic training batch draws its labels below it).
        flop_handles: fvcore op handles for the operators it runs that fvcore does not count
            (``{"aten::op_name": handle}``, fvcore's ``handle(inputs, outputs) -> int``), used
            by every FLOP count of the benchmark, every row's. A handle for an operator that
            ``projects.evaluation.flop_handles`` or another method counts already, with another
            handle, is an error: an operator shared by methods is counted in one place.
        head_flops: ``head_flops(cfg, model, image) -> dict or None``, the per-box FLOPs of its
            mask head as its paper counts them. ``cfg`` is the model's (frozen) config,
            ``model`` the built model in eval mode (random or loaded weights; the counter must
            leave it as it found it), ``image`` a ``(3, H, W)`` float tensor in
            ``cfg.INPUT.FORMAT`` on the model's device. It returns None for a model whose head
            it does not count (the benchmark asks every method, the config's own first, and
            keeps the first dict), else a JSON-serialisable dict with ``gflops_per_box``
            (float, required; 1 multiply-add = 1 FLOP, as fvcore counts) and optionally
            ``output_side`` (int, M of the M x M mask) and ``conv_head_same_output`` (the dict
            of :func:`projects.evaluation.mask_head_flops.conv_mask_head_flops` at that side,
            the comparison the table shows) beside fields of its own. None: no counter.
        readme: its README (zoo, toy results, parity notes, BibTeX), relative to the repository.
    """

    name: str
    package: Optional[str] = None
    toy_configs: Tuple[str, ...] = ()
    benchmark_configs: Tuple[BenchmarkConfig, ...] = ()
    score_threshold_keys: Tuple[str, ...] = ()
    num_classes_key: str = "MODEL.ROI_HEADS.NUM_CLASSES"
    flop_handles: Mapping[str, Callable] = field(default_factory=dict)
    head_flops: Optional[Callable] = None
    readme: Optional[str] = None

    def __post_init__(self):
        for spec in self.benchmark_configs:
            if spec.toy is not None and spec.toy not in self.toy_configs:
                raise ValueError(
                    f"method {self.name!r}: benchmark config {spec.config!r} names toy config "
                    f"{spec.toy!r}, which is not one of its toy_configs {self.toy_configs}"
                )


DETECTRON2 = Method(
    name="Detectron2",
    toy_configs=("mask_rcnn.yaml", "semantic_fpn.yaml"),
    benchmark_configs=(
        BenchmarkConfig(
            ZOO_PREFIX + "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml",
            toy="mask_rcnn.yaml",
            label="Mask R-CNN R50-FPN (Detectron2, yardstick)",
            yardstick=True,
        ),
    ),
    score_threshold_keys=(
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
        "MODEL.RETINANET.SCORE_THRESH_TEST",
        "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH",
    ),
    readme="README.md",
)

_METHODS: Dict[str, Method] = {DETECTRON2.name: DETECTRON2}


def register_method(method: Method) -> Method:
    """Add ``method`` to the registry (a method package calls this when it is imported).

    The same package registering its method again (a module imported twice, e.g. by ``runpy``)
    replaces the earlier declaration; another package's declaration under a taken name, or a toy
    config another method declares, raises.

    Raises:
        ValueError: naming the clash.
    """
    known = _METHODS.get(method.name)
    if known is not None and known != method and known.package != method.package:
        raise ValueError(f"method {method.name!r} is registered already, differently: {known}")
    # The same package's declaration again (a module run twice, e.g. by runpy or a reload,
    # creates new function objects): the newer one replaces it.
    _METHODS.pop(method.name, None)
    for other in _METHODS.values():
        shared = set(other.toy_configs) & set(method.toy_configs)
        if shared:
            raise ValueError(
                f"method {method.name!r} declares toy config(s) {sorted(shared)} that method "
                f"{other.name!r} declares already"
            )
    _METHODS[method.name] = method
    return method


def registered_methods() -> Tuple[Method, ...]:
    """Every known method, Detectron2's yardsticks first, after importing all method packages."""
    from .config import method_config_adders

    method_config_adders()
    return tuple(_METHODS.values())


def get_method(name: str) -> Method:
    """The method called ``name``.

    Raises:
        KeyError: naming the known methods.
    """
    methods = {m.name: m for m in registered_methods()}
    if name not in methods:
        raise KeyError(f"no method {name!r}; known: {', '.join(sorted(methods))}")
    return methods[name]


def toy_config_names() -> Tuple[str, ...]:
    """The toy configs of every method (file names under ``configs/toy/``), sorted."""
    return tuple(sorted(name for m in registered_methods() for name in m.toy_configs))


def method_of_toy_config(name: str) -> Method:
    """The method that declares toy config ``name`` (a file name under ``configs/toy/``).

    Raises:
        KeyError: no method declares it.
    """
    for method in registered_methods():
        if name in method.toy_configs:
            return method
    raise KeyError(
        f"no method declares the toy config {name!r} (a method lists it in its Method's "
        "toy_configs, see projects.methods)"
    )


def score_threshold_keys() -> Tuple[str, ...]:
    """Every method's score-threshold keys, each once, in registration order."""
    keys = []
    for method in registered_methods():
        keys += [k for k in method.score_threshold_keys if k not in keys]
    return tuple(keys)


def config_root() -> str:
    """The folder of the project's configs: ``$D2IS_CONFIG_ROOT`` if set, else the copy installed
    with the package (``projects/configs``, a link to the repository's ``configs/`` in a
    checkout).

    Raises:
        FileNotFoundError: neither exists.
    """
    root = os.environ.get(CONFIG_ROOT_ENV)
    if root:
        if not os.path.isdir(root):
            raise FileNotFoundError(f"${CONFIG_ROOT_ENV}={root!r} is not a directory")
        return os.path.abspath(root)
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"the project's configs are not installed at {root}; set ${CONFIG_ROOT_ENV} to the "
            "repository's configs/ folder"
        )
    return root


def resolve_config(name: str) -> str:
    """The file of config ``name``: a path under :func:`config_root`, a ``"zoo:"`` name of
    Detectron2's model zoo, or an existing file path (returned as it is).

    Raises:
        FileNotFoundError: naming the config and where it was looked for.
    """
    if name.startswith(ZOO_PREFIX):
        from detectron2 import model_zoo

        return model_zoo.get_config_file(name[len(ZOO_PREFIX) :])
    if os.path.isabs(name) or os.path.isfile(name):
        if not os.path.isfile(name):
            raise FileNotFoundError(f"config file {name!r} does not exist")
        return name
    path = os.path.join(config_root(), name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config {name!r} does not exist under {config_root()}")
    return path


def add_test_contract_config(cfg):
    """Add the keys through which a toy config declares how the test contract runs it (only where
    missing; every toy config under ``configs/toy/`` sets them, other configs need not):

    * ``TEST_CONTRACT.TINY_OPTS``: ``KEY VALUE`` overrides that make the model CPU-sized for the
      contract's quick checks (widths, proposal and point counts, ...). They must set every key
      with which the config's augmentation recipe sets the input size
      (:func:`projects.data.augmentation_registry.recipe_input_size_keys`: e.g.
      ``INPUT.MIN_SIZE_TEST`` or ``INPUT.SSD.SIZE``), so that no quick check runs at a published
      size.
    * ``TEST_CONTRACT.NUM_CLASSES_KEY``: the key holding the config's number of classes (e.g.
      ``MODEL.ROI_HEADS.NUM_CLASSES``); the contract checks it against the training dataset.
    """
    from .config import add_missing_keys

    add_missing_keys(cfg, {"TEST_CONTRACT.TINY_OPTS": [], "TEST_CONTRACT.NUM_CLASSES_KEY": ""})
