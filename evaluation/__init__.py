"""GuardGrid's evaluation: a trace-driven simulation that runs the real extender and predictor code, and the
demo (`make demo`). Start at evaluation/run.py; the model is documented in docs/evaluation.md."""
