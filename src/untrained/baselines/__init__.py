"""Classical reconstructions that tasks report next to the network's (``baseline_<name>`` metrics).

They sit below tasks and methods: a task computes its baselines from its operator and measurement.
"""

MAX_BASELINE_STEPS = 100_000  # iterations of a classical baseline (TV, CG; the defaults are 10 to 150)
