"""`monosemantic steer`: generate with one feature edited (added to, set, scaled or ablated), plain
and at each steering value, `samples` times each; print how often the feature's concept appears
and how fluent the text stays (`measure.py`), and write the numbers and a plot (`report.py`).

Every input is a `[steer]` key and a CLI option alike (`--feature`, `--prompt`, `--value`, ...);
the option wins. The edits are in `edits.py`; generation is `lm.generate`, the library's one loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from monosemantic.config import Config, ConfigLike, as_config
from monosemantic.config.loading import validation_message
from monosemantic.config.ranges import NonNegativeInt, check_argument
from monosemantic.dictionaries.base import Dictionary
from monosemantic.dictionaries.interventions import MODES, canonical_mode
from monosemantic.dictionaries.io import find_dictionaries, load_dictionary
from monosemantic.dictionaries.provenance import check_provenance
from monosemantic.lm.generate import Sampling
from monosemantic.lm.tokenizer import tokenizer_fingerprint
from monosemantic.store.feature_store import FeatureStore, feature_store_path
from monosemantic.utils.errors import ConfigError, MonosemanticError
from monosemantic.utils.files import check_output
from monosemantic.utils.torch_utils import resolve_device

from .edits import (
    chat_prompt_ids,
    check_steering_value,
    check_widths,
    parse_values,
    prompt_ids,
    steering_edits,
)
from .measure import (
    FeatureFacts,
    SteeringEvaluation,
    concept_for,
    evaluate_steering,
    feature_facts,
    resolve_arms,
)
from .report import print_evaluation, write_evaluation

if TYPE_CHECKING:
    from monosemantic.lm.model import SubjectModel

__all__ = ["MODES", "dictionary_path", "steer", "steering_edits", "prompt_ids"]


def dictionary_path(cfg: Config) -> Path:
    """`[steer].dictionary`, else the single checkpoint under `[analyze].dictionary` / `[train].out`."""
    base = cfg.steer.dictionary or cfg.analyze.dictionary or cfg.train.out
    found = find_dictionaries(base)
    if len(found) > 1:
        names = ", ".join(str(p) for p in found[:8])
        raise MonosemanticError(
            f"{base} holds {len(found)} dictionaries; pick one with --dictionary PATH or "
            f"--set steer.dictionary=PATH ({names})"
        )
    return found[0]


def store_facts(cfg: Config, path: Path, dic: Dictionary, feature: int) -> FeatureFacts:
    """Max activation and top tokens of the feature from the run's feature store, if it holds this
    checkpoint (by its recorded path, else by name with the same site and width)."""
    db = feature_store_path(cfg.analyze.out, cfg.steer.db)
    if not db.is_file():
        return FeatureFacts()
    with FeatureStore(db) as store:
        row = store.dictionary_at(path, path.name)
        if row is not None and (row.get("d_sae") != dic.d_sae or row.get("hook_name") != dic.cfg.hook_name):
            row = None  # a namesake from another run
        return feature_facts(store, None if row is None else row["id"], feature)


def _inputs(cfg: Config, chat: str | list | None) -> tuple[int, str | None, list | None]:
    """The feature, and the prompt or the parsed chat prompt (a malformed chat fails before loading)."""
    from monosemantic.corpus.chat_prompt import parse_chat

    s = cfg.steer
    if s.feature is None:
        raise ConfigError("no feature to steer: pass --feature N (or set steer.feature)")
    if bool(s.prompt) == (chat is not None):
        raise ConfigError("steer takes a prompt: pass --prompt TEXT or --chat CONVERSATION (one of them)")
    return s.feature, s.prompt, (parse_chat(chat) if chat is not None else None)


def _load(cfg: Config, path: Path, feature: int) -> tuple[Dictionary, SubjectModel]:
    from monosemantic.dictionaries.releases.family import check_model_family
    from monosemantic.lm.model import load_model

    device = resolve_device(cfg.steer.device)
    dic = load_dictionary(path, device=device).eval()
    if not 0 <= feature < dic.d_sae:
        raise MonosemanticError(
            f"feature {feature} is out of range; {path.name} has features 0..{dic.d_sae - 1}"
        )
    model = load_model(cfg.model.name, dtype=cfg.model.dtype, device=device, revision=cfg.model.revision)
    if model.is_encoder or not model.has_head:
        raise MonosemanticError(
            f"steer generates text, but {cfg.model.name} is an encoder ({model.family}) without a causal "
            "language-model head; set model.name to a causal LM (gpt2, pythia, llama, 'storyworld', ...)"
        )
    check_model_family(dic.cfg.metadata, model, str(path))
    check_widths(dic, model, path)
    check_provenance(
        dic, path, cfg.model.name, tokenizer_fingerprint(model.tokenizer), None, cfg.model.allow_foreign_model
    )
    return dic, model


def steer(
    cfg: ConfigLike,
    feature: int | None = None,
    value: Any = None,
    prompt: str | None = None,
    chat: str | list | None = None,
) -> dict[str, Any]:
    """Steer `feature` from `prompt` (or a chat prompt, `chat`, rendered with the chat template and
    the generation prompt) at each value (arguments override `[steer]`); print the table, write the
    JSON and plot, and return the evaluation as a dict (plus the first plain and first steered
    sample as `unsteered` / `steered`)."""
    cfg = as_config(cfg)
    s = cfg.steer
    given = {"feature": feature, "prompt": prompt,
             "values": list(value) if isinstance(value, (list, tuple)) else None if value is None else [value]}  # fmt: skip
    for key, v in given.items():
        if v is not None:
            try:
                setattr(s, key, v)
            except ValidationError as e:
                raise ConfigError(validation_message(e)) from None
    feature, prompt, messages = _inputs(cfg, chat)
    feature = check_argument("feature", feature, NonNegativeInt)
    mode = canonical_mode(s.mode)
    values = parse_values(s.values)
    for v in values:  # raw values are checked before anything loads; multiples once the scale is known
        if v.multiple is None:
            check_steering_value(v.raw, mode)  # type: ignore[arg-type]
    out = Path(s.out) if s.out is not None else Path(cfg.analyze.out) / "steer"
    check_output(out, "steer.out")
    path = dictionary_path(cfg)
    dic, model = _load(cfg, path, feature)
    facts = store_facts(cfg, path, dic, feature)
    arms = resolve_arms(mode, values, facts.max_activation)
    prepend = bool((dic.cfg.metadata or {}).get("prepend_bos", True))
    turns = None
    if messages is not None:
        ids, turns = chat_prompt_ids(model, messages, cfg.data.chat_template, prepend)
        prompt = model.tokenizer.decode(ids[1:] if prepend else ids)  # the rendered conversation
    else:
        ids = prompt_ids(model, str(prompt), prepend)
    concept = concept_for(model, dic, feature, facts, s.words)
    sampling = Sampling(s.temperature, s.top_p, int(s.seed or 0))
    done = evaluate_steering(
        model, dic, ids, feature, mode, arms, concept, sampling, s.samples, s.max_new_tokens
    )
    ev = SteeringEvaluation(
        dictionary=str(path),
        site=dic.cfg.hook_name_out if dic.is_transcoder else dic.cfg.hook_name,
        feature=feature,
        mode=mode,
        prompt=str(prompt),
        concept=concept[0],
        concept_kind=concept[1],
        max_activation=facts.max_activation,
        sampling={
            "temperature": s.temperature,
            "top_p": s.top_p,
            "seed": sampling.seed,
            "samples": s.samples,
        },
        max_new_tokens=s.max_new_tokens,
        arms=done,
    )
    print_evaluation(ev)
    files = write_evaluation(ev, out, s.plot)
    plain, first = done[0], done[1]
    return {
        **ev.as_dict(),
        "value": first.value,
        "unsteered": plain.texts[0],
        "steered": first.texts[0],
        "unsteered_ids": plain.samples[0],
        "steered_ids": first.samples[0],
        "files": [str(f) for f in files],
        **({"chat": messages, "turns": turns} if messages is not None else {}),
    }
