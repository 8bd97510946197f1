"""Building the frozen config that ``train_net.py``, ``demo.py`` and the tools run with."""

from ..config import get_cfg
from .config_keys import config_key_suggestions
from .launch import fit_device_to_machine


def load_config(config_file, opts=(), freeze=True):
    """Every method's keys, then ``config_file``, then ``opts``; the device fitted to the machine.

    Args:
        config_file (str): YAML config path ("" for the defaults only).
        opts (list[str]): ``KEY VALUE`` overrides.
        freeze (bool): freeze the result.

    Returns:
        CfgNode

    Raises:
        ConfigKeyError: naming an unknown key and the nearest valid ones.
    """
    cfg = get_cfg()
    with config_key_suggestions(cfg, config_file):
        if config_file:
            cfg.merge_from_file(config_file)
        cfg.merge_from_list(list(opts))
    fit_device_to_machine(cfg)
    if freeze:
        cfg.freeze()
    return cfg
