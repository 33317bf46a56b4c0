"""Teach SAELens to load our TopK transcoders (run inside a SAELens 6 environment).

SAELens 6 registers TopK SAEs ("topk") and ReLU / JumpReLU transcoders, but no TopK transcoder,
so a `cfg.json` saying `"architecture": "topk_transcoder"` (what we write for a TopK dictionary
reading `hook_mlp_in` and writing `hook_mlp_out`) raises KeyError in `SAE.load_from_disk`.
This file adds the two missing classes through SAELens's own registry:

    from monosemantic.dictionaries.saelens_topk import register_topk_transcoder
    register_topk_transcoder()
    sae = sae_lens.SAE.load_from_disk("runs/demo/dictionaries/transcoder-L1")

It imports nothing from monosemantic (only torch and sae_lens, inside the function), so it also
works copied on its own into a project that has SAELens but not monosemantic
(`runpy.run_path(".../saelens_topk.py")["register_topk_transcoder"]()`). The classes are SAELens's
`Transcoder` / `SkipTranscoder` with TopK instead of ReLU: encode = TopK_k(x W_enc + b_enc) (ReLU on
the k kept values, as SAELens's TopK SAE), decode = f W_dec + b_dec (+ x W_skip^T).
`benchmarks/bench_conformance.py` checks the outputs against ours to 1e-5.
"""

# no `from __future__ import annotations`: SAELens builds these dataclasses in a module that
# runpy may have loaded outside sys.modules, where string annotations cannot be resolved
from typing import Any

NAMES = ("topk_transcoder", "topk_skip_transcoder")


def register_topk_transcoder() -> None:
    """Register "topk_transcoder" and "topk_skip_transcoder" with SAELens (idempotent)."""
    from dataclasses import dataclass

    import sae_lens
    from sae_lens.registry import SAE_CLASS_REGISTRY
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.saes.topk_sae import TopK
    from sae_lens.saes.transcoder import SkipTranscoder, SkipTranscoderConfig, Transcoder, TranscoderConfig
    from sae_lens.util import filter_valid_dataclass_fields

    if all(name in SAE_CLASS_REGISTRY for name in NAMES):
        return

    def from_dict(cls: type, config_dict: dict[str, Any]) -> Any:
        res = cls(**filter_valid_dataclass_fields(config_dict, cls))
        if "metadata" in config_dict:
            res.metadata = SAEMetadata(**config_dict["metadata"])
        return res

    @dataclass
    class TopKTranscoderConfig(TranscoderConfig):
        k: int = 100

        @classmethod
        def architecture(cls) -> str:
            return "topk_transcoder"

        @classmethod
        def from_dict(cls, config_dict: dict[str, Any]) -> Any:
            return from_dict(cls, config_dict)

        def to_dict(self) -> dict[str, Any]:
            return {**super().to_dict(), "k": self.k}

    class TopKTranscoder(Transcoder):
        cfg: TopKTranscoderConfig

        def get_activation_fn(self) -> Any:
            return TopK(self.cfg.k)

        @classmethod
        def from_dict(cls, config_dict: dict[str, Any]) -> Any:
            return cls(TopKTranscoderConfig.from_dict(config_dict))

    @dataclass
    class TopKSkipTranscoderConfig(SkipTranscoderConfig):
        k: int = 100

        @classmethod
        def architecture(cls) -> str:
            return "topk_skip_transcoder"

        @classmethod
        def from_dict(cls, config_dict: dict[str, Any]) -> Any:
            return from_dict(cls, config_dict)

        def to_dict(self) -> dict[str, Any]:
            return {**super().to_dict(), "k": self.k}

    class TopKSkipTranscoder(SkipTranscoder):
        cfg: TopKSkipTranscoderConfig

        def get_activation_fn(self) -> Any:
            return TopK(self.cfg.k)

        @classmethod
        def from_dict(cls, config_dict: dict[str, Any]) -> Any:
            return cls(TopKSkipTranscoderConfig.from_dict(config_dict))

    for name, cls, config in (
        ("topk_transcoder", TopKTranscoder, TopKTranscoderConfig),
        ("topk_skip_transcoder", TopKSkipTranscoder, TopKSkipTranscoderConfig),
    ):
        if name not in SAE_CLASS_REGISTRY:
            sae_lens.register_sae_class(name, cls, config)
