"""evaluate stage: how good is a dictionary?

- `metrics.py`: reconstruction and sparsity metrics, streamed over the evaluated tokens.
- `spliced.py`: next-token CE/KL with the reconstruction spliced into the model.
- `toy.py`: ground truth A, planted directions in toy superposition data (MMCS, recovery).
- `concepts.py`: ground truth B, detection of storyworld's planted concepts (AUROC, F1, purity).
- `run.py`: `evaluate(cfg)`, all of the above on a checkpoint or sweep; `report.py`/`plots.py` write it out.
"""
