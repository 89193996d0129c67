"""Wav2Vec2 CTC tokenizer: characters <-> ids, and greedy CTC decoding of predicted ids.

Pure Python/numpy. It reproduces Hugging Face's `Wav2Vec2CTCTokenizer` (transformers 5) exactly,
because transcripts and their time offsets are what the pipeline emits. Behaviours of the
reference that look odd but are kept on purpose:

- `do_lower_case=True` *upper-cases* the text before lookup (the vocabularies are upper case) and
  lower-cases the decoded text (but not the characters in the offsets);
- every vocabulary token longer than one character (`<pad>`, `<s>`, `</s>`, `<unk>`, ...) is an
  "added token": it is matched as a whole in the input text, and whitespace next to it is
  stripped, so "A <unk> B" encodes without word delimiters around `<unk>`;
- decoding drops special tokens *before* grouping repeats when `skip_special_tokens=True`, so
  offsets then count frames of the filtered sequence, not of the model output;
- decoding does not collapse runs of word delimiters: "A||B" decodes to "A  B".
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from wav2vec2_beam.models import _files, hub
from wav2vec2_beam.models.feature_extraction import (
    BatchFeature,
    convert_to_tensors,
    padding_strategy,
    round_up,
)

VOCAB_FILE = "vocab.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
ADDED_TOKENS_FILE = "added_tokens.json"

# Named special tokens in the reference's order; the order decides the ids of special tokens that
# are missing from the vocabulary and the order of `all_special_tokens`.
SPECIAL_TOKEN_NAMES = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
    "word_delimiter_token",
)

# tokenizer_config.json keys that only concern transformers' loading machinery.
_IGNORED_CONFIG_KEYS = (
    "tokenizer_class",
    "init_inputs",
    "name_or_path",
    "is_local",
    "local_files_only",
    "backend",
    "tokenizer_file",
    "vocab_file",
    "special_tokens_map_file",
    "model_specific_special_tokens",
    "files_loaded",
)

ListOfDict = list[dict[str, Any]]


@dataclass
class AddedToken:
    """A token matched as a whole in input text, with what to strip around it."""

    content: str
    lstrip: bool = False
    rstrip: bool = False
    single_word: bool = False
    normalized: bool = False
    special: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The `added_tokens_decoder` entry transformers writes in tokenizer_config.json."""
        return {
            "content": self.content,
            "lstrip": self.lstrip,
            "normalized": self.normalized,
            "rstrip": self.rstrip,
            "single_word": self.single_word,
            "special": self.special,
        }


@dataclass
class Wav2Vec2CTCTokenizerOutput:
    """Decoded text with optional character and word offsets (in logit frames).

    For `batch_decode` each field is a list with one entry per sequence. `char_offsets` entries
    are {"char", "start_offset", "end_offset"}, `word_offsets` entries {"word", "start_offset",
    "end_offset"}; end offsets are exclusive.
    """

    text: str | list[str]
    char_offsets: ListOfDict | list[ListOfDict] | None = None
    word_offsets: ListOfDict | list[ListOfDict] | None = None

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


def _token_text(value: Any) -> str | None:
    """A special token's string from a config value (a string, or a serialized AddedToken)."""
    if isinstance(value, Mapping):
        return str(value["content"])
    return None if value is None else str(value)


def _ids_to_python(ids: Any) -> int | list[Any]:
    """Ids from a list, numpy array or tf.Tensor as a Python int or (nested) list of ints."""
    if hasattr(ids, "numpy") and not isinstance(ids, np.ndarray):
        ids = ids.numpy()
    if isinstance(ids, (np.ndarray, np.generic)):
        return ids.tolist()
    if isinstance(ids, (list, tuple)):
        return [_ids_to_python(item) for item in ids]
    return int(ids)


class _Trie:
    """Finds added tokens in text, longest match first, leftmost match winning."""

    def __init__(self) -> None:
        self._root: dict[str, Any] = {}
        self._end = ""  # key marking "a token ends here"; no character is the empty string

    def add(self, token: str) -> None:
        if not token:
            return
        node = self._root
        for char in token:
            node = node.setdefault(char, {})
        node[self._end] = True

    def split(self, text: str) -> list[str]:
        """`text` cut into pieces, each either an added token or text containing none."""
        pieces = []
        start = 0  # start of the current non-token piece
        position = 0
        while position < len(text):
            node = self._root
            match_end = -1
            cursor = position
            while cursor < len(text) and text[cursor] in node:
                node = node[text[cursor]]
                cursor += 1
                if self._end in node:
                    match_end = cursor
            if match_end < 0:
                position += 1
                continue
            if start < position:
                pieces.append(text[start:position])
            pieces.append(text[position:match_end])
            start = position = match_end
        if start < len(text):
            pieces.append(text[start:])
        return pieces


class VocabularyError(ValueError):
    """A vocabulary that would decode silently wrong; the message names the token."""


def _checked_vocabulary(vocab: Any) -> dict[str, int]:
    """token -> id, refusing what would decode silently wrong: an id that is not a non-negative
    integer, and two tokens of one id (one of them could never be decoded)."""
    if not isinstance(vocab, Mapping):
        raise VocabularyError(f"not a JSON object of token: id, but {type(vocab).__name__}")
    by_id: dict[int, str] = {}
    for token, index in vocab.items():
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise VocabularyError(f"token {token!r} has id {index!r}, not a non-negative integer")
        if index in by_id:
            raise VocabularyError(f"tokens {by_id[index]!r} and {token!r} have the same id {index}")
        by_id[index] = token
    return {token: index for index, token in by_id.items()}


class Wav2Vec2CTCTokenizer:
    """Character-level CTC tokenizer of Wav2Vec2 checkpoints (vocab.json + tokenizer_config.json).

    `vocab` maps tokens to ids (or, with `target_lang`, languages to such maps, as in MMS).
    `added_tokens_decoder` is what transformers 5 saves in tokenizer_config.json; tokens it lists
    keep their strip settings and may have ids beyond the vocabulary.
    """

    model_input_names = ("input_ids", "attention_mask")

    def __init__(
        self,
        vocab: Mapping[str, Any],
        bos_token: str | None = "<s>",
        eos_token: str | None = "</s>",
        unk_token: str | None = "<unk>",
        pad_token: str | None = "<pad>",
        word_delimiter_token: str = "|",
        replace_word_delimiter_char: str = " ",
        do_lower_case: bool = False,
        target_lang: str | None = None,
        clean_up_tokenization_spaces: bool = False,
        padding_side: str = "right",
        sep_token: str | None = None,
        cls_token: str | None = None,
        mask_token: str | None = None,
        extra_special_tokens: Sequence[str] | None = None,
        added_tokens_decoder: Mapping[int, AddedToken] | None = None,
        **config: Any,
    ) -> None:
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', not {padding_side!r}")
        self.vocab = dict(vocab)
        self.target_lang = target_lang
        if target_lang is not None:
            if target_lang not in self.vocab:
                raise ValueError(
                    f"target_lang {target_lang!r} is not in the vocabulary; choose one of "
                    f"{', '.join(self.vocab)}."
                )
            self.encoder: dict[str, int] = _checked_vocabulary(self.vocab[target_lang])
        else:
            self.encoder = _checked_vocabulary(self.vocab)
        self.decoder = {index: token for token, index in self.encoder.items()}

        self.special_tokens: dict[str, str | None] = {
            "bos_token": bos_token,
            "eos_token": eos_token,
            "unk_token": unk_token,
            "sep_token": sep_token,
            "pad_token": pad_token,
            "cls_token": cls_token,
            "mask_token": mask_token,
            "word_delimiter_token": word_delimiter_token,
        }
        self.extra_special_tokens = [str(token) for token in extra_special_tokens or ()]
        self.replace_word_delimiter_char = replace_word_delimiter_char
        self.do_lower_case = do_lower_case
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self.padding_side = padding_side
        # Remaining tokenizer_config.json keys (return_attention_mask, do_normalize, ...): written
        # back by save_pretrained and read by the processor for its call defaults.
        self.config = config

        self.added_tokens_decoder: dict[int, AddedToken] = dict(added_tokens_decoder or {})
        self._index_added_tokens()
        # Same order as the reference: saved added tokens, then special tokens (new ids after the
        # vocabulary), then every multi-character vocabulary token with whitespace stripping.
        self._add_tokens(
            [
                AddedToken(token, special=True)
                for token in self.all_special_tokens
                if token not in self.added_tokens_encoder
            ]
        )
        self._add_tokens(
            [
                AddedToken(token, lstrip=True, rstrip=True)
                for token in self.encoder
                if len(token) > 1
            ]
        )

    # ------------------------------------------------------------------ vocabulary

    def _add_tokens(self, tokens: Iterable[AddedToken]) -> None:
        """Register tokens: vocabulary ones keep their id, new ones get the next free ids."""
        current = self.get_vocab()
        next_id = len(current)
        for token in tokens:
            if token.content not in current:
                current[token.content] = next_id
                next_id += 1
            self.added_tokens_decoder[current[token.content]] = token
        self._index_added_tokens()

    def _index_added_tokens(self) -> None:
        """Rebuild the lookups derived from `added_tokens_decoder` (once, not per token)."""
        self._added_encoder = {
            token.content: index for index, token in sorted(self.added_tokens_decoder.items())
        }
        self._trie = _Trie()
        for content in self._added_encoder:
            self._trie.add(content)

    @property
    def added_tokens_encoder(self) -> dict[str, int]:
        """Added token string -> id."""
        return self._added_encoder

    def get_vocab(self) -> dict[str, int]:
        """Vocabulary plus added tokens, token -> id."""
        vocab = dict(self.encoder)
        vocab.update(self.added_tokens_encoder)
        return vocab

    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary (without added tokens beyond it)."""
        return len(self.decoder)

    def __len__(self) -> int:
        return len(self.get_vocab())

    def __getattr__(self, name: str) -> Any:
        # bos_token, pad_token_id, word_delimiter_token_id, ... without eight pairs of properties.
        special = self.__dict__.get("special_tokens", {})
        if name in special:
            return special[name]
        if name.endswith("_id") and name[:-3] in special:
            token = special[name[:-3]]
            return None if token is None else self.convert_tokens_to_ids(token)
        raise AttributeError(name)

    @property
    def all_special_tokens(self) -> list[str]:
        """Named special tokens (in the reference's order), then extra ones, without repeats."""
        tokens = [token for token in self.special_tokens.values() if token is not None]
        return list(dict.fromkeys([*tokens, *self.extra_special_tokens]))

    @property
    def all_special_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self.all_special_tokens)

    def convert_tokens_to_ids(self, tokens: str | Iterable[str]) -> int | list[int]:
        """Ids of tokens; unknown tokens map to the unk token's id."""
        if isinstance(tokens, str):
            return self._token_to_id(tokens)
        return [self._token_to_id(token) for token in tokens]

    def _token_to_id(self, token: str) -> int:
        added = self.added_tokens_encoder
        if token in added:
            return added[token]
        if token in self.encoder:
            return self.encoder[token]
        unk = self.special_tokens["unk_token"]
        if unk in self.encoder:
            return self.encoder[unk]
        if unk in added:
            return added[unk]
        raise KeyError(f"Token {token!r} is not in the vocabulary and there is no unk token.")

    def convert_ids_to_tokens(
        self, ids: int | Iterable[int], skip_special_tokens: bool = False
    ) -> str | list[str]:
        """Tokens of ids: vocabulary first, then added tokens, else the unk token."""
        ids = _ids_to_python(ids)
        if isinstance(ids, int):
            return self._id_to_token(ids)
        skipped = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._id_to_token(index) for index in ids if index not in skipped]

    def _id_to_token(self, index: int) -> str:
        if index in self.decoder:
            return self.decoder[index]
        if index in self.added_tokens_decoder:
            return self.added_tokens_decoder[index].content
        return str(self.special_tokens["unk_token"])

    # ------------------------------------------------------------------ encoding

    def tokenize(self, text: str) -> list[str]:
        """Split text into tokens: added tokens whole, everything else character by character."""
        pieces = self._trie.split(text)
        added = self.added_tokens_encoder
        # Strip whitespace next to added tokens that ask for it. Later pieces see the effect of
        # earlier strips, as in the reference.
        for position in range(len(pieces)):
            piece = pieces[position]
            if piece not in added:
                continue
            token = self.added_tokens_decoder[added[piece]]
            left = pieces[position - 1] if position > 0 else None
            right = pieces[position + 1] if position < len(pieces) - 1 else None
            if token.rstrip and right:
                pieces[position + 1] = right.lstrip()
            if token.lstrip and left:
                pieces[position - 1] = left.rstrip()
            if token.single_word:
                if left and left[-1] != " ":
                    pieces[position - 1] += piece
                    pieces[position] = ""
                elif right and right[0] != " ":
                    pieces[position + 1] = piece + pieces[position + 1]
                    pieces[position] = ""
        special = set(self.all_special_tokens)
        tokens: list[str] = []
        for piece in pieces:
            if not piece:
                continue
            if piece in added or piece in special:
                tokens.append(piece)
            else:
                tokens.extend(self._split_characters(piece))
        return tokens

    def _split_characters(self, text: str) -> list[str]:
        if self.do_lower_case:
            # Not a typo: the reference upper-cases, because the vocabularies are upper case.
            text = text.upper()
        return list(text.replace(" ", str(self.special_tokens["word_delimiter_token"])))

    def encode(self, text: str) -> list[int]:
        """Ids of one text, without padding."""
        return self.convert_tokens_to_ids(self.tokenize(text))

    def __call__(
        self,
        text: str | Sequence[str],
        padding: bool | str = False,
        max_length: int | None = None,
        truncation: bool | str = False,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | None = None,
    ) -> BatchFeature:
        """Encode a text or a batch of texts into `input_ids` (and `attention_mask`).

        No special tokens are added. A single text gives flat lists (a batch axis of one with
        return_tensors); padding uses the pad token's id on `padding_side`.
        """
        if isinstance(text, str):
            batch, is_batched = [text], False
        elif isinstance(text, (list, tuple)) and all(isinstance(item, str) for item in text):
            batch, is_batched = list(text), True
        else:
            raise TypeError(f"text must be a string or a list of strings, not {type(text)}")
        strategy = padding_strategy(padding, max_length)
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        side = padding_side or self.padding_side

        all_ids = [self.encode(item) for item in batch]
        if truncation not in (False, None, "do_not_truncate") and max_length is not None:
            all_ids = [ids[:max_length] for ids in all_ids]

        target = None
        if strategy == "longest" and all_ids:
            target = max(len(ids) for ids in all_ids)
        elif strategy == "max_length":
            target = max_length
        if target is not None:
            target = round_up(target, pad_to_multiple_of)

        input_ids = []
        attention_mask = []
        for ids in all_ids:
            mask = [1] * len(ids)
            if target is not None and len(ids) < target:
                if self.pad_token_id is None:
                    raise ValueError("Padding needs a pad token, and this tokenizer has none.")
                fill = target - len(ids)
                if side == "right":
                    ids, mask = ids + [self.pad_token_id] * fill, mask + [0] * fill
                else:
                    ids, mask = [self.pad_token_id] * fill + ids, [0] * fill + mask
            input_ids.append(ids)
            attention_mask.append(mask)

        if not is_batched and return_tensors is None:
            output = BatchFeature(input_ids=input_ids[0])
            if return_attention_mask:
                output["attention_mask"] = attention_mask[0]
            return output
        dtype = np.int64 if return_tensors == "np" else None
        output = BatchFeature(input_ids=convert_to_tensors(input_ids, return_tensors, dtype))
        if return_attention_mask:
            output["attention_mask"] = convert_to_tensors(attention_mask, return_tensors, dtype)
        return output

    # ------------------------------------------------------------------ decoding

    @staticmethod
    def clean_up_tokenization(text: str) -> str:
        """Remove spaces before punctuation and English contractions (reference rules)."""
        for before, after in (
            (" .", "."),
            (" ?", "?"),
            (" !", "!"),
            (" ,", ","),
            (" ' ", "'"),
            (" n't", "n't"),
            (" 'm", "'m"),
            (" 's", "'s"),
            (" 've", "'ve"),
            (" 're", "'re"),
        ):
            text = text.replace(before, after)
        return text

    def convert_tokens_to_string(
        self,
        tokens: Sequence[str],
        group_tokens: bool = True,
        spaces_between_special_tokens: bool = False,
        output_char_offsets: bool = False,
        output_word_offsets: bool = False,
    ) -> dict[str, Any]:
        """Greedy CTC collapse: merge repeats, drop blanks (the pad token), delimiter -> space.

        Offsets are frame indices into `tokens`: a character spans the frames of its run of
        repeats, end exclusive. The joined text is stripped at both ends only.
        """
        if not tokens:
            return {"text": "", "char_offsets": [], "word_offsets": []}
        if group_tokens:
            runs = [(token, len(list(group))) for token, group in itertools.groupby(tokens)]
        else:
            runs = [(token, 1) for token in tokens]
        blank = self.special_tokens["pad_token"]
        delimiter = self.special_tokens["word_delimiter_token"]

        chars = []
        char_offsets = []
        end = 0
        for token, count in runs:
            start, end = end, end + count
            if token == blank:
                continue
            char = self.replace_word_delimiter_char if token == delimiter else token
            chars.append(char)
            char_offsets.append({"char": char, "start_offset": start, "end_offset": end})

        word_offsets = None
        if output_word_offsets:
            word_offsets = self._word_offsets(char_offsets, self.replace_word_delimiter_char)
        separator = " " if spaces_between_special_tokens else ""
        text = separator.join(chars).strip()
        if self.do_lower_case:
            text = text.lower()
        return {
            "text": text,
            "char_offsets": char_offsets if output_char_offsets else None,
            "word_offsets": word_offsets,
        }

    @staticmethod
    def _word_offsets(char_offsets: ListOfDict, delimiter_char: str = " ") -> ListOfDict:
        """Words are maximal runs of non-delimiter characters; a word spans its characters."""
        words: ListOfDict = []
        for is_space, group in itertools.groupby(
            char_offsets, key=lambda offset: offset["char"] == delimiter_char
        ):
            if is_space:
                continue
            group = list(group)
            words.append(
                {
                    "word": "".join(offset["char"] for offset in group),
                    "start_offset": group[0]["start_offset"],
                    "end_offset": group[-1]["end_offset"],
                }
            )
        return words

    def decode(
        self,
        token_ids: Any,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
        output_char_offsets: bool = False,
        output_word_offsets: bool = False,
        group_tokens: bool = True,
        spaces_between_special_tokens: bool = False,
    ) -> str | Wav2Vec2CTCTokenizerOutput:
        """Greedy CTC decoding of one sequence of ids (list, numpy array or 1-D tf.Tensor).

        Returns the text, or a Wav2Vec2CTCTokenizerOutput when offsets are requested.
        `skip_special_tokens` drops bos/eos/unk/pad (never the word delimiter) before grouping.
        """
        ids = _ids_to_python(token_ids)
        if isinstance(ids, int):
            # The reference iterates over the single token's string, character by character.
            tokens = list(self._id_to_token(ids))
        else:
            if any(isinstance(index, list) for index in ids):
                raise ValueError("decode takes one sequence of ids; use batch_decode for a batch.")
            tokens = [self._id_to_token(index) for index in ids]
        if skip_special_tokens:
            delimiter = self.special_tokens["word_delimiter_token"]
            special = set(self.all_special_tokens) - {delimiter}
            tokens = [token for token in tokens if token not in special]

        result = self.convert_tokens_to_string(
            tokens,
            group_tokens=group_tokens,
            spaces_between_special_tokens=spaces_between_special_tokens,
            output_char_offsets=output_char_offsets,
            output_word_offsets=output_word_offsets,
        )
        text = result["text"]
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        if clean_up_tokenization_spaces:
            text = self.clean_up_tokenization(text)
        if output_char_offsets or output_word_offsets:
            return Wav2Vec2CTCTokenizerOutput(
                text=text,
                char_offsets=result["char_offsets"],
                word_offsets=result["word_offsets"],
            )
        return text

    def batch_decode(
        self,
        sequences: Any,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
        output_char_offsets: bool = False,
        output_word_offsets: bool = False,
        **kwargs: Any,
    ) -> list[str] | Wav2Vec2CTCTokenizerOutput:
        """`decode` for each row of a 2-D array/tensor or list of id lists.

        With offsets, one Wav2Vec2CTCTokenizerOutput whose fields are lists (one item per row).
        """
        rows = _ids_to_python(sequences)
        if isinstance(rows, int):
            raise ValueError("batch_decode takes a batch (2-D) of ids.")
        decoded = [
            self.decode(
                row,
                skip_special_tokens=skip_special_tokens,
                clean_up_tokenization_spaces=clean_up_tokenization_spaces,
                output_char_offsets=output_char_offsets,
                output_word_offsets=output_word_offsets,
                **kwargs,
            )
            for row in rows
        ]
        if not (output_char_offsets or output_word_offsets):
            return decoded
        # As the reference: an offsets field is a list when the first row has it, else None.
        first = decoded[0] if decoded else None
        return Wav2Vec2CTCTokenizerOutput(
            text=[item.text for item in decoded],
            char_offsets=[item.char_offsets for item in decoded]
            if first is not None and first.char_offsets is not None
            else None,
            word_offsets=[item.word_offsets for item in decoded]
            if first is not None and first.word_offsets is not None
            else None,
        )

    # ------------------------------------------------------------------ loading and saving

    @classmethod
    def from_pretrained(
        cls, path: str, revision: str | None = None, **overrides: Any
    ) -> Wav2Vec2CTCTokenizer:
        """Load vocab.json (required), tokenizer_config.json and the legacy side files.

        Reads both layouts found on the hub: transformers 5 (`added_tokens_decoder` inside
        tokenizer_config.json) and older ones (special_tokens_map.json, added_tokens.json).
        Keyword overrides win over the files, as with transformers. `path` may be a hub id.
        """
        path = hub.resolve(str(path), revision)
        vocab = _files.read_json(path, VOCAB_FILE)
        config: dict[str, Any] = {}
        if _files.exists(path, TOKENIZER_CONFIG_FILE):
            config = dict(_files.read_json(path, TOKENIZER_CONFIG_FILE))
        for key in _IGNORED_CONFIG_KEYS:
            config.pop(key, None)
        config.update(overrides)

        if "additional_special_tokens" in config and not config.get("extra_special_tokens"):
            config["extra_special_tokens"] = config.pop("additional_special_tokens")
        config.pop("additional_special_tokens", None)

        added_tokens: dict[int, AddedToken] = {}
        if "added_tokens_decoder" in config:
            for index, entry in config.pop("added_tokens_decoder").items():
                fields = {key: value for key, value in entry.items() if key != "__type"}
                added_tokens[int(index)] = AddedToken(**fields)
        else:
            if _files.exists(path, SPECIAL_TOKENS_MAP_FILE):
                for key, value in _files.read_json(path, SPECIAL_TOKENS_MAP_FILE).items():
                    if overrides.get(key):
                        continue
                    if key in ("additional_special_tokens", "extra_special_tokens"):
                        existing = list(config.get("extra_special_tokens") or [])
                        for token in value:
                            if _token_text(token) not in map(_token_text, existing):
                                existing.append(token)
                        config["extra_special_tokens"] = existing
                    else:
                        config[key] = value
            if _files.exists(path, ADDED_TOKENS_FILE):
                named = {_token_text(config.get(name)) for name in SPECIAL_TOKEN_NAMES[:-1]}
                named |= {_token_text(token) for token in config.get("extra_special_tokens") or []}
                for token, index in _files.read_json(path, ADDED_TOKENS_FILE).items():
                    is_special = token in named
                    added_tokens[int(index)] = AddedToken(
                        token, normalized=not is_special, special=is_special
                    )

        for name in SPECIAL_TOKEN_NAMES:
            if name in config:
                config[name] = _token_text(config[name])
        if isinstance(config.get("extra_special_tokens"), list):
            config["extra_special_tokens"] = [
                _token_text(token) for token in config["extra_special_tokens"]
            ]
        if not isinstance(vocab, dict):
            raise VocabularyError(f"{_files.join(path, VOCAB_FILE)}: not a JSON object")
        try:
            return cls(vocab, added_tokens_decoder=added_tokens, **config)
        except VocabularyError as error:
            raise VocabularyError(f"{_files.join(path, VOCAB_FILE)}: {error}") from None

    def save_pretrained(self, folder: str) -> tuple[str, ...]:
        """Write vocab.json, tokenizer_config.json and special_tokens_map.json into `folder`.

        The config is in the transformers 5 layout (with `added_tokens_decoder`), which both this
        class and transformers read back; special_tokens_map.json serves older readers.
        """
        folder = str(folder)
        special = {name: token for name, token in self.special_tokens.items() if token is not None}
        config: dict[str, Any] = {
            **self.config,
            **special,
            "added_tokens_decoder": {
                str(index): token.to_dict()
                for index, token in sorted(self.added_tokens_decoder.items())
            },
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
            "do_lower_case": self.do_lower_case,
            "padding_side": self.padding_side,
            "replace_word_delimiter_char": self.replace_word_delimiter_char,
            "target_lang": self.target_lang,
            "tokenizer_class": type(self).__name__,
        }
        if self.extra_special_tokens:
            config["extra_special_tokens"] = list(self.extra_special_tokens)
        special_map = {
            name: token for name, token in special.items() if name != "word_delimiter_token"
        }
        return (
            _files.write_json(folder, VOCAB_FILE, self.vocab),
            _files.write_json(folder, TOKENIZER_CONFIG_FILE, config),
            _files.write_json(folder, SPECIAL_TOKENS_MAP_FILE, special_map),
        )
