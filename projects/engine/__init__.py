"""Training and evaluation engine: trainer, launch (also on CPU), checkpointing, hooks.

* :class:`~.trainer.Trainer`: Detectron2's ``DefaultTrainer`` with the project's optimizer,
  schedules, evaluators, mapper registry and exact resume;
* :func:`~.launch.launch`: Detectron2's launch on CUDA machines, gloo CPU processes elsewhere;
* :class:`~.checkpoint.ProjectCheckpointer`: safe loading of many formats, atomic saving;
* :func:`~.config_keys.config_key_suggestions`: unknown config keys named with the nearest ones.

Submodules are imported lazily by their users; importing this package imports no Detectron2
engine code.
"""
