"""What the live worker computes: activations of text, steered generations, attribution graphs.

Everything here runs in the worker thread (`jobs.Worker`), which loads the subject model and the
dictionaries on first use and keeps them. Dictionaries are named by their id in the feature
store, whose `path` column says where the checkpoint is: a request never names a file. The work
itself is the library's: `lm.model` runs the model, `dictionaries.io` loads checkpoints,
`steering` steers and measures (through `lm.generate`), `circuits.run.trace` attributes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from monosemantic.analysis.records import TokenText
from monosemantic.config import Config
from monosemantic.dictionaries.base import Dictionary
from monosemantic.dictionaries.interventions import canonical_mode
from monosemantic.dictionaries.provenance import weights_fingerprint
from monosemantic.lm.generate import Sampling
from monosemantic.steering.edits import chat_prompt_ids, parse_values, prompt_ids
from monosemantic.steering.measure import concept_for, evaluate_steering, feature_facts, resolve_arms
from monosemantic.store.matching import FINGERPRINT
from monosemantic.utils.errors import MonosemanticError
from monosemantic.utils.torch_utils import resolve_device

from .intervene import checkpoint_names, run_graph_intervention
from .jobs import Job

if TYPE_CHECKING:
    from .routes_live import SteerRequest
from .store_access import LiveStore

__all__ = ["LiveModels"]


class LiveModels:
    """The subject model of `cfg.model` and the store's dictionaries, loaded lazily and kept."""

    def __init__(self, cfg: Config, store: LiveStore) -> None:
        self.cfg = cfg
        self.store = store
        self._model: Any = None
        self._text: TokenText | None = None
        self._dics: dict[tuple[int, str, int, int], Dictionary] = {}
        self._rm: tuple[tuple, Any] | None = None  # the last graph's replacement model, by its checkpoints

    @property
    def device(self) -> torch.device:
        return resolve_device(self.cfg.serve.device)

    def model(self) -> Any:
        if self._model is None:
            from monosemantic.lm.model import load_model

            m = self.cfg.model
            self._model = load_model(m.name, dtype=m.dtype, device=self.device, revision=m.revision)
            self._text = TokenText(self._model.tokenizer)
        return self._model

    def dictionary(self, did: int) -> tuple[Dictionary, dict[str, Any]]:
        """The checkpoint of store dictionary `did`, loaded once (in eval mode, on the device)."""
        from monosemantic.dictionaries.io import load_dictionary

        row = self.store.get().dictionary(did)
        if not row.get("path"):
            raise MonosemanticError(
                f"dictionary {did} ({row['name']}) has no checkpoint path in the store; rerun `analyze`"
            )
        path = Path(row["path"])
        if not path.is_absolute():  # analyze records the path as its config gave it
            path = (Path.cwd() / path).resolve()
        if not path.exists():
            raise MonosemanticError(
                f"the checkpoint of dictionary {row['name']} is not at {path} any more; run `serve` "
                "from the folder `analyze` ran in, or rerun `analyze`"
            )
        st = path.stat()  # a retrained checkpoint is a new folder (saved under a temporary name, renamed)
        key = (did, str(path), st.st_ino, st.st_mtime_ns)
        if key not in self._dics:
            self._dics = {k: v for k, v in self._dics.items() if k[:2] != key[:2]}
            dic = load_dictionary(path, device=self.device, model=self.model()).eval().requires_grad_(False)
            recorded = (row.get("cfg") or {}).get(FINGERPRINT)
            if recorded and recorded != weights_fingerprint(dic):  # the store describes other weights
                raise MonosemanticError(
                    f"the checkpoint of dictionary {row['name']} at {path} has other weights than the ones "
                    "analysed into this store (retrained since?); rerun `monosemantic analyze`"
                )
            self._dics[key] = dic
        return self._dics[key], row

    def _ids(
        self, text: str | None, dic: Dictionary, chat: list | None = None
    ) -> tuple[torch.Tensor, list | None]:
        """Token ids as harvest saw them: a BOS first when the dictionary was trained with one; a
        chat prompt is rendered with the chat template (`data.chat_template` or the tokenizer's)
        and comes with its turns ({role, start, end} over positions)."""
        model = self.model()
        prepend = bool((dic.cfg.metadata or {}).get("prepend_bos", True))
        turns = None
        if chat is not None:  # never a file: a request's chat is the conversation itself
            ids, turns = chat_prompt_ids(model, chat, self.cfg.data.chat_template, prepend, files=False)
        else:
            ids = prompt_ids(model, str(text), prepend)
        ctx = int(
            getattr(model.hf.config, "n_positions", 0)
            or getattr(model.hf.config, "max_position_embeddings", 0)
        )
        if ctx and ids.numel() > ctx:
            raise MonosemanticError(f"the text has {ids.numel()} tokens; this model reads at most {ctx}")
        return ids, turns

    @torch.no_grad()
    def activations(self, job: Job, did: int, text: str | None, feature: int | None, top: int,
                    chat: list | None = None) -> dict[str, Any]:  # fmt: skip
        """Per token, the `top` strongest active features (and with `feature`, its value everywhere);
        of `text`, or of a chat prompt `chat` (then with its `turns`)."""
        job.report("loading", 0.1)
        dic, row = self.dictionary(did)
        model = self.model()
        if feature is not None and not 0 <= feature < dic.d_sae:
            raise MonosemanticError(
                f"feature {feature} is out of range; {row['name']} has 0..{dic.d_sae - 1}"
            )
        ids, turns = self._ids(text, dic, chat)
        site = dic.cfg.hook_name
        job.report("running", 0.5)
        out = model.run(ids[None], capture=[site], stop_at_layer=model.stop_layer([site]))
        codes = dic.encode(out.activations[site][0].to(dic.device, dic.dtype)).float().cpu()  # [T, F]
        bos = model.tokenizer.bos_token_id
        skip = (
            1
            if bos is not None and int(ids[0]) == bos and (dic.cfg.metadata or {}).get("prepend_bos", True)
            else 0
        )
        codes[:skip] = 0.0  # dictionaries are not trained on the BOS position (its activations are outliers)
        vals, idx = codes.topk(min(top, codes.shape[1]), dim=1)
        per_token = [
            [{"feature": int(i), "value": round(float(v), 4)} for v, i in zip(vs, js, strict=True) if v > 0]
            for vs, js in zip(vals, idx, strict=True)
        ]
        res: dict[str, Any] = {
            "dictionary": did,
            "name": row["name"],
            "site": site,
            "tokens": [self._text(int(i)) for i in ids],
            "token_ids": ids.tolist(),
            "bos": bool(skip),
            "features": per_token,
        }
        if turns is not None:
            res["turns"] = turns
        if feature is not None:
            res["feature"] = feature
            res["activations"] = [round(float(v), 4) for v in codes[:, feature]]
        return res

    def steer(self, job: Job, req: SteerRequest, chat: list | None = None) -> dict[str, Any]:
        """The steering evaluation of `steering.measure` on `req` (its prompt, or the
        chat prompt `chat`, whose result carries its rendered tokens and turns): the plain arm and one per value,
        `req.samples` each, with concept rate and fluency. The first sample of the plain and the
        first steered arm stream as `{"which": "plain"|"steered", "text": ...}` events, one per token."""
        job.report("loading", 0.05)
        dic, row = self.dictionary(req.dictionary)
        model = self.model()
        if not 0 <= req.feature < dic.d_sae:
            raise MonosemanticError(
                f"feature {req.feature} is out of range; {row['name']} has 0..{dic.d_sae - 1}"
            )
        facts = feature_facts(self.store.get(), req.dictionary, req.feature)
        mode = canonical_mode(req.mode)
        arms = resolve_arms(mode, parse_values(req.values), facts.max_activation)
        ids, turns = self._ids(req.prompt, dic, chat)
        concept = concept_for(model, dic, req.feature, facts, req.words)
        total = (len(arms) + 1) * req.max_new_tokens
        made = [0]

        def on_token(arm: int, sample: int, t: int) -> None:
            made[0] += 1 if sample == 0 else 0
            if sample == 0 and arm <= 1:
                job.emit({"which": "plain" if arm == 0 else "steered", "text": self._text(t)})
            job.report("plain" if arm == 0 else f"value {arm} of {len(arms)}", 0.05 + 0.9 * made[0] / total)

        sampling = Sampling(req.temperature, req.top_p, req.seed)
        done = evaluate_steering(model, dic, ids, req.feature, mode, arms, concept, sampling, req.samples,
                                 req.max_new_tokens, on_token=on_token)  # fmt: skip
        plain, first = done[0], done[1]
        keep = (
            "label",
            "value",
            "multiple",
            "concept_rate",
            "concept_per_100",
            "loss",
            "mean_tokens",
            "texts",
        )
        out = {
            "dictionary": req.dictionary, "name": row["name"], "feature": req.feature, "mode": mode,
            "value": first.value, "prompt": req.prompt, "max_activation": facts.max_activation,
            "concept": concept[0], "concept_kind": concept[1], "samples": req.samples,
            "plain": plain.texts[0], "steered": first.texts[0],
            "plain_ids": plain.samples[0], "steered_ids": first.samples[0],
            "arms": [{k: getattr(a, k) for k in keep} for a in done],
        }  # fmt: skip
        if turns is not None:  # a chat prompt: the rendered conversation, its tokens and turns
            skip = (
                bool((dic.cfg.metadata or {}).get("prepend_bos", True))
                and int(ids[0]) == model.tokenizer.bos_token_id
            )
            out |= {"prompt": model.tokenizer.decode(ids.tolist()[1 if skip else 0 :]), "chat": chat,
                    "prompt_tokens": [self._text(int(i)) for i in ids], "turns": turns}  # fmt: skip
        return out

    def replacement(self, graph: dict[str, Any]) -> Any:
        """The replacement model of a stored graph: its checkpoints (by store name) spliced into the
        subject model, with the graph's BOS convention; the last one is kept for the next request."""
        from monosemantic.circuits.replacement import ReplacementModel

        rows = {r["name"]: r for r in self.store.get().dictionaries()}
        names = checkpoint_names(graph, set(rows))
        loaded = [self.dictionary(rows[n]["id"])[0] for n in names]
        zero_bos = bool((graph.get("metadata", {}).get("scores") or {}).get("zero_bos", False))
        key = (tuple(names), zero_bos, tuple(id(d) for d in loaded))
        if self._rm is None or self._rm[0] != key:
            self._rm = (key, ReplacementModel(self.model(), loaded, names, zero_bos=zero_bos))
        return self._rm[1]

    def intervene(self, job: Job, gid: int, edits: list[Any], model: str, top: int) -> dict[str, Any]:
        """Ablate, clamp or scale feature nodes of graph `gid` (`server.intervene`)."""
        job.report("loading", 0.1)
        graph = self.store.get().graph(gid)
        rm = self.replacement(graph)
        job.report("intervening", 0.5)
        return {"graph_id": gid, **run_graph_intervention(rm, graph, edits, model, top)}

    def trace(
        self,
        job: Job,
        prompt: str | None,
        dictionaries: list[int] | None,
        options: dict[str, Any] | None = None,
        chat: list | None = None,
    ) -> dict[str, Any]:
        """Attribute `prompt` (or the chat prompt `chat`, whose graph marks its turns) through the
        store's transcoders (or `dictionaries`), store the graph.

        `options`: [circuit] keys (target, target_token, contrast_token, target_feature, heads,
        target_layer, target_position) and `direction`, a direction target's numbers."""
        from monosemantic.circuits.replacement import ReplacementModel
        from monosemantic.circuits.run import store_describer, trace
        from monosemantic.circuits.targets import Direction

        store = self.store.get()
        rows = store.dictionaries()
        chosen = (
            [r for r in rows if r["id"] in dictionaries]
            if dictionaries
            else [r for r in rows if r.get("hook_name_out")]
        )
        if dictionaries and len(chosen) != len(set(dictionaries)):
            missing = sorted(set(dictionaries) - {r["id"] for r in chosen})
            raise MonosemanticError(f"no dictionary {missing} in the store (ids: {[r['id'] for r in rows]})")
        if not chosen:
            raise MonosemanticError(
                "the store holds no transcoders to trace with; train per-layer transcoders"
            )
        job.report("loading model and dictionaries", 0.05)
        loaded = [self.dictionary(r["id"])[0] for r in chosen]
        if not dictionaries:  # by default trained transcoders only, not a fitted baseline (neurons)
            chosen, loaded = (
                [r for r, d in zip(chosen, loaded, strict=True) if not d.fitted],
                [d for d in loaded if not d.fitted],
            )
        model = self.model()
        names = [r["name"] for r in chosen]
        cfg = self.cfg.model_copy(deep=True)
        cfg.circuit.prompt, cfg.circuit.chat = prompt, None
        if chat is not None:  # as JSON, so circuits.run renders it without ever reading a file
            cfg.circuit.chat = json.dumps(chat)
            cfg.circuit.prompt = prompt = "\n".join(f"{m['role']}: {m['content']}" for m in chat)
        cfg.circuit.method = "attribution"
        options = dict(options or {})
        numbers = options.pop("direction", None)
        for key, value in options.items():
            setattr(cfg.circuit, key, value)
        direction = None
        if cfg.circuit.target == "direction":
            if numbers is None:
                raise MonosemanticError("target 'direction' needs 'direction': the vector's numbers")
            layer = cfg.circuit.target_layer
            if layer is None:
                raise MonosemanticError("target 'direction' needs 'target_layer'")
            pos = -1 if cfg.circuit.target_position is None else cfg.circuit.target_position
            direction = Direction(torch.tensor(numbers, dtype=torch.float64), layer, pos, "direction")
        job.report("attributing", 0.2)
        rm = ReplacementModel(model, loaded, names, zero_bos=cfg.circuit.zero_bos)
        describe_store, describe = store_describer(self.store.path, [r["id"] for r in chosen])
        try:
            gj = trace(cfg, rm, describe, direction, store_ids=[r["id"] for r in chosen])
        finally:
            if describe_store is not None:
                describe_store.close()
        job.report("storing the graph", 0.95)
        with self.store.own_write() as store:
            gid = store.add_graph(gj["metadata"]["slug"], gj, prompt=prompt)
        return {"graph_id": gid, "url": f"graphs/{gid}", "scores": gj["metadata"]["scores"]}

    def qk(self, job: Job, gid: int, pair: tuple[int, int, int, int], top: int) -> dict[str, Any]:
        """QK attribution of (layer, head, query, key) on stored graph `gid`'s prompt, through the
        dictionaries it was traced with (stored beside the graph for the next request)."""
        from monosemantic.circuits.qk import qk_terms
        from monosemantic.circuits.replacement import ReplacementModel

        from .graph_qk import save_qk, stored_qk

        store = self.store.get()
        graph = store.graph(gid)
        found = stored_qk(store, graph, gid, pair, top)
        if found is not None:
            return found
        meta = graph.get("metadata", {})
        ids = meta.get("store_dictionaries")
        if not ids or meta.get("scores", {}).get("method", "attribution") != "attribution":
            raise MonosemanticError(
                f"graph {gid} does not record which store dictionaries traced it; trace the prompt again "
                "(live page, or `circuit` with the feature store in analyze.out)"
            )
        job.report("loading model and dictionaries", 0.1)
        loaded = [self.dictionary(i) for i in ids]
        model = self.model()
        rm = ReplacementModel(model, [d for d, _ in loaded], [r["name"] for _, r in loaded],
                              zero_bos=bool(meta.get("scores", {}).get("zero_bos", False)))  # fmt: skip
        ids_t = rm.tokenize(meta.get("prompt") or "")
        if len(ids_t) != len(meta.get("prompt_tokens") or []):
            raise MonosemanticError(
                f"graph {gid}'s prompt tokenizes to {len(ids_t)} tokens now, not {len(meta['prompt_tokens'])}; "
                "the model or tokenizer changed since it was traced"
            )
        job.report("attributing the score", 0.5)
        (terms,) = qk_terms(rm, rm.setup(ids_t), [pair])
        entry = terms.to_json(top)
        with self.store.own_write() as writable:
            save_qk(writable, gid, entry, top)
        return entry
