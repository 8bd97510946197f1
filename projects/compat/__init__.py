"""What the registry's Detectron2 v0.6 lacks on today's stack.

* :mod:`.stack`: fixes for Pillow >= 10, numpy >= 1.24 and setuptools >= 81;
* :mod:`.portable_c`: ``detectron2._C`` in portable PyTorch (installed into the ``detectron2``
  wheel by ``tools/install_detectron2.py``).
"""
