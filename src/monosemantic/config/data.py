"""[data]: where tokens or activations come from."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from .base import Section


class DataConfig(Section):
    INHERITED: ClassVar[tuple[str, ...]] = ("seed",)

    activations: Path | None = Field(
        None,
        description="A tensor file (.safetensors/.pt with key 'activations', shape [N, d]) or an "
        "activation cache directory. Omit to harvest live from [model] on [data].text.",
    )
    activations_b: Path | None = Field(
        None,
        description="Model diffing: a second activation cache, of another model on the same token "
        "windows as data.activations; its sites are named b:<site>, and a dictionary with site "
        '"{a,b}:blocks.N.hook_X" reads that site of both models.',
    )
    text: str = Field(
        "storyworld",
        description="'storyworld', a local .txt (one document per paragraph)/.jsonl/.parquet file or "
        "folder, or a HF dataset name ('hf:<name or path>' forces datasets.load_dataset).",
    )
    text_column: str = Field("text", description="Column holding the text in .jsonl/.parquet/HF datasets.")
    format: Literal["text", "chat"] = Field(
        "text",
        description="'chat': each record of data.text is a conversation (data.messages_column, a list of "
        "{role, content}), rendered with the tokenizer's chat template; every token knows its turn's role "
        "(docs/chat.md).",
    )
    messages_column: str = Field("messages", description="Column holding the conversation in chat data.")
    train_on: Literal["all", "user", "assistant"] = Field(
        "all",
        description="Chat data: train on, and count in statistics, every token or only those of user or "
        "assistant turns (docs/chat.md says which tokens a role has); recorded in the cache manifest, "
        "checkpoints and metrics.json like data.special_tokens.",
    )
    chat_template: Path | None = Field(
        None,
        description="A Jinja chat template file to render chat data with, instead of the tokenizer's own.",
    )
    dataset_config: str | None = Field(None, description="HF dataset configuration name.")
    split: str = Field("train", description="HF dataset split.")
    context_size: int = Field(128, gt=1, description="Tokens per window (sequence length).")
    max_tokens: int | None = Field(None, gt=0, description="Stop after this many tokens (windows x context).")
    prepend_bos: bool = Field(True, description="Start every window with the BOS token.")
    special_tokens: Literal["exclude", "include"] = Field(
        "exclude",
        description="BOS/EOS/PAD stay in context; 'exclude' drops their positions from training data "
        "and statistics.",
    )
    bos_token: str | None = Field(
        None,
        description="Token (a string in the tokenizer's vocabulary) used as BOS when the tokenizer "
        'defines none or another; for a BERT encoder use "[CLS]".',
    )
    eos_token: str | None = Field(
        None,
        description="Token used as EOS (the document separator) when the tokenizer defines none or "
        'another; for a BERT encoder use "[SEP]".',
    )
    seed: int | None = Field(None, description="Seed for storyworld generation and shuffling.")

    @model_validator(mode="after")
    def _chat_only_settings(self) -> DataConfig:
        if self.format == "text" and self.train_on != "all":
            raise ValueError(
                f'data.train_on = {self.train_on!r} restricts chat data to one role; set data.format = "chat" '
                '(conversations in data.messages_column) or data.train_on = "all"'
            )
        return self
