"""``Trainer``: Detectron2's ``DefaultTrainer`` with the project's builders and exact resume.

What v0.6's ``DefaultTrainer`` does not do and this one does:

* its checkpoints hold only the model, the iteration and the LR scheduler (through the
  ``LRScheduler`` hook): the optimizer state (SGD momentum, Adam moments) is lost on resume.
  Here a checkpoint holds ``model``, ``optimizer``, ``scheduler``, ``trainer`` (iteration,
  hook states, the data stream's seed, every rank's random states, the AMP grad scaler);
* ``TrainingSampler`` restarts its index stream on resume, repeating the first images; here the
  data loader starts at the batch of the resumed iteration (:mod:`projects.engine.sampler`);
* DDP gets no ``device_ids`` for a CPU model, and ``nn.SyncBatchNorm`` becomes
  ``NaiveSyncBatchNorm`` when several processes train on the CPU (gloo);
* ``SOLVER.AMP.ENABLED`` works on any device: float16 with a grad scaler on CUDA, bfloat16 on
  the CPU (``SOLVER.AMP.DTYPE``), or off with a warning where the device cannot run it
  (:mod:`projects.engine.amp`);
* a NaN / Inf loss is caught before the backward pass and reported with the iteration, the loss
  terms and the batch's images, or the step is skipped (:mod:`projects.engine.nonfinite`);
* a data-loader worker that dies is reported with the sample it was mapping
  (:mod:`projects.engine.worker_faults`);
* on resume, the temporary files of a save that was killed are removed, ``metrics.json``
  drops the records of the iterations that will be trained again (and a line cut by a kill), and
  the recent history of every smoothed scalar comes back from the checkpoint, so the logged
  (median-smoothed) losses equal the uninterrupted run's.

A run stopped after iteration ``k`` and resumed from its checkpoint then computes the same losses
as a run that never stopped (for a fixed ``SEED``; on the CPU, bit for bit).
"""

import json
import logging
import os
import weakref

from detectron2.data import MetadataCatalog, build_detection_test_loader
from detectron2.engine import AMPTrainer, DefaultTrainer, create_ddp_model, hooks
from detectron2.engine.train_loop import TrainerBase
from detectron2.evaluation import DatasetEvaluators, SemSegEvaluator
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from torch.nn.parallel import DistributedDataParallel

from ..data.mapper_registry import build_dataset_mapper
from ..evaluation.coco_boundary import COCOBoundaryEvaluator
from .amp import amp_policy_from_config
from .checkpoint import ProjectCheckpointer
from .lr_scheduler import build_lr_scheduler
from .nonfinite import GuardedAMPTrainer, GuardedSimpleTrainer, NonFiniteLossGuard
from .optimizer import build_optimizer
from .rng import capture_rng_state, isolated_rng, restore_rng_state
from .sampler import build_resumable_train_loader
from .syncbn import convert_sync_batchnorm_for_cpu, needs_cpu_syncbn
from .worker_faults import report_worker_failures

logger = logging.getLogger(__name__)

# Values per smoothed scalar a checkpoint keeps (Detectron2's writers smooth over 20).
METRIC_HISTORY = 100


class _RNGSnapshot(hooks.HookBase):
    """On the iterations the checkpointer saves, gather every rank's random states into the
    trainer (all ranks take part; only the main process writes the checkpoint)."""

    def __init__(self, period):
        self._period = period

    def after_step(self):
        it = self.trainer.iter
        if (self._period > 0 and (it + 1) % self._period == 0) or it >= self.trainer.max_iter - 1:
            self.trainer.rng_states = comm.all_gather(capture_rng_state())


def drop_metrics_from(path, start_iter):
    """Remove from the JSON-lines file ``path`` the records of iterations ``>= start_iter`` and
    lines that are not JSON (one cut short by a kill); rewrites the file in place, so that a
    writer holding it open in append mode goes on at its new end.

    Returns:
        int: the number of lines removed.
    """
    if not os.path.isfile(path):
        return 0
    with open(path, "r+") as f:
        lines = f.read().splitlines()
        kept = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("iteration", -1) >= start_iter:
                continue
            kept.append(line)
        if len(kept) != len(lines):
            f.seek(0)
            f.write("".join(line + "\n" for line in kept))
            f.truncate()
    return len(lines) - len(kept)


class Trainer(DefaultTrainer):
    """The project's trainer; use it like Detectron2's ``DefaultTrainer``::

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    trainer.train()
    """

    def __init__(self, cfg):
        # DefaultTrainer.__init__, with the CPU-capable DDP, the resumable loader and the
        # project's checkpointer holding optimizer and scheduler.
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())

        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = self._wrap_ddp(model)
        guard = NonFiniteLossGuard(cfg.SOLVER.NONFINITE_LOSS, cfg.SOLVER.NONFINITE_MAX_SKIPS)
        amp = amp_policy_from_config(cfg)
        if amp is None:
            self._trainer = GuardedSimpleTrainer(model, data_loader, optimizer, guard)
        else:
            logger.info("Mixed precision training (SOLVER.AMP): %s", amp)
            if amp.emulated:
                logger.warning(
                    "SOLVER.AMP.ENABLED with %s, but this CPU has no native kernels for that "
                    "dtype (bfloat16 needs AVX512-BF16 or AMX, float16 AVX512-FP16 or AMX-FP16): "
                    "its convolutions run slow fallbacks, so a step takes longer than in float32",
                    amp,
                )
            self._trainer = GuardedAMPTrainer(model, data_loader, optimizer, guard, amp)

        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = ProjectCheckpointer(
            model,
            cfg.OUTPUT_DIR,
            trusted=cfg.MODEL.WEIGHTS_TRUSTED,
            trainer=weakref.proxy(self),
            optimizer=optimizer,
            scheduler=self.scheduler,
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.rng_states = None
        self._pending_rng_states = None
        self._pending_metric_history = None
        self.register_hooks(self.build_hooks())

    @staticmethod
    def _wrap_ddp(model):
        if comm.get_world_size() > 1 and next(model.parameters()).device.type == "cpu":
            return DistributedDataParallel(model, broadcast_buffers=False)
        return create_ddp_model(model, broadcast_buffers=False)

    # ------------------------------------------------------------------ exact resume
    def state_dict(self):
        """Iteration and hook states (Detectron2's), plus what exact resume needs."""
        ret = super().state_dict()
        sampler = self.data_loader.batch_sampler
        ret["data_stream"] = {"seed": sampler.seed, "world_size": sampler.world_size}
        ret["rng"] = self.rng_states or [capture_rng_state()]
        storage = getattr(self, "storage", None)
        if storage is not None:
            hints = storage.smoothing_hints()
            ret["metric_history"] = {
                name: buffer.values()[-METRIC_HISTORY:]
                for name, buffer in storage.histories().items()
                if hints.get(name)
            }
        if isinstance(self._trainer, AMPTrainer):
            ret["grad_scaler"] = self._trainer.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        stream = state_dict.get("data_stream")
        if stream is not None:
            sampler = self.data_loader.batch_sampler
            if stream["world_size"] != comm.get_world_size():
                logger.warning(
                    "Resuming with %d processes a run trained with %d: the data order is not "
                    "the one the uninterrupted run would have seen",
                    comm.get_world_size(),
                    stream["world_size"],
                )
            sampler.seed = stream["seed"]
            self.data_loader.dataset.seed = stream["seed"]
        self._pending_rng_states = state_dict.get("rng")
        self._pending_metric_history = state_dict.get("metric_history")
        # Newer Detectron2 saves the step trainer's state as "_trainer" and has loaded it above.
        if isinstance(self._trainer, GuardedAMPTrainer) and "_trainer" not in state_dict:
            self._trainer.load_grad_scaler_state(state_dict.get("grad_scaler"))

    def resume_or_load(self, resume=True):
        """Load the last checkpoint (``resume`` and one exists: everything, and the data loader
        and random states continue where they stopped) or ``MODEL.WEIGHTS`` (model only)."""
        self._pending_rng_states = None
        if resume and comm.is_main_process():
            self.checkpointer.remove_incomplete_files()
        super().resume_or_load(resume=resume)
        if self.start_iter > 0:
            self.data_loader.batch_sampler.set_start_iter(self.start_iter)
            self._restart_data_loader_iterator()
            if comm.is_main_process():
                metrics = os.path.join(self.cfg.OUTPUT_DIR, "metrics.json")
                dropped = drop_metrics_from(metrics, self.start_iter)
                if dropped:
                    logger.info(
                        "Resuming at iteration %d: removed %d later record(s) from %s",
                        self.start_iter,
                        dropped,
                        metrics,
                    )
        if self._pending_rng_states:
            states = self._pending_rng_states
            rank = comm.get_rank()
            restore_rng_state(states[rank] if rank < len(states) else states[0])
            self._pending_rng_states = None

    def _restart_data_loader_iterator(self):
        trainer = self._trainer
        if isinstance(getattr(type(trainer), "_data_loader_iter", None), property):
            trainer._data_loader_iter_obj = None  # newer Detectron2 creates it lazily
        else:
            trainer._data_loader_iter = iter(trainer.data_loader)

    def build_hooks(self):
        ret = super().build_hooks()
        # Before the checkpointer (main process) / the evaluation (every process).
        position = next(
            i
            for i, h in enumerate(ret)
            if isinstance(h, (hooks.PeriodicCheckpointer, hooks.EvalHook))
        )
        ret.insert(position, _RNGSnapshot(self.cfg.SOLVER.CHECKPOINT_PERIOD))
        return ret

    def before_train(self):
        history = self._pending_metric_history
        if history:  # put back the smoothing windows of the resumed run
            for name, values in history.items():
                for value, iteration in values:
                    self.storage.histories()[name].update(value, iteration)
                self.storage.smoothing_hints()[name] = True
            self._pending_metric_history = None
        super().before_train()

    def train(self):
        """Run training; returns the last evaluation results (None if there were none).

        Raises:
            DataLoaderWorkerError: a data-loader worker died; names the sample it was mapping.
        """
        loader = self.data_loader
        progress = getattr(loader, "progress", None)
        if progress is None:
            super().train()
        else:
            with report_worker_failures(progress, loader.records):
                super().train()
        return getattr(self, "_last_eval_results", None)

    # ------------------------------------------------------------------ builders
    @classmethod
    def build_model(cls, cfg):
        model = super().build_model(cfg)
        if needs_cpu_syncbn(cfg.MODEL.DEVICE):
            model = convert_sync_batchnorm_for_cpu(model)
        return model

    @classmethod
    def build_optimizer(cls, cfg, model):
        """SGD/AdamW with per-group LR and weight decay (:mod:`projects.engine.optimizer`)."""
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        """``SOLVER.LR_SCHEDULER_NAME``: WarmupMultiStepLR, WarmupCosineLR or WarmupPolyLR."""
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg):
        """The resumable loader with the mapper named by ``INPUT.DATASET_MAPPER_NAME``."""
        return build_resumable_train_loader(cfg, build_dataset_mapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(
            cfg, dataset_name, mapper=build_dataset_mapper(cfg, is_train=False)
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        """Evaluators by the dataset's ``evaluator_type`` metadata: ``"coco"`` (COCOEvaluator, with
        boundary AP beside mask AP unless ``TEST.BOUNDARY_EVAL.ENABLED`` is off),
        ``"sem_seg"`` (SemSegEvaluator), or a list/``+``-joined string of both.

        Results go to ``OUTPUT_DIR/inference/<dataset_name>``.

        Raises:
            NotImplementedError: a dataset without a known evaluator type (Detectron2's
                ``test`` then skips it with a warning).
        """
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        kind = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
        kinds = kind if isinstance(kind, (list, tuple)) else str(kind).replace("+", ",").split(",")
        evaluators = []
        for k in (k.strip() for k in kinds):
            if k == "coco":
                evaluators.append(
                    COCOBoundaryEvaluator.from_config(cfg, dataset_name, output_dir=output_folder)
                )
            elif k == "sem_seg":
                evaluators.append(SemSegEvaluator(dataset_name, output_dir=output_folder))
        if not evaluators:
            raise NotImplementedError(
                f"No evaluator for dataset {dataset_name!r} with evaluator_type={kind!r}; "
                "supported: 'coco', 'sem_seg'"
            )
        return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """Detectron2's ``test``, run with its own random stream so that evaluating during
        training does not change the training's random numbers."""
        with isolated_rng():
            return super().test(cfg, model, evaluators)
