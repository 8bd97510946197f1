"""Clear errors for config keys that do not exist (typos), with the nearest valid keys."""

import contextlib
import difflib
import logging
import re

logger = logging.getLogger(__name__)

# yacs: KeyError("Non-existent config key: A.B") from merge_from_file,
# AssertionError("Non-existent key: A.B") from merge_from_list.
_UNKNOWN_KEY = re.compile(r"Non-existent (?:config )?key: ([\w.]+)")


class ConfigKeyError(KeyError):
    """A config key that does not exist; the message names it and the nearest valid keys."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


def all_config_keys(cfg, prefix=""):
    """Every leaf key of a yacs ``CfgNode`` as a dotted name, e.g. ``"SOLVER.BASE_LR"``."""
    keys = []
    for name, value in cfg.items():
        full = f"{prefix}{name}"
        if isinstance(value, dict):
            keys.extend(all_config_keys(value, full + "."))
        else:
            keys.append(full)
    return keys


def suggest_keys(cfg, key, n=5):
    """The valid keys of ``cfg`` closest to ``key`` (difflib ratio), best first."""
    candidates = all_config_keys(cfg)
    close = difflib.get_close_matches(key, candidates, n=n, cutoff=0.6)
    # Also match on the last component only: ``SOLVER.BASE_LRR`` -> ``SOLVER.BASE_LR``,
    # ``MODEL.BASE_LR`` -> ``SOLVER.BASE_LR``.
    leaf = key.rsplit(".", 1)[-1]
    by_leaf = {c.rsplit(".", 1)[-1]: c for c in candidates}
    for match in difflib.get_close_matches(leaf, list(by_leaf), n=n, cutoff=0.75):
        if by_leaf[match] not in close:
            close.append(by_leaf[match])
    return close[:n]


@contextlib.contextmanager
def config_key_suggestions(cfg, source=""):
    """Turn yacs' unknown-key errors raised inside the block into :class:`ConfigKeyError`.

    Example::

        with config_key_suggestions(cfg, args.config_file):
            cfg.merge_from_file(args.config_file)
            cfg.merge_from_list(args.opts)

    Args:
        cfg (CfgNode): the config being merged into (its keys are the valid ones).
        source (str): the config file, named in the message.

    Raises:
        ConfigKeyError: naming the unknown key, ``source`` and up to 5 nearest valid keys.
    """
    try:
        yield
    except (KeyError, AssertionError) as e:
        match = _UNKNOWN_KEY.search(str(e))
        if match is None:
            raise
        key = match.group(1)
        where = f" (in {source} or the command-line options)" if source else ""
        suggestions = suggest_keys(cfg, key)
        hint = (
            "did you mean: " + ", ".join(suggestions)
            if suggestions
            else "no similar key exists; if it belongs to a method, is its package importable?"
        )
        raise ConfigKeyError(f"Unknown config key {key!r}{where}; {hint}") from e
