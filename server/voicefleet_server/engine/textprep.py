"""From the text a user sends to the segments the engine renders, in one pure function.

Order matters: sentences are found on the text as written (pysbd knows "Dr." and "3.5"
do not end one), each sentence is normalized for the model's language (unless its front
end reads numbers itself), the whole is checked against the model's vocabulary, and
only then are long sentences cut to the segment cap (normalizing "$1,234,567" makes it
four times longer, so the cap counts the words said, not the digits written).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from voicefleet_server.engine.model import TextProfile
from voicefleet_server.engine.segmenter import (
    DEFAULT_MAX_SEGMENT_CHARS,
    split_long,
    split_sentences,
)
from voicefleet_server.engine.text import normalize
from voicefleet_server.engine.vocabulary import VocabularyCheck, check_vocabulary, counts


class UnspeakableText(ValueError):
    """The text has nothing the model can say, or is mostly characters outside its
    vocabulary. `check` says which (empty when the text had nothing to say at all)."""

    def __init__(self, message: str, check: VocabularyCheck) -> None:
        super().__init__(message)
        self.check = check


@dataclass(frozen=True, slots=True)
class PreparedText:
    segments: list[str]
    # What the tokenizer will drop (a few characters: counted and logged by the caller).
    check: VocabularyCheck
    # Per sentence: as written, as normalized, and the segments cut from the latter (in
    # order, they are `segments`). Word timestamps map words back through them.
    sentences: list[tuple[str, str, list[str]]] = field(default_factory=list)


def prepare_text(
    text: str,
    profile: TextProfile,
    max_chars: int = DEFAULT_MAX_SEGMENT_CHARS,
    *,
    require_speech: bool = True,
) -> PreparedText:
    """Segments of `text` ready for the model's `tokenize`, each at most `max_chars`.

    Raises `UnspeakableText` when more than half of the letters, digits and symbols are
    outside the model's vocabulary, and when nothing would be said (unless not
    `require_speech`: a dialogue turn "..." is a pause, not an error; it gives no segments).
    Thread-safe; a long text (a job) costs about a second per 100k characters.
    """
    pairs = [
        (written, normalize(written, profile.language, reads_numbers=profile.reads_numbers))
        for written in split_sentences(text, profile.language)
    ]
    pairs = [(written, spoken) for written, spoken in pairs if spoken]
    sentences = [spoken for _, spoken in pairs]
    if profile.vocabulary is None:
        check = VocabularyCheck(total=sum(counts(c) for s in sentences for c in s))
    else:
        check = check_vocabulary(
            "".join(sentences), profile.vocabulary, lowercase=profile.lowercase
        )
    if check.total == 0:
        if not require_speech:
            return PreparedText([], check)
        raise UnspeakableText("input contains nothing to say (no letters or digits)", check)
    if check.kept == 0 or check.mostly_unknown:
        raise UnspeakableText(
            f"input is mostly characters this model cannot pronounce: {check.named()} "
            f"({check.dropped_count} of {check.total} letters, digits and symbols"
            + (f"; the model reads {profile.language!r})" if profile.language else ")"),
            check,
        )
    cut = [(written, spoken, split_long(spoken, max_chars)) for written, spoken in pairs]
    return PreparedText([piece for _, _, pieces in cut for piece in pieces], check, cut)
