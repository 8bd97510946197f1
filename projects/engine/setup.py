"""Building the frozen config that ``train_net.py``, ``demo.py`` and the tools run with."""

from ..config import get_cfg
from ..data import ensure_datasets_registered
from .config_keys import config_key_suggestions
from .launch import fit_device_to_machine


def load_config(config_file, opts=(), freeze=True):
    """Every method's keys, then ``config_file``, then ``opts``; the device fitted to the machine;
    the datasets it names registered (``coco_format:<json>:<image_root>`` names included).

    Args:
        config_file (str): YAML config path ("" for the defaults only).
        opts (list[str]): ``KEY VALUE`` overrides.
        freeze (bool): freeze the result.

    Returns:
        CfgNode

    Raises:
        ConfigKeyError: naming an unknown key and the nearest valid ones.
        KeyError: naming a dataset that is not registered, and how to register it.
    """
    cfg = get_cfg()
    with config_key_suggestions(cfg, config_file):
        if config_file:
            cfg.merge_from_file(config_file)
        cfg.merge_from_list(list(opts))
    fit_device_to_machine(cfg)
    ensure_datasets_registered(list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST))
    if freeze:
        cfg.freeze()
    return cfg
