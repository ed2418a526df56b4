"""Base model, unlearning methods and the retrained oracle for class-conditional DDPMs."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network at run time, ever
