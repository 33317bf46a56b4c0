"""transcoder_circuits' GPT-2-small transcoders (Dunefsky, Chlenski & Nanda; `pchlenski/gpt2-transcoders`).

Layout, from its `sae_training/sparse_autoencoder.py` (`save_model` / `load_from_pretrained`), the
old SAELens `.pt` format: one `torch.save`d file per layer,
`final_sparse_autoencoder_gpt2-small_blocks.{L}.ln2.hook_normalized_24576.pt`, holding
`{"cfg": LanguageModelSAERunnerConfig, "state_dict": {W_enc [d_in, d_sae], b_enc [d_sae],
W_dec [d_sae, d_out], b_dec [d_in], b_dec_out [d_out]}}`. The cfg is a pickled dataclass of
`sae_training.config`; we read its fields without that package (a stand-in class allowed in
torch's weights-only unpickler, nothing else runs). Its forward: pre = (x - b_dec) W_enc + b_enc,
f = ReLU(pre), y = f W_dec + b_dec_out, reading `cfg.hook_point` (`blocks.L.ln2.hook_normalized`)
and writing `cfg.out_hook_point` (`blocks.L.hook_mlp_out`). We fold the input bias into b_enc
(b_enc - b_dec W_enc). The activations came from TransformerLens' `HookedTransformer.from_pretrained
("gpt2-small")` with its defaults, whose `center_writing_weights` makes `hook_mlp_out` mean-free
over d_model: on the plain model the transcoder's output misses that per-token mean (a note says so).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from monosemantic.dictionaries.base import Dictionary
from monosemantic.utils.errors import DataError
from monosemantic.utils.progress import console
from monosemantic.utils.readers import first_line

from .build import ReleaseRef, release_metadata, single_site


class _RunnerConfig:
    """Stands in for `sae_training.config.LanguageModelSAERunnerConfig` when unpickling: keeps its
    fields as attributes, runs none of its code."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def _stand_ins() -> list[type]:
    classes = []
    for name in ("LanguageModelSAERunnerConfig", "RunnerConfig", "CacheActivationsRunnerConfig"):
        cls = type(name, (_RunnerConfig,), {"__module__": "sae_training.config", "__qualname__": name})
        classes.append(cls)
    return classes


def _load(file: Path) -> dict[str, Any]:
    try:
        with torch.serialization.safe_globals(_stand_ins()):
            return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DataError(
            f"{file} cannot be read as a transcoder_circuits checkpoint ({first_line(e)})"
        ) from None


def is_transcoder_circuits(path: Path) -> bool:
    return path.is_file() and path.suffix == ".pt" and "sparse_autoencoder" in path.name


def read_transcoder_circuits(file: Path, ref: ReleaseRef | None, device: torch.device) -> Dictionary:
    ckpt = _load(file)
    if not isinstance(ckpt, dict) or "cfg" not in ckpt or "state_dict" not in ckpt:
        raise DataError(f"{file}: expected {{'cfg', 'state_dict'}} (transcoder_circuits' save_model layout)")
    cfg, sd = vars(ckpt["cfg"]), ckpt["state_dict"]
    need = ("W_enc", "b_enc", "W_dec", "b_dec")
    if any(k not in sd for k in need):
        raise DataError(f"{file}: state_dict lacks one of {need}")
    transcoder = bool(cfg.get("is_transcoder")) and "b_dec_out" in sd
    W_enc = sd["W_enc"].float()
    b_in = sd["b_dec"].float()
    w = {"W_enc": W_enc, "b_enc": sd["b_enc"].float() - b_in @ W_enc, "W_dec": sd["W_dec"].float(),
         "b_dec": (sd["b_dec_out"] if transcoder else sd["b_dec"]).float()}  # fmt: skip
    hook_in = str(cfg.get("hook_point"))
    hook_out = str(cfg.get("out_hook_point")) if transcoder else None
    model = str(cfg.get("model_name", "gpt2-small"))
    md = release_metadata(ref, f"transcoder_circuits {file.name}", model,
                          model_from_pretrained_kwargs={"center_writing_weights": True, "fold_ln": True})  # fmt: skip
    console.print(
        f"[yellow]note:[/] {file.name} was trained on TransformerLens' processed {model} (center_writing_weights): "
        "its hook_mlp_out targets were mean-free over d_model; monosemantic hooks the plain model",
        highlight=False,
        soft_wrap=True,
    )
    if not transcoder:  # an SAE of this layout subtracts b_dec and adds it back: the plain SAELens form
        w["b_enc"], w["b_dec"] = sd["b_enc"].float(), b_in
        return single_site("relu", w, hook_in, None, md, device, str(file), apply_b_dec_to_input=True)
    return single_site("relu", w, hook_in, hook_out, md, device, str(file))
