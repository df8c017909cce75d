"""Experiments over many runs: the paper's comparison grid (``hapruned reproduce``), sensitivity
sweeps over training settings (``hapruned sweep``), their executors (a local process pool or Ray) and
their reports (``hapruned report``: Table I, Fig. 1, Fig. 2)."""
