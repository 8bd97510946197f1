"""Name the sample a data-loader worker was mapping when it died.

When a worker process dies (killed by the OOM killer, a segfault in a decoder, ``SIGKILL``),
PyTorch raises ``RuntimeError: DataLoader worker (pid X) is killed by signal`` or ``... exited
unexpectedly``, from the main process's ``SIGCHLD`` handler or from the loader's queue, with
no word of the data. Here each worker records in shared memory which sample it is mapping, and
the error is re-raised as :class:`DataLoaderWorkerError` naming the sample (dataset index,
``file_name``, ``image_id``).

* :class:`WorkerProgress`: a shared table, one slot per worker; the dataset calls
  :meth:`WorkerProgress.mapping` around each sample.
* :class:`ReportingDataLoader`: a ``DataLoader`` whose iterators convert the error.
* :func:`report_worker_failures`: the same conversion around any code (the trainer wraps its
  whole loop with it, since the ``SIGCHLD`` handler can raise anywhere in the main thread).
"""

import contextlib

import torch
import torch.utils.data as torchdata

__all__ = [
    "DataLoaderWorkerError",
    "ReportingDataLoader",
    "WorkerProgress",
    "is_worker_failure",
    "report_worker_failures",
]

_IDLE = -1


class DataLoaderWorkerError(RuntimeError):
    """A data-loader worker died; the message names the sample(s) it was mapping."""


def is_worker_failure(error):
    """Whether ``error`` is PyTorch's report of a data-loader worker that died."""
    return isinstance(error, RuntimeError) and "DataLoader worker (pid" in str(error)


class WorkerProgress:
    """Which dataset index each worker process is mapping, in shared memory.

    Args:
        num_workers (int): worker processes of the loader (0: nothing is tracked).
    """

    def __init__(self, num_workers):
        self._slots = torch.full((max(num_workers, 1),), _IDLE, dtype=torch.int64)
        self._slots.share_memory_()
        self._tracked = num_workers > 0

    @contextlib.contextmanager
    def mapping(self, index):
        """Mark ``index`` as being mapped by this worker for the duration of the block."""
        info = torchdata.get_worker_info() if self._tracked else None
        if info is None or info.id >= len(self._slots):
            yield
            return
        self._slots[info.id] = index
        try:
            yield
        finally:
            self._slots[info.id] = _IDLE

    def in_progress(self):
        """``{worker_id: dataset_index}`` of the samples being mapped now."""
        return {w: int(i) for w, i in enumerate(self._slots.tolist()) if i != _IDLE}


def describe_samples(progress, dataset):
    """One line per sample in progress: worker, dataset index, and the dict's file and id."""
    lines = []
    for worker, index in sorted(progress.in_progress().items()):
        try:
            record = dataset[index]
        except Exception:  # describing must not fail
            record = None
        what = f"dataset index {index}"
        if isinstance(record, dict):
            what += f" (file_name={record.get('file_name')!r}, image_id={record.get('image_id')!r})"
        lines.append(f"worker {worker} was mapping {what}")
    return lines


def _worker_error(error, progress, dataset):
    lines = describe_samples(progress, dataset)
    if not lines:
        lines = ["no worker was mapping a sample (it died between samples or while collating)"]
    return DataLoaderWorkerError(
        f"{error}\n" + "\n".join(lines) + "\nRun with DATALOADER.NUM_WORKERS 0 to see the "
        "error in the main process (a crash in a decoder, or memory: check the kernel log)."
    )


@contextlib.contextmanager
def report_worker_failures(progress, dataset):
    """Re-raise a dead worker's ``RuntimeError`` raised in the block as
    :class:`DataLoaderWorkerError` naming the samples in ``progress``.

    Args:
        progress (WorkerProgress): the loader's table.
        dataset: indexable by dataset index, giving dataset dicts (for the file name).
    """
    try:
        yield
    except DataLoaderWorkerError:
        raise
    except RuntimeError as e:
        if not is_worker_failure(e):
            raise
        raise _worker_error(e, progress, dataset) from e


class _ReportingIterator:
    """Starts the loader's own iterator (and so its workers) at the first ``next``."""

    def __init__(self, start, progress, dataset):
        self._start = start
        self._iterator = None
        self._progress = progress
        self._dataset = dataset

    def __iter__(self):
        return self

    def __next__(self):
        with report_worker_failures(self._progress, self._dataset):
            if self._iterator is None:
                self._iterator = self._start()
            return next(self._iterator)


class ReportingDataLoader(torchdata.DataLoader):
    """A ``DataLoader`` whose iterators raise :class:`DataLoaderWorkerError` for a dead worker.

    Its iterators start their worker processes at the first ``next``, not at ``iter``: a
    trainer creates its iterator when it is built, and a worker dying then would raise from
    the ``SIGCHLD`` handler in whatever code the main process is running.

    Args:
        progress (WorkerProgress): the table the dataset's workers write.
        records: the dataset dicts by index, to name the file in the error.
        *args, **kwargs: as ``torch.utils.data.DataLoader``.
    """

    def __init__(self, *args, progress, records, **kwargs):
        super().__init__(*args, **kwargs)
        self.progress = progress
        self.records = records

    def __iter__(self):
        return _ReportingIterator(super().__iter__, self.progress, self.records)
