"""Speech the repository makes itself, for training and evaluating its demo model.

No speech corpus or model hub is reachable where this project is built, so the demo model
(`demo/train.py`) learns from English that espeak-ng speaks. Everything that decides what
the model hears lives here, shared by training and evaluation so that both draw from the same
definitions:

- sentences from a small seeded generator over word lists written for this repository (our own
  text, free to use). A sentence's split is a hash of its text, so held-out sentences can never be
  drawn for training, whatever the seeds or counts;
- espeak-ng voices: a fixed list of training voices and a disjoint list of held-out voices
  (variants never heard in training, also on accents never heard in training);
- augmentation: the band limit of a trip through 8 kHz or 11.025 kHz, silence around the speech,
  gain and additive noise;
- the text normalization that WER/CER are computed after.
"""

from __future__ import annotations

import hashlib
import io
import random
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile
import soxr

SAMPLING_RATE = 16_000

# ---------------------------------------------------------------------------------------------
# Word lists, written for this repository.


def _words(text: str, separator: str | None = None) -> tuple[str, ...]:
    """The entries of a word list written as text (so that a list reads as a paragraph)."""
    return tuple(" ".join(entry.split()) for entry in text.split(separator) if entry.strip())


def _verbs(text: str) -> tuple[tuple[str, str], ...]:
    """(base, past) pairs of a list written as "base:past" entries."""
    return tuple((base, past) for base, past in (entry.split(":") for entry in _words(text)))


NOUNS = _words(
    """
    apple basket bell bicycle bird blanket boat book bottle box bread bridge brother bucket cake
    candle car card cat chair child city clock cloud coat computer cook cup doctor dog door dream
    engine farmer field fish flower forest friend garden gift girl glass hammer hat horse house
    island jacket key kitchen ladder lamp letter map market message mountain mouse neighbor number
    orange pencil piano picture plate pocket question radio river road rock room sailor school shoe
    shop sister song stone story street student table teacher ticket tower town train tree truck
    village wagon wall watch window woman man word bag ball banana beach kettle lemon machine nurse
    painter queen king sheep spoon umbrella violin whale yard zebra puzzle jar
    """
)
IRREGULAR_PLURALS = {
    "child": "children", "mouse": "mice", "woman": "women", "man": "men", "fish": "fish",
    "sheep": "sheep",
}  # fmt: skip

ADJECTIVES = _words(
    """
    old new big small little tall short long red blue green yellow black white brown quiet loud
    happy sad quick slow bright dark warm cold heavy light empty full clean dirty strange famous
    friendly gentle hungry tired lucky busy careful clever curious early late fresh round square
    sharp soft hard wooden golden silver broken hidden simple useful wonderful young ancient orange
    purple pretty shiny noisy rusty sleepy smooth strong sweet tiny wet dry wild wise angry brave
    calm
    """
)

TRANSITIVE_VERBS = _verbs(
    """
    carry:carried find:found paint:painted open:opened close:closed build:built bring:brought
    buy:bought catch:caught clean:cleaned cook:cooked drop:dropped fix:fixed follow:followed
    hold:held keep:kept lift:lifted move:moved pull:pulled push:pushed sell:sold send:sent
    show:showed take:took throw:threw wash:washed watch:watched write:wrote see:saw hear:heard
    need:needed want:wanted like:liked borrow:borrowed fill:filled count:counted check:checked
    hide:hid draw:drew climb:climbed visit:visited leave:left lose:lost break:broke choose:chose
    forget:forgot remember:remembered answer:answered give:gave make:made pack:packed
    touch:touched share:shared
    """
)

INTRANSITIVE_VERBS = _verbs(
    """
    run:ran walk:walked jump:jumped sleep:slept sing:sang laugh:laughed wait:waited swim:swam
    smile:smiled work:worked play:played fall:fell arrive:arrived stop:stopped dance:danced
    rest:rested travel:traveled listen:listened grow:grew speak:spoke shout:shouted cry:cried
    sit:sat stand:stood return:returned
    """
)

ADVERBS = _words(
    """
    quickly slowly quietly loudly carefully happily early again together outside inside away home
    everywhere suddenly often finally gently easily badly well there here upstairs downstairs
    """
)

NAMES = _words(
    """
    anna ben carol david emma frank grace henry isabel jack kate leo maria nick olivia peter rose
    sam tom victor william zoe alice george lucy martin paul sarah james helen
    """
)

# Entries of several words are separated by commas.
PLACES = _words(
    """
    the park, the station, the library, the harbor, the office, the hospital, the kitchen,
    the garden, the market, the school, the river, the bridge, the village, the hotel, the museum,
    the farm, the city, the beach, the corner, the hill, london, paris, boston, the north, the south
    """,
    ",",
)
TIMES = _words(
    """
    today, tomorrow, yesterday, last night, this morning, this evening, every day, on monday,
    on tuesday, on wednesday, on thursday, on friday, on saturday, on sunday, in january, in march,
    in may, in july, in september, in november, at noon, at midnight, next week, last year,
    before dinner, after lunch, at seven o'clock, at nine o'clock, at half past ten
    """,
    ",",
)
COUNTS = _words(
    """
    two, three, four, five, six, seven, eight, nine, ten, eleven, twelve, fifteen, twenty, thirty,
    forty, fifty, a hundred, many, some, several, a few, no
    """,
    ",",
)

DETERMINERS = ("the", "a", "this", "that", "my", "your", "his", "her", "our", "their", "one")
PRONOUNS = ("i", "you", "we", "they", "he", "she")
PREPOSITIONS = _words(
    """
    near behind under over into from beside across through to with without around above below past
    """
)
MODALS = ("will", "can", "could", "should", "must", "might", "would", "won't", "can't", "didn't")
CONTRACTIONS = ("it's", "that's", "there's", "he's", "she's", "we're", "they're", "you're")
DEGREE = ("very", "so", "too", "quite", "really", "not")
SAYING = ("said", "thought", "knew", "told me", "heard", "wrote")


def plural(noun: str) -> str:
    """English plural of a noun of `NOUNS`."""
    if noun in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[noun]
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def _article(word: str, determiner: str) -> str:
    """The determiner, with "a" made "an" before a vowel (by spelling: right for these lists)."""
    return "an" if determiner == "a" and word[0] in "aeiou" else determiner


class SentenceGenerator:
    """Draws English sentences from a dozen templates over the word lists above.

    Millions of distinct sentences are possible; a seeded `random.Random` makes every draw
    reproducible. Sentences are lower case, words separated by single spaces, with apostrophes
    in contractions and no other punctuation, so the text is also the transcript.
    """

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.templates: tuple[Callable[[], str], ...] = (
            self._transitive,
            self._named_action,
            self._modal,
            self._counted,
            self._question,
            self._contraction,
            self._reported,
            self._there_are,
            self._request,
            self._negative,
            self._where,
            self._list,
        )

    def _pick(self, words: tuple[Any, ...]) -> Any:
        return self.rng.choice(words)

    def _noun_phrase(self, many: bool = False) -> str:
        noun = self._pick(NOUNS)
        words = [plural(noun) if many else noun]
        if self.rng.random() < 0.6:
            words.insert(0, self._pick(ADJECTIVES))
        if many:
            return " ".join(["the", *words] if self.rng.random() < 0.5 else words)
        return " ".join([_article(words[0], self._pick(DETERMINERS)), *words])

    def _transitive(self) -> str:
        verb = self._pick(TRANSITIVE_VERBS)[1]
        tail = f" {self._pick(TIMES)}" if self.rng.random() < 0.4 else ""
        return f"{self._noun_phrase()} {verb} {self._noun_phrase()}{tail}"

    def _named_action(self) -> str:
        verb = self._pick(TRANSITIVE_VERBS)[1]
        return (
            f"{self._pick(NAMES)} {verb} {self._noun_phrase()} "
            f"{self._pick(PREPOSITIONS)} {self._pick(PLACES)}"
        )

    def _modal(self) -> str:
        verb = self._pick(TRANSITIVE_VERBS)[0]
        return f"{self._pick(PRONOUNS)} {self._pick(MODALS)} {verb} {self._noun_phrase()} {self._pick(TIMES)}"

    def _counted(self) -> str:
        verb = self._pick(INTRANSITIVE_VERBS)[1]
        nouns = plural(self._pick(NOUNS))
        adjective = f"{self._pick(ADJECTIVES)} " if self.rng.random() < 0.5 else ""
        return f"{self._pick(COUNTS)} {adjective}{nouns} {verb} {self._pick(ADVERBS)}"

    def _question(self) -> str:
        verb = self._pick(TRANSITIVE_VERBS)[0]
        opener = self._pick(("why did", "when did", "how did", "where did", "did", "will"))
        return f"{opener} {self._pick(NAMES)} {verb} {self._noun_phrase()}"

    def _contraction(self) -> str:
        tail = f" {self._pick(TIMES)}" if self.rng.random() < 0.5 else ""
        return f"{self._pick(CONTRACTIONS)} {self._pick(DEGREE)} {self._pick(ADJECTIVES)}{tail}"

    def _reported(self) -> str:
        verb = self._pick(("was", "is", "looked", "seemed"))
        return (
            f"{self._pick(NAMES)} {self._pick(SAYING)} that {self._noun_phrase()} "
            f"{verb} {self._pick(DEGREE)} {self._pick(ADJECTIVES)}"
        )

    def _there_are(self) -> str:
        return (
            f"there {self._pick(('are', 'were'))} {self._pick(COUNTS)} {plural(self._pick(NOUNS))} "
            f"{self._pick(PREPOSITIONS)} {self._noun_phrase()}"
        )

    def _request(self) -> str:
        verb = self._pick(TRANSITIVE_VERBS)[0]
        return f"please {verb} {self._noun_phrase()} {self._pick(PREPOSITIONS)} {self._pick(NAMES)}"

    def _negative(self) -> str:
        verb = self._pick(INTRANSITIVE_VERBS)[0]
        return (
            f"{self._pick(PRONOUNS)} don't think {self._noun_phrase()} can {verb} "
            f"{self._pick(ADVERBS)}"
        )

    def _where(self) -> str:
        verb = self._pick(INTRANSITIVE_VERBS)[1]
        return f"{self._pick(NAMES)} and {self._pick(NAMES)} {verb} {self._pick(PREPOSITIONS)} {self._pick(PLACES)} {self._pick(TIMES)}"

    def _list(self) -> str:
        first, second, third = (plural(self._pick(NOUNS)) for _ in range(3))
        return f"we {self._pick(TRANSITIVE_VERBS)[1]} {first} {second} and {third}"

    def __iter__(self) -> Iterator[str]:
        while True:
            yield self.rng.choice(self.templates)()


def is_held_out(sentence: str) -> bool:
    """One sentence in eight is held out, chosen by a hash of its text (so by no seed or order)."""
    return hashlib.sha256(sentence.encode("utf8")).digest()[0] % 8 == 0


def draw_sentences(count: int, *, held_out: bool, seed: int) -> list[str]:
    """`count` distinct sentences of one split, in draw order."""
    chosen: dict[str, None] = {}
    for sentence in SentenceGenerator(seed):
        if is_held_out(sentence) == held_out:
            chosen.setdefault(sentence)
            if len(chosen) == count:
                return list(chosen)
    raise AssertionError("unreachable: the generator is endless")


# ---------------------------------------------------------------------------------------------
# Voices


@dataclass(frozen=True)
class Voice:
    """An espeak-ng voice: an English accent with a variant (speaker character)."""

    accent: str
    variant: str

    @property
    def name(self) -> str:
        """The `-v` argument of espeak-ng."""
        return f"{self.accent}+{self.variant}"


TRAINING_ACCENTS = ("en-us", "en-gb", "en-gb-x-rp", "en-029", "en-gb-scotland")
TRAINING_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "f1", "f2", "f3", "f4", "klatt", "klatt2", "klatt4",
    "Alex", "Andy", "Gene", "Lee", "Mike", "adam", "aunty", "belinda", "benjamin", "ed",
    "edward", "linda", "max", "paul", "rob", "steph", "travis", "zac",
)  # fmt: skip
HELD_OUT_ACCENTS = ("en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
HELD_OUT_VARIANTS = ("m7", "m8", "f5", "klatt3", "Annie", "david", "john", "shelby")

TRAINING_VOICES = tuple(Voice(a, v) for a in TRAINING_ACCENTS for v in TRAINING_VARIANTS)
#: Variants never heard in training, on the training accents and on accents never heard either.
HELD_OUT_VOICES = tuple(
    Voice(a, v) for a in TRAINING_ACCENTS + HELD_OUT_ACCENTS for v in HELD_OUT_VARIANTS
)

#: espeak-ng's `-s` (words per minute) and `-p` (pitch, 0-99) ranges speech is drawn from.
SPEED_RANGE = (130, 200)
PITCH_RANGE = (25, 75)


@dataclass(frozen=True)
class Utterance:
    """How one utterance is spoken: the words, the voice, and its espeak-ng settings."""

    text: str
    voice: Voice
    speed: int
    pitch: int
    #: Rate the speech passes through before 16 kHz (band limit of a phone or an old recording).
    via_rate: int | None


def plan_utterances(
    sentences: list[str], voices: tuple[Voice, ...], seed: int, *, band_limit: bool
) -> list[Utterance]:
    """A voice, speed, pitch and (with `band_limit`) a rate path for each sentence, seeded."""
    rng = random.Random(seed)
    plans = []
    for text in sentences:
        via = None
        if band_limit:
            via = rng.choice((None, None, 8_000, 11_025))
        plans.append(
            Utterance(
                text=text,
                voice=rng.choice(voices),
                speed=rng.randint(*SPEED_RANGE),
                pitch=rng.randint(*PITCH_RANGE),
                via_rate=via,
            )
        )
    return plans


def espeak_version() -> str:
    """espeak-ng's version line: the corpus a seed gives depends on it."""
    result = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True)
    return result.stdout.split("Data at:")[0].strip()


def synthesize(utterance: Utterance) -> np.ndarray:
    """16 kHz float32 speech of `utterance` from espeak-ng, through its rate path."""
    command = ["espeak-ng", "-v", utterance.voice.name, "-s", str(utterance.speed)]
    command += ["-p", str(utterance.pitch), "--stdout", utterance.text]
    wav = subprocess.run(command, capture_output=True, check=True).stdout
    audio, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
    if utterance.via_rate is not None:
        audio = soxr.resample(audio, rate, utterance.via_rate)
        rate = utterance.via_rate
    return soxr.resample(audio, rate, SAMPLING_RATE).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Augmentation and text normalization


def augment(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A noisier, differently leveled copy of `audio`: what a recording adds to clean speech.

    Silence of 0-0.2 s on each side (espeak-ng starts and stops abruptly), gain from -20 to +3 dB
    (clipped at full scale, as a recorder would), and in 60% of copies white or brown noise at a
    signal-to-noise ratio of 10-40 dB.
    """
    lead, trail = rng.integers(0, int(0.2 * SAMPLING_RATE), size=2)
    audio = np.concatenate([np.zeros(lead, np.float32), audio, np.zeros(trail, np.float32)]).astype(
        np.float32
    )
    audio = np.clip(audio * 10 ** (rng.uniform(-20, 3) / 20), -1.0, 1.0)
    if rng.random() < 0.6:
        noise = rng.standard_normal(len(audio))
        if rng.random() < 0.3:
            noise = np.cumsum(noise)  # brown noise: the rumble of a room or a car
            noise -= np.convolve(noise, np.ones(400) / 400, mode="same")
        speech_power = float(np.mean(audio**2)) + 1e-10
        snr_db = rng.uniform(10, 40)
        scale = np.sqrt(speech_power / (np.mean(noise**2) + 1e-10) / 10 ** (snr_db / 10))
        audio = audio + scale * noise
    return audio.astype(np.float32)


_NOT_IN_TRANSCRIPTS = re.compile(r"[^A-Z' ]+")


def normalize_text(text: str) -> str:
    """The form WER and CER compare: upper case, apostrophes kept, other punctuation dropped.

    Punctuation becomes a space (so "well-known" is two words), then runs of spaces collapse.
    Upper case because the base-960h vocabulary is upper case.
    """
    return " ".join(_NOT_IN_TRANSCRIPTS.sub(" ", text.upper()).split())
