"""The project's checkpointer: safe loading of many checkpoint formats, atomic saving."""

import collections.abc
import logging
import os
import pickle
import re
import tempfile

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from fvcore.common.checkpoint import _IncompatibleKeys

from . import toy_pretrained  # also registers toy-pretrained:// with the PathManager

logger = logging.getLogger(__name__)

TRUST_HINT = (
    "If you trust this file, load it with weights_only=False by setting MODEL.WEIGHTS_TRUSTED True "
    "(or ProjectCheckpointer(..., trusted=True)); this can run code stored in the file."
)

# What Detectron2 / Caffe2 model-zoo .pkl files hold besides builtin containers: numpy arrays.
_SAFE_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
}


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model; the message names the file."""


class UnsafeCheckpointError(CheckpointError):
    """The safe loader refused a file that holds arbitrary Python objects."""


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _SAFE_PICKLE_GLOBALS or module.startswith("numpy.dtypes"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed by the safe loader")


def _is_weights_only_refusal(error):
    message = str(error)
    return (
        isinstance(error, pickle.UnpicklingError)
        and ("Weights only load failed" in message or "not allowed by the safe loader" in message)
        and ("global" in message.lower() or "GLOBAL" in message)
    )


def _is_tensor_like(value):
    return isinstance(value, (torch.Tensor, np.ndarray, np.generic))


# The temporary files of atomic_write: "." + target name + "." + mkstemp's 8 random characters.
_TEMPORARY_FILE = re.compile(r"^\.(?P<target>.+)\.[A-Za-z0-9_]{8}$")


def atomic_write(path, write):
    """Write ``path`` so that it is either complete or untouched, never partial.

    ``write(f)`` writes to a temporary file (binary) in the same directory, which is flushed,
    fsync'ed and then renamed over ``path`` with ``os.replace``. On any error the temporary file
    is removed and the previous ``path`` (if any) stays as it was.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
    try:  # make the rename itself durable (best effort: not every filesystem allows it)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


class ProjectCheckpointer(DetectionCheckpointer):
    """Detectron2's ``DetectionCheckpointer`` that also

    * loads bare state dicts (a dict of tensors, ``{"model": ...}``, ``{"state_dict": ...}``) and
      foreign checkpoints, stripping a ``module.`` prefix;
    * loads ``.pth`` files with ``torch.load(weights_only=True)`` and ``.pkl`` files with an
      unpickler that only admits numpy arrays; a file the safe loaders refuse is loaded with
      ``weights_only=False`` only when ``trusted`` (``MODEL.WEIGHTS_TRUSTED``), else the error
      says how to opt in;
    * raises ``FileNotFoundError`` for a missing path and :class:`CheckpointError` naming a
      corrupt or truncated file;
    * keeps the last load's missing/unexpected keys in :attr:`last_incompatible`;
    * saves atomically: temporary file in the same directory, fsync, ``os.replace``, and only
      then ``last_checkpoint`` (itself written the same way). A crash during a save leaves the
      previous checkpoint and ``last_checkpoint`` intact.

    Args:
        model, save_dir, save_to_disk, checkpointables: as ``DetectionCheckpointer``.
        trusted (bool): allow ``weights_only=False`` for files the safe loader refuses.
    """

    def __init__(self, model, save_dir="", *, save_to_disk=None, trusted=False, **checkpointables):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.trusted = trusted
        self.last_incompatible = None

    # ----------------------------------------------------------------------------- loading
    def load(self, path, *args, **kwargs):
        if path:
            local = path if os.path.isfile(path) else self.path_manager.get_local_path(path)
            if not os.path.isfile(local):
                raise FileNotFoundError(f"Checkpoint file {path!r} does not exist")
        loaded = super().load(path, *args, **kwargs)
        if toy_pretrained.is_toy_pretrained(path) and isinstance(
            self.model, torch.nn.parallel.DistributedDataParallel
        ):
            # made on each machine: replicas on machines without a shared filesystem hold
            # different weights; take rank 0's, as DDP's construction does
            self.model._sync_params_and_buffers()
        return loaded

    def _load_file(self, filename):
        if filename.endswith(".pyth"):
            raise CheckpointError(f"{filename}: pycls .pyth checkpoints are not supported")
        try:
            if filename.endswith(".pkl"):
                loaded = self._read_pickle(filename)
                if isinstance(loaded, dict) and not ("model" in loaded and "__author__" in loaded):
                    return self._caffe2(loaded)  # Detectron1 / Caffe2 model zoo
            else:
                loaded = self._read_torch(filename)
        except (CheckpointError, FileNotFoundError):
            raise
        except Exception as e:
            raise CheckpointError(
                f"Cannot read checkpoint {filename}: the file is corrupt or truncated, or is not a "
                f"PyTorch/Detectron2 checkpoint ({type(e).__name__}: {e})"
            ) from e
        return self._normalize(loaded, filename)

    def _read_torch(self, filename):
        try:
            return torch.load(filename, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if not _is_weights_only_refusal(e):
                raise
            return self._unsafe_fallback(filename, e, self._read_torch_unsafe)

    def _read_torch_unsafe(self, filename):
        return torch.load(filename, map_location="cpu", weights_only=False)

    def _read_pickle(self, filename):
        with self.path_manager.open(filename, "rb") as f:
            try:
                return _SafeUnpickler(f, encoding="latin1").load()
            except pickle.UnpicklingError as e:
                if not _is_weights_only_refusal(e):
                    raise
                refusal = e
        return self._unsafe_fallback(filename, refusal, self._read_pickle_unsafe)

    def _read_pickle_unsafe(self, filename):
        with self.path_manager.open(filename, "rb") as f:
            return pickle.load(f, encoding="latin1")

    def _unsafe_fallback(self, filename, error, read):
        first_line = str(error).strip().splitlines()[0]
        if not self.trusted:
            raise UnsafeCheckpointError(
                f"The safe loader refused {filename}: it holds Python objects besides tensors "
                f"({first_line}). {TRUST_HINT}"
            ) from error
        logger.warning("Loading trusted checkpoint %s with weights_only=False", filename)
        return read(filename)

    def _normalize(self, loaded, filename):
        """Bring every supported layout to ``{"model": state_dict, ...}``."""
        if not isinstance(loaded, collections.abc.Mapping):
            raise CheckpointError(
                f"{filename} holds a {type(loaded).__name__}, not a dict of weights; save "
                "model.state_dict() instead of the model"
            )
        loaded = dict(loaded)
        if "model" in loaded and isinstance(loaded["model"], collections.abc.Mapping):
            return loaded
        if "state_dict" in loaded and isinstance(loaded["state_dict"], collections.abc.Mapping):
            rest = {k: v for k, v in loaded.items() if k not in ("state_dict", "model")}
            logger.info("%s: reading weights from its 'state_dict' entry", filename)
            return {**rest, "model": dict(loaded["state_dict"]), "__author__": "foreign"}
        if loaded and all(_is_tensor_like(v) for v in loaded.values()):
            return {"model": loaded}
        raise CheckpointError(
            f"No weights found in {filename}: it is neither a dict of tensors nor has a 'model' "
            f"or 'state_dict' entry (top-level keys: {sorted(map(str, loaded))[:10]})"
        )

    @staticmethod
    def _caffe2(loaded):
        # Detectron1 / Caffe2 model zoo: weights under "blobs" (detection) or at the top level.
        data = loaded.get("blobs", loaded)
        data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
        return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}

    def _load_model(self, checkpoint):
        incompatible = super()._load_model(checkpoint)
        self.last_incompatible = incompatible
        return incompatible

    # ----------------------------------------------------------------------------- saving
    def save(self, name, **kwargs):
        """Save the model and every checkpointable to ``save_dir/<name>.pth`` atomically."""
        if not self.save_dir or not self.save_to_disk:
            return
        if "://" in self.save_dir:  # a remote PathManager location: no fsync/rename there
            return super().save(name, **kwargs)
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", save_file)
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename):
        if "://" in self.save_dir:
            return super().tag_last_checkpoint(last_filename_basename)
        atomic_write(
            os.path.join(self.save_dir, "last_checkpoint"),
            lambda f: f.write(last_filename_basename.encode("utf-8")),
        )

    def remove_incomplete_files(self):
        """Delete the temporary files of saves that were killed before they completed.

        A process killed during :meth:`save` (``SIGKILL``, power loss) leaves a hidden
        ``.<name>.pth.XXXXXXXX`` beside the checkpoints: never loaded, but as large as a
        checkpoint. Call this on the main process only, before training (re)starts.

        Returns:
            list[str]: the paths removed.
        """
        if not self.save_dir or "://" in self.save_dir or not os.path.isdir(self.save_dir):
            return []
        removed = []
        for name in sorted(os.listdir(self.save_dir)):
            match = _TEMPORARY_FILE.match(name)
            if not match or not (
                match["target"].endswith(".pth") or match["target"] == "last_checkpoint"
            ):
                continue
            path = os.path.join(self.save_dir, name)
            os.remove(path)
            removed.append(path)
            self.logger.warning("Removed %s, left by a checkpoint save that did not finish", path)
        return removed


def load_weights_for_evaluation(cfg, model, resume=False):
    """Load ``MODEL.WEIGHTS`` (or, with ``resume``, OUTPUT_DIR's last checkpoint) into ``model``
    and refuse to go on with weights that leave part of the model uninitialised.

    Raises:
        ValueError: no weights given (evaluating random weights is never what was meant).
        CheckpointError: weights that do not fit the architecture (missing keys or shape
            mismatches); the message gives the missing and unexpected key counts and examples.
    """
    checkpointer = ProjectCheckpointer(model, cfg.OUTPUT_DIR, trusted=cfg.MODEL.WEIGHTS_TRUSTED)
    if resume and checkpointer.has_checkpoint():
        path = checkpointer.get_checkpoint_file()
    else:
        path = cfg.MODEL.WEIGHTS
    if not path or toy_pretrained.is_toy_pretrained(path):
        what = f"MODEL.WEIGHTS {path!r} is the initial backbone of training" if path else ""
        raise ValueError(
            f"--eval-only needs trained weights{': ' + what if what else ''}: pass MODEL.WEIGHTS "
            "/path/to/model.pth (or --resume with a last_checkpoint in OUTPUT_DIR); refusing to "
            "evaluate random weights"
        )
    checkpointer.load(path, checkpointables=[])
    incompatible = checkpointer.last_incompatible or _IncompatibleKeys([], [], [])
    missing = list(incompatible.missing_keys)
    unexpected = list(incompatible.unexpected_keys)
    shapes = list(incompatible.incorrect_shapes)
    if missing or shapes:
        raise CheckpointError(
            f"{path} does not fit the model ({cfg.MODEL.META_ARCHITECTURE}): "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected keys "
            f"(e.g. {unexpected[:3]}), {len(shapes)} shape mismatches (e.g. {shapes[:2]}). "
            "Check that --config-file is the config these weights were trained with."
        )
    if unexpected:
        logger.warning("%s: %d unexpected keys were ignored", path, len(unexpected))
    return path
