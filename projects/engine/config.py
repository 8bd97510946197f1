"""Config keys of the engine (optimizer, schedules, checkpointing)."""

from ..config import add_missing_keys


def add_engine_config(cfg):
    """Add the engine keys to ``cfg`` in place where they are missing.

    Solver (read by :mod:`projects.engine.optimizer` and :mod:`projects.engine.lr_scheduler`):

    * ``SOLVER.OPTIMIZER``: ``"SGD"`` (uses ``MOMENTUM``/``NESTEROV``) or ``"ADAMW"``;
    * ``SOLVER.BACKBONE_MULTIPLIER``: learning-rate factor for parameters named ``backbone.*``;
    * ``SOLVER.WEIGHT_DECAY_EMBED``: weight decay of ``nn.Embedding`` weights and of parameters
      whose own name contains ``embed`` (learned queries, positional embeddings);
    * ``SOLVER.POLY_LR_POWER`` / ``SOLVER.POLY_LR_CONSTANT_ENDING``: the ``WarmupPolyLR`` schedule
      (``SOLVER.LR_SCHEDULER_NAME: "WarmupPolyLR"``): after warm-up the factor is
      ``(1 - iter / MAX_ITER) ** POWER``, never below ``CONSTANT_ENDING`` when that is > 0
      (Detectron2 DeepLab's names and defaults; this is their only adder here).
    * Detectron2's ``SOLVER.CLIP_GRADIENTS.CLIP_TYPE`` also accepts ``"full_model"``: one norm
      clip (``CLIP_VALUE``, ``NORM_TYPE``) over all parameters together, besides the per-parameter
      ``"value"`` and ``"norm"``.

    Non-finite losses (read by :mod:`projects.engine.nonfinite`):

    * ``SOLVER.NONFINITE_LOSS``: ``"error"`` stops training at a NaN / Inf loss with a message
      naming the iteration, the loss terms and the batch's images (the weights and the last
      checkpoint are untouched); ``"skip"`` skips such steps, counting them;
    * ``SOLVER.NONFINITE_MAX_SKIPS``: with ``"skip"``, skips allowed in one run before it stops.

    Mixed precision (read by :mod:`projects.engine.amp`), beside Detectron2's
    ``SOLVER.AMP.ENABLED``:

    * ``SOLVER.AMP.DTYPE``: ``"auto"`` (float16 with a grad scaler on CUDA, as Detectron2's
      ``AMPTrainer``; bfloat16 on the CPU), ``"float16"`` or ``"bfloat16"``. Where the device
      cannot run it, AMP is turned off with a warning and training runs in float32.

    Checkpoints (read by :class:`projects.engine.checkpoint.ProjectCheckpointer`):

    * ``MODEL.WEIGHTS_TRUSTED``: ``False`` loads ``MODEL.WEIGHTS`` with PyTorch's safe
      ``weights_only`` loader (tensors and plain containers only). Set it to ``True`` only for a
      file you trust that the safe loader refuses (foreign checkpoints holding numpy scalars or
      other Python objects): it is then loaded with ``weights_only=False``, which can run code.
    """
    add_missing_keys(
        cfg,
        {
            "SOLVER.OPTIMIZER": "SGD",
            "SOLVER.BACKBONE_MULTIPLIER": 1.0,
            "SOLVER.WEIGHT_DECAY_EMBED": 0.0,
            "SOLVER.POLY_LR_POWER": 0.9,
            "SOLVER.POLY_LR_CONSTANT_ENDING": 0.0,
            "SOLVER.NONFINITE_LOSS": "error",
            "SOLVER.NONFINITE_MAX_SKIPS": 100,
            "MODEL.WEIGHTS_TRUSTED": False,
            "SOLVER.AMP.DTYPE": "auto",
        },
    )
