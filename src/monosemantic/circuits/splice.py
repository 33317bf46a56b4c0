"""`SpliceModel`: the subject model with dictionaries spliced in, for notebooks.

The SAELens `HookedSAETransformer` workflow on our pieces: `run_with_dictionaries` replaces each
dictionary's output site by its reconstruction (the same edits `evaluate`'s spliced metrics use,
through `SubjectModel.run`), `run_with_cache` also returns every site's activations and each
dictionary's input, codes and output, and `to_tokens` adds BOS exactly as harvest does (a
dictionary trained on BOS-led windows reconstructs BOS-less text much worse, so running one on
such tokens warns). Dictionaries are addressed by the names the feature store uses.

    sm = SpliceModel.from_config("configs/demo.toml")
    logits, cache = sm.run_with_cache("Tom the dog found a red ball.")
    cache.codes["blocks.1.mlp.hook_in-topk"]          # [1, T, d_sae]
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from monosemantic.config import Config, load_config
from monosemantic.corpus.windows import bos_eos_ids, special_token_mask, text_tokens
from monosemantic.dictionaries.base import Dictionary
from monosemantic.dictionaries.io import dictionary_names, find_dictionaries, load_dictionary
from monosemantic.dictionaries.splice import compose, splice_edits
from monosemantic.lm.model import SubjectModel, load_model
from monosemantic.lm.token_display import TokenDisplay
from monosemantic.store.feature_store import FeatureStore, feature_store_path
from monosemantic.utils.errors import MonosemanticError

Tokens = str | Tensor | Sequence[int]


@dataclass
class SpliceCache:
    """What one run saw: `activations[site]` as they flowed (edited where spliced), and per
    dictionary name its `inputs`, `codes` [B, T, d_sae] and `outputs` (reconstructions)."""

    tokens: Tensor
    activations: dict[str, Tensor] = field(default_factory=dict)
    inputs: dict[str, Tensor] = field(default_factory=dict)
    codes: dict[str, Tensor] = field(default_factory=dict)
    outputs: dict[str, Tensor] = field(default_factory=dict)


class SpliceModel:
    """A frozen `SubjectModel`, named dictionaries (eval mode, no grads) and an optional feature store."""

    def __init__(
        self, model: SubjectModel, dictionaries: Mapping[str, Dictionary], store: FeatureStore | None = None
    ) -> None:
        self.model = model
        self.dictionaries = {name: d.eval().requires_grad_(False) for name, d in dictionaries.items()}
        self.store = store
        self._display = TokenDisplay(model.tokenizer)

    @classmethod
    def load(
        cls,
        model: str | Path | SubjectModel = "storyworld",
        dictionaries: str | Path | Iterable[str | Path] = (),
        store: str | Path | None = None,
        device: str | None = None,
    ) -> SpliceModel:
        """Model by name or folder; dictionaries from checkpoint or sweep folders (named as analyze
        names them); `store` a features.db."""
        lm = model if isinstance(model, SubjectModel) else load_model(model, device=device)
        roots = [dictionaries] if isinstance(dictionaries, str | Path) else list(dictionaries)
        paths = [p for r in roots for p in find_dictionaries(r)]
        dics = {
            n: load_dictionary(p, device=str(lm.device), model=lm)
            for n, p in zip(
                dictionary_names(paths, roots[0] if len(roots) == 1 else None), paths, strict=True
            )
        }
        return cls(lm, dics, FeatureStore(store) if store is not None else None)

    @classmethod
    def from_config(cls, cfg: Config | str | Path) -> SpliceModel:
        """The model of `[model]`, every dictionary under `train.out`, and `analyze.out/features.db`."""
        cfg = cfg if isinstance(cfg, Config) else load_config(cfg)
        db = feature_store_path(cfg.analyze.out)
        lm = load_model(cfg.model.name, dtype=cfg.model.dtype, revision=cfg.model.revision)
        return cls.load(lm, cfg.train.out, db if db.is_file() else None)

    # ---- tokens ---------------------------------------------------------------------------------
    def _prepend_default(self) -> bool:
        """BOS if any loaded dictionary was trained with it (the harvest default), else as they were."""
        flags = [d.cfg.metadata.get("prepend_bos") for d in self.dictionaries.values()]
        return True if not flags or None in flags else any(flags)

    def to_tokens(self, text: str, prepend_bos: bool | None = None) -> Tensor:
        """LongTensor [1, T] as harvest tokenizes `text` (BOS first unless `prepend_bos=False`)."""
        bos = self._prepend_default() if prepend_bos is None else prepend_bos
        return text_tokens(self.model.tokenizer, text, bos).unsqueeze(0)

    def to_str_tokens(self, text_or_tokens: Tokens, prepend_bos: bool | None = None) -> list[str]:
        """Display strings with the tokenizer's spacing (' the', 'lt' after 'sha'), BOS as itself."""
        return self._display.many(self._tokens(text_or_tokens, prepend_bos)[0].tolist())

    def _tokens(self, x: Tokens, prepend_bos: bool | None = None) -> Tensor:
        if isinstance(x, str):
            return self.to_tokens(x, prepend_bos)
        t = torch.as_tensor(x, dtype=torch.long)
        return t.unsqueeze(0) if t.dim() == 1 else t

    # ---- runs -----------------------------------------------------------------------------------
    def _pick(self, dictionaries: str | Iterable[str] | None) -> dict[str, Dictionary]:
        names = (
            list(self.dictionaries)
            if dictionaries is None
            else [dictionaries]
            if isinstance(dictionaries, str)
            else list(dictionaries)
        )
        missing = [n for n in names if n not in self.dictionaries]
        if missing:
            raise MonosemanticError(
                f"no dictionary named {missing[0]!r}; loaded: {', '.join(self.dictionaries) or 'none'}"
            )
        return {n: self.dictionaries[n] for n in names}

    def _check_bos(self, tokens: Tensor, dics: Mapping[str, Dictionary]) -> None:
        bos = bos_eos_ids(self.model.tokenizer)[0]
        if bool((tokens[:, 0] == bos).all()):
            return
        trained = [n for n, d in dics.items() if d.cfg.metadata.get("prepend_bos")]
        if trained:
            warnings.warn(
                f"{trained[0]} was trained on windows that start with BOS, but these tokens do not; "
                "its reconstructions will be much worse. Use to_tokens(text) or put the BOS id first.",
                stacklevel=4,  # the caller of run_with_dictionaries / run_with_cache
            )

    def _edits(self, tokens: Tensor, dics: Mapping[str, Dictionary], splice: bool) -> tuple[dict, dict]:
        """Composed `SubjectModel.run` edits of every dictionary, and the per-dictionary records.

        Like `evaluate`, BOS/EOS/PAD positions keep their clean activation when the dictionary's
        data excluded them; `splice=False` encodes without replacing anything."""
        special = special_token_mask(tokens, self.model.tokenizer)
        per_dictionary: list[dict[str, Any]] = []
        records: dict[str, dict[str, Tensor]] = {}
        for name, d in dics.items():
            if d.cfg.hook_name is None:
                raise MonosemanticError(
                    f"{name} has no hook_name in its cfg.json; cannot tell where it reads"
                )
            include = d.cfg.metadata.get("special_tokens", "exclude") == "include"
            keep = (
                (torch.ones_like(special) if include else ~special) if splice else torch.zeros_like(special)
            )
            records[name] = {}
            per_dictionary.append(splice_edits(d, keep, record=records[name]))
        return compose(per_dictionary), records

    def _run(
        self, x: Tokens, dictionaries: str | Iterable[str] | None, splice: bool, capture: Sequence[str]
    ) -> tuple[Tensor, SpliceCache]:
        tokens = self._tokens(x)
        dics = self._pick(dictionaries)
        self._check_bos(tokens, dics)
        edits, records = self._edits(tokens, dics, splice)
        with torch.no_grad():  # not inference_mode: users edit and reuse what the cache holds
            out = self.model.run(tokens, capture=capture, edits=edits)
        if out.logits is None:
            raise MonosemanticError(f"{self.model.name} has no language-model head; it returns no logits")
        cache = SpliceCache(tokens, dict(out.activations))
        for name, r in records.items():
            cache.inputs[name], cache.codes[name], cache.outputs[name] = r["input"], r["codes"], r["output"]
        return out.logits, cache

    def run_with_dictionaries(self, x: Tokens, dictionaries: str | Iterable[str] | None = None) -> Tensor:
        """Logits [B, T, vocab] with each dictionary's output site replaced by its reconstruction
        (all loaded dictionaries when `dictionaries` is None; text gets BOS as harvest adds it)."""
        return self._run(x, dictionaries, True, ())[0]

    def run_with_cache(
        self,
        x: Tokens,
        dictionaries: str | Iterable[str] | None = None,
        splice: bool = True,
        sites: Sequence[str] | None = None,
    ) -> tuple[Tensor, SpliceCache]:
        """Logits and a `SpliceCache` of every per-token hook site (or `sites`: attention scores and
        patterns on request, since forming them needs eager attention) plus each dictionary's input, codes and
        output. `splice=False` runs the plain model and only encodes."""
        if sites is None:
            not_per_token = ("attn.hook_pattern", "attn.hook_attn_scores")
            sites = [s for s in self.model.site_names() if not s.endswith(not_per_token)]
        return self._run(x, dictionaries, splice, sites)

    # ---- features -------------------------------------------------------------------------------
    def feature(self, dictionary: str, idx: int) -> dict[str, Any]:
        """The store row of a feature (explanation, density, logit lens, ...), by dictionary name."""
        if self.store is None:
            raise MonosemanticError("no feature store loaded; run `monosemantic analyze` and pass store=")
        return self.store.feature(self.store.dictionary(dictionary)["id"], idx)

    def top_features(self, text: Tokens, dictionary: str, k: int = 10) -> list[dict[str, Any]]:
        """The `k` features of `dictionary` with the largest activation anywhere in `text` (plain
        model, BOS excluded): feature, activation, position, token and, with a store, explanation."""
        _, cache = self.run_with_cache(text, dictionary, splice=False, sites=())
        codes = cache.codes[dictionary][0].float()
        special = special_token_mask(cache.tokens[0], self.model.tokenizer)
        codes[special] = 0.0
        best, pos = codes.max(0)
        top = best.topk(min(k, best.numel()))
        tokens = self._display.many(cache.tokens[0].tolist())
        rows = []
        for v, f in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            if v <= 0:
                break
            p = int(pos[f])
            row = {"feature": f, "activation": v, "position": p, "token": tokens[p]}
            if self.store is not None:
                row["explanation"] = self.feature(dictionary, f).get("explanation")
            rows.append(row)
        return rows

    def __repr__(self) -> str:
        return f"SpliceModel({self.model.name!r}, dictionaries={list(self.dictionaries)})"
