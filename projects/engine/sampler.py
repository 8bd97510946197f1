"""A training data loader whose position is part of the training state.

Detectron2 v0.6's ``TrainingSampler`` restarts its index stream when training resumes, and its
``AspectRatioGroupedDataset`` batches images after loading them, so the batch of iteration ``k``
cannot be found without loading every earlier image. Here everything that decides a batch is
computed from indices alone:

* :class:`ResumableBatchSampler` draws the same infinite index stream as ``TrainingSampler``
  (one seeded permutation per epoch, or ``RepeatFactorTrainingSampler``'s repeated indices), takes
  this rank's share, groups indices by the aspect ratio recorded in the dataset dicts, and can
  start at any iteration by skipping batches of indices (no image is read);
* :class:`SeededMapDataset` maps each sample under its own random seed, derived from the stream
  seed, the rank and the sample's position in the stream, so augmentations do not depend on which
  worker maps the sample or on how many samples it mapped before.
"""

import itertools
import logging
from collections import defaultdict

import torch
import torch.utils.data as torchdata
from detectron2.data import get_detection_dataset_dicts
from detectron2.data.common import DatasetFromList
from detectron2.data.samplers import RepeatFactorTrainingSampler
from detectron2.utils import comm

from .rng import isolated_rng
from .worker_faults import ReportingDataLoader, WorkerProgress

logger = logging.getLogger(__name__)

_MAX_MAP_ATTEMPTS = 20


def sample_seed(seed, rank, position):
    """The random seed of the sample at ``position`` in ``rank``'s stream (deterministic)."""
    return (seed * 1_000_003 + rank * 7_919 + position * 104_729) % (2**31 - 1)


class ResumableBatchSampler(torchdata.Sampler):
    """Infinite stream of this rank's batches of ``(dataset_index, stream_position)`` pairs.

    Args:
        num_samples (int): size of the dataset.
        batch_size (int): images per batch on this rank.
        seed (int): seed of the index stream; it must be the same on every rank.
        rank, world_size (int): this process's share is every ``world_size``-th index.
        group_ids (list[int] or None): aspect-ratio group of each sample; a batch holds one
            group only. None: one group.
        repeat_factors (Tensor or None): float repeat factor per sample
            (``RepeatFactorTrainingSampler``); None: every sample once per epoch.
        shuffle (bool): shuffle each epoch.
    """

    def __init__(
        self,
        num_samples,
        batch_size,
        seed,
        *,
        rank=0,
        world_size=1,
        group_ids=None,
        repeat_factors=None,
        shuffle=True,
    ):
        if num_samples <= 0:
            raise ValueError("The training dataset is empty")
        if batch_size <= 0:
            raise ValueError(f"Batch size per process must be > 0, got {batch_size}")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.group_ids = group_ids
        self.repeat_factors = repeat_factors
        self.shuffle = shuffle
        self.start_iter = 0

    def set_start_iter(self, start_iter):
        """Make the next ``iter(self)`` begin with the batch of iteration ``start_iter``."""
        self.start_iter = int(start_iter)

    def _epoch_indices(self, generator):
        if self.repeat_factors is None:
            indices = torch.arange(self.num_samples)
        else:
            int_part = torch.trunc(self.repeat_factors)
            frac_part = self.repeat_factors - int_part
            rands = torch.rand(len(frac_part), generator=generator)
            counts = (int_part + (rands < frac_part).float()).long()
            indices = torch.repeat_interleave(torch.arange(self.num_samples), counts)
        if self.shuffle:
            indices = indices[torch.randperm(len(indices), generator=generator)]
        return indices.tolist()

    def _global_stream(self):
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        while True:
            epoch = self._epoch_indices(generator)
            if not epoch:
                raise ValueError("Repeat factors gave an empty epoch")
            yield from epoch

    def _batches(self):
        mine = itertools.islice(self._global_stream(), self.rank, None, self.world_size)
        buckets = defaultdict(list)
        for position, index in enumerate(mine):
            group = 0 if self.group_ids is None else self.group_ids[index]
            bucket = buckets[group]
            bucket.append((index, position))
            if len(bucket) == self.batch_size:
                yield bucket[:]
                del bucket[:]

    def __iter__(self):
        return itertools.islice(self._batches(), self.start_iter, None)


class SeededMapDataset(torchdata.Dataset):
    """Map ``dataset[index]`` with ``mapper`` under the random seed of the sample's position.

    The global random states are saved before and restored after each sample, so mapping in
    the main process (``NUM_WORKERS: 0``) does not disturb the model's random stream. When the
    mapper returns None (an image it cannot use), another index is drawn from the same seed.
    Each worker records the index it is mapping in ``progress``, so that a worker that dies is
    reported with its sample (:mod:`projects.engine.worker_faults`).
    """

    def __init__(self, dataset, mapper, seed, rank=0, progress=None):
        self.dataset = dataset
        self.mapper = mapper
        self.seed = seed
        self.rank = rank
        self.progress = progress or WorkerProgress(0)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        index, position = key
        with isolated_rng(sample_seed(self.seed, self.rank, position)):
            generator = torch.Generator().manual_seed(sample_seed(self.seed, self.rank, position))
            for _ in range(_MAX_MAP_ATTEMPTS):
                with self.progress.mapping(index):
                    data = self.mapper(self.dataset[index])
                if data is not None:
                    return data
                logger.warning("Mapper returned None for sample %d; drawing another one", index)
                index = int(torch.randint(len(self.dataset), (1,), generator=generator))
        raise RuntimeError(f"The mapper returned None for {_MAX_MAP_ATTEMPTS} samples in a row")


def _trivial_batch_collator(batch):
    return batch


def aspect_ratio_group_ids(dataset_dicts):
    """0 for landscape (width > height), 1 otherwise; None if a dict lacks width/height."""
    if not all("width" in d and "height" in d for d in dataset_dicts):
        logger.warning("Dataset dicts lack width/height: aspect-ratio grouping is off")
        return None
    return [0 if d["width"] > d["height"] else 1 for d in dataset_dicts]


def training_seed(cfg):
    """The index-stream seed: ``SEED`` if set, else one random seed shared by all ranks."""
    return cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()


def build_resumable_train_loader(cfg, mapper, seed=None):
    """The training data loader of Detectron2's ``build_detection_train_loader`` (same datasets,
    filtering, samplers and batch size per process) built from the resumable pieces above.

    Args:
        cfg (CfgNode): the full config.
        mapper (callable): dataset dict -> model input.
        seed (int or None): index-stream seed; None: :func:`training_seed`.

    Returns:
        ReportingDataLoader: yields lists of mapped dicts; its ``batch_sampler`` is the
        :class:`ResumableBatchSampler`; a worker that dies is reported with its sample.
    """
    dicts = get_detection_dataset_dicts(
        cfg.DATASETS.TRAIN,
        filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
        min_keypoints=(
            cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE if cfg.MODEL.KEYPOINT_ON else 0
        ),
        proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
    )
    world_size, rank = comm.get_world_size(), comm.get_rank()
    total = cfg.SOLVER.IMS_PER_BATCH
    if total <= 0 or total % world_size != 0:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH={total} must be a positive multiple of the number of "
            f"processes ({world_size})"
        )
    name = cfg.DATALOADER.SAMPLER_TRAIN
    if name == "TrainingSampler":
        repeat_factors = None
    elif name == "RepeatFactorTrainingSampler":
        repeat_factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
            dicts, cfg.DATALOADER.REPEAT_THRESHOLD
        )
    else:
        raise ValueError(
            f"DATALOADER.SAMPLER_TRAIN={name!r} is not supported by the resumable loader; "
            "use TrainingSampler or RepeatFactorTrainingSampler"
        )
    seed = training_seed(cfg) if seed is None else seed
    logger.info("Training sampler %s, stream seed %d", name, seed)
    sampler = ResumableBatchSampler(
        len(dicts),
        total // world_size,
        seed,
        rank=rank,
        world_size=world_size,
        group_ids=aspect_ratio_group_ids(dicts) if cfg.DATALOADER.ASPECT_RATIO_GROUPING else None,
        repeat_factors=repeat_factors,
    )
    records = DatasetFromList(dicts)
    progress = WorkerProgress(cfg.DATALOADER.NUM_WORKERS)
    dataset = SeededMapDataset(records, mapper, seed, rank, progress)
    return ReportingDataLoader(
        dataset,
        progress=progress,
        records=records,
        batch_sampler=sampler,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        collate_fn=_trivial_batch_collator,
        # Its own generator: creating an iterator must not consume the global torch stream.
        generator=torch.Generator().manual_seed(seed),
    )
