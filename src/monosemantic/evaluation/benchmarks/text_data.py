"""Texts with labels, and the activations of the subject model on them (per token and pooled).

Shared by the sequence-level benchmarks: sparse probing on `[evaluate].probe_datasets`, and
SCR/TPP on storyworld stories. Each text is tokenized on its own with the tokenizer's BOS in
front (as harvest packs windows), truncated to the model's context; the BOS position is dropped
before pooling.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from monosemantic.corpus.windows import bos_eos_ids
from monosemantic.utils.errors import ConfigError, DataError

if TYPE_CHECKING:
    from monosemantic.config.evaluate import ProbeDataset
    from monosemantic.lm.model import SubjectModel

_FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def load_labelled_texts(spec: ProbeDataset) -> tuple[list[str], list[Any], str]:
    """(texts, labels, task name) of a local file or a Hugging Face dataset."""
    import datasets

    path = spec.path.removeprefix("hf:")
    local = Path(path)
    name = spec.name or (local.stem if local.suffix else path.replace("/", "_"))
    try:
        if local.suffix in _FORMATS:
            if not local.exists():
                raise ConfigError(f"probe dataset {spec.path!r} does not exist; fix evaluate.probe_datasets")
            ds = datasets.load_dataset(_FORMATS[local.suffix], data_files=str(local), split="train")
        else:
            ds = datasets.load_dataset(path, split=spec.split)
    except (FileNotFoundError, ValueError, ConnectionError) as e:
        raise ConfigError(f"cannot load probe dataset {spec.path!r}: {e}") from None
    for col in (spec.text_column, spec.label_column):
        if col not in ds.column_names:
            raise ConfigError(
                f"probe dataset {spec.path!r} has no column {col!r} (it has {', '.join(ds.column_names)}); "
                "set text_column / label_column"
            )
    n = min(spec.max_rows, len(ds))
    rows = ds.select(range(n))
    texts = [str(t) for t in rows[spec.text_column]]
    labels = list(rows[spec.label_column])
    if len(set(labels)) < 2:
        raise DataError(
            f"probe dataset {spec.path!r} has one label value in its first {n} rows; it needs two"
        )
    return texts, labels, name


@torch.inference_mode()
def per_text_activations(
    model: SubjectModel, texts: list[str], site: str | list[str], batch: int = 32
) -> list[Tensor] | dict[str, list[Tensor]]:
    """[n_tokens, d] float32 activations at `site` for each text (BOS dropped), on the CPU.

    Texts run in right-padded batches (a causal model's outputs at real positions do not see the
    padding). With a list of sites, a dict site -> list.
    """
    sites = [site] if isinstance(site, str) else list(dict.fromkeys(site))  # an SAE reads and writes one site
    bos, _ = bos_eos_ids(model.tokenizer)
    cfg = model.hf.config
    limit = int(getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", 512))
    encoded = [
        [bos, *model.tokenizer(t, add_special_tokens=False, verbose=False)["input_ids"][: limit - 1]]
        for t in texts
    ]
    out: dict[str, list[Tensor]] = {s: [] for s in sites}
    for i in range(0, len(encoded), batch):
        chunk = encoded[i : i + batch]
        width = max(len(e) for e in chunk)
        ids = torch.full((len(chunk), width), bos, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, e in enumerate(chunk):
            ids[r, : len(e)] = torch.tensor(e)
            mask[r, : len(e)] = 1
        run = model.run(ids, attention_mask=mask, capture=sites, stop_at_layer=model.stop_layer(sites))
        for s in sites:
            acts = run.activations[s].float().cpu()
            for r, e in enumerate(chunk):
                a = acts[r, 1 : len(e)] if len(e) > 1 else acts[r, :1]
                out[s].append(a.clone())
    return out[site] if isinstance(site, str) else out
