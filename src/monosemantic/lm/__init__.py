"""lm stage: the subject model.

- `model.py`: `load_model(name_or_path)` -> `SubjectModel` (a frozen HF model + TransformerLens
  hook sites; `run` captures/edits many sites in one pass, `unembed` is the logit lens).
- `sites.py` / `hooks.py`: the per-family site tables and the hooks that read or replace them.
- `tokenizer.py`, `training.py`, `checkpoint.py`, `card.py`: `monosemantic lm train`.
- `tiny.py`: tiny random models of every family, saved like real checkpoints (for tests).
- `shipped.py`: the storyworld LM shipped in `shipped/storyworld-lm/`.
"""
