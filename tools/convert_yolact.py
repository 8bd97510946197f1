#!/usr/bin/env python
"""Convert the YOLACT authors' checkpoints for MODEL.WEIGHTS: see :mod:`yolact.convert`."""

import sys

from yolact.convert import main

if __name__ == "__main__":
    sys.exit(main())
