"""Capture, restore and isolate the global random states (Python, numpy, torch)."""

import contextlib
import random

import numpy as np
import torch


def capture_rng_state():
    """The global RNG states as plain containers and tensors (safe for ``weights_only`` loads).

    Returns:
        dict: ``python`` (tuple), ``numpy`` (dict of ints/lists), ``torch`` (uint8 tensor) and
        ``cuda`` (list of uint8 tensors, empty without CUDA).
    """
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "kind": str(kind),
            "keys": [int(k) for k in keys],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state):
    """Set the global RNG states from :func:`capture_rng_state`'s output."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np.asarray(np_state["keys"], dtype=np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_all(seed):
    """Seed Python, numpy and torch (CPU and CUDA) from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def isolated_rng(seed=None):
    """Run a block with its own random stream (seeded with ``seed`` if given), then put the
    global states back as they were, so that the block neither consumes nor perturbs them.
    """
    saved = capture_rng_state()
    try:
        if seed is not None:
            seed_all(seed)
        yield
    finally:
        restore_rng_state(saved)
