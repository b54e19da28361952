"""Data-mixing laws: fit loss against mixture proportions, find the best mixture, write rates.

  laws.py      the laws (Ye et al. 2024 exponential; 1-D tradeoff and quadratic; step law)
  fit.py       variable-projection fitting with restarts; R^2 and leave-one-out error
  design.py    which coordinates a sweep's mixtures determine (whole simplex or one line)
  optimum.py   objective, constraints (bounds, fixed ratios) and the constrained search
  bootstrap.py residual-bootstrap interval of the optimum
  analyze.py   runs -> fits -> optimum -> report (rates.json content)
  steps.py     nested step scaling law L(S) = E + B/S^beta
  runs.py      runs.jsonl I/O (rates files: heph_jax/data/pipeline/rates.py)
  sweep.py     the sweep runner;  plot.py  the figure;  __main__.py  the CLI
"""
