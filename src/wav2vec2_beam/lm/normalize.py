"""Text as a CTC model can spell it: what `build_arpa` feeds the estimator by default.

An n-gram LM fused into CTC beam search only helps with words the acoustic model can produce, so
a word written with a character the vocabulary lacks (`BARN.`, `"Hello`, `well-known`) is a word
the decoder can never output, and its counts are wasted (the sentence around it is split at the
wrong places too). Given the checkpoint's characters, each line is:

1. Unicode NFKC-normalized, and cased as the vocabulary is (upper case when its letters are all
   upper case, lower when all lower, as it is otherwise);
2. typographic apostrophes (U+2019, U+2018, U+02BC, U+0060, U+00B4) written `'` when the vocabulary
   has `'`;
3. each character the vocabulary lacks replaced by its letters without accents when those are in
   the vocabulary (`café` -> `cafe`), or else by a space: punctuation separates words;
4. stripped of apostrophes that start or end a word (quotes), and of extra spaces.

`--normalize none` keeps the text as it is (apart from `--case`).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Collection

_APOSTROPHES = str.maketrans(dict.fromkeys("\u2019\u2018\u02bc`\u00b4", "'"))


def alphabet_normalizer(characters: Collection[str]) -> Callable[[str], str]:
    """The normalization of the module docstring for a vocabulary of `characters` (its
    one-character tokens, the word delimiter excluded)."""
    alphabet = frozenset(characters) - {" "}
    letters = [char for char in alphabet if char.isalpha() and char.lower() != char.upper()]
    if letters and all(char.isupper() for char in letters):
        case: Callable[[str], str] = str.upper
    elif letters and all(char.islower() for char in letters):
        case = str.lower
    else:
        case = str
    apostrophe = "'" in alphabet
    replacements: dict[str, str] = {}

    def spelled(char: str) -> str:
        if char in alphabet:
            return char
        if char not in replacements:
            base = "".join(
                part
                for part in unicodedata.normalize("NFKD", char)
                if not unicodedata.combining(part)
            )
            replacements[char] = base if base and all(c in alphabet for c in base) else " "
        return replacements[char]

    def normalize(text: str) -> str:
        text = case(unicodedata.normalize("NFKC", text))
        if apostrophe:
            text = text.translate(_APOSTROPHES)
        text = "".join(spelled(char) for char in text)
        words = (word.strip("'") if apostrophe else word for word in text.split())
        return " ".join(word for word in words if word)

    return normalize


def vocabulary_characters(tokens: Collection[str], word_delimiter: str) -> set[str]:
    """The characters a CTC vocabulary spells words with: its one-character tokens but the
    word delimiter."""
    return {token for token in tokens if len(token) == 1 and token != word_delimiter}
