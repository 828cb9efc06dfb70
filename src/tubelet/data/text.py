"""Text to token ids for video-text models: the tokenizer a Hugging Face folder ships.

`TextTokenizer.from_folder(path)` reads the folder's `tokenizer.json` (written by a tokenizer's
`save_pretrained`) with the `tokenizers` library and its pad token from `tokenizer_config.json`;
calling it turns texts into ids padded (and cut) to a fixed length, with the padding mask, as
VideoPrism's processor does (`padding="max_length"`, `truncation=True`, no end token added).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer


class TextTokenizer:
    """Texts -> (ids (B, L) int64, mask (B, L) bool, True = a real token), L = `length`."""

    def __init__(self, tokenizer: Tokenizer, pad_id: int = 0) -> None:
        self.tokenizer = tokenizer
        self.pad_id = pad_id

    @classmethod
    def from_folder(cls, path: str | Path) -> TextTokenizer:
        """The tokenizer saved in folder `path` (`tokenizer.json`, `tokenizer_config.json`)."""
        folder = Path(path) if Path(path).is_dir() else Path(path).parent
        file = folder / "tokenizer.json"
        if not file.is_file():
            raise FileNotFoundError(
                f"{folder} has no tokenizer.json: save the model's tokenizer into the folder "
                "(tokenizer.save_pretrained(FOLDER)) to give it text"
            )
        tokenizer = Tokenizer.from_file(str(file))
        pad = "<pad>"
        config = folder / "tokenizer_config.json"
        if config.is_file():
            pad = json.loads(config.read_text()).get("pad_token") or pad
            pad = pad["content"] if isinstance(pad, dict) else pad
        pad_id = tokenizer.token_to_id(pad)
        return cls(tokenizer, 0 if pad_id is None else pad_id)

    def __call__(self, texts: Sequence[str], length: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not texts:
            raise ValueError("no texts to tokenize")
        ids = torch.full((len(texts), length), self.pad_id, dtype=torch.int64)
        mask = torch.zeros(len(texts), length, dtype=torch.bool)
        for row, encoding in enumerate(self.tokenizer.encode_batch(list(texts))):
            tokens = encoding.ids[:length]
            if not tokens:
                raise ValueError(f"text {texts[row]!r} has no tokens")
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.int64)
            mask[row, : len(tokens)] = True
        return ids, mask
