"""Text -> IPA phonemes with the `espeak-ng` program, for Piper voices.

espeak-ng is GPL-3, so it runs as a separate program (never linked, no `phonemizer`
package). Starting one per sentence costs its start-up every time (it loads its
dictionaries: 20-120 ms a sentence measured on the busy build machine); a persistent
`espeak-ng -q --ipa` reads stdin line by line and answers each line at once, so a small
pool of them answers a sentence in a few milliseconds (4-8 ms there; bench/quality.py
measures both). Callers run `phonemize` off the event loop; the pool lets several
requests phonemize at once, and it never runs on the engine's worker thread.

Piper feeds its model the clause punctuation espeak consumes (",", ".", "?"...): it
shapes pauses and intonation. The text is split into clauses here, each clause is
phonemized, and its punctuation is put back after it.
"""

from __future__ import annotations

import os
import queue
import re
import selectors
import shutil
import subprocess
import threading
import time
import unicodedata

PROGRAM = "espeak-ng"
# A made-up word whose phonemes end each answer: espeak prints one line per clause, so
# the reader needs a marker to know an answer is complete. Removed from user text.
_SENTINEL = "voicefleetsentinel"
_SENTINEL_WORD = re.compile(_SENTINEL, re.IGNORECASE)
# A clause ends at punctuation followed by a space or the end ("3.5" and "U.S.A" stay whole).
_CLAUSE = re.compile(r"(.*?)([.,;:!?]+)(?=\s|$)|(.+?)$", re.DOTALL)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Which punctuation mark Piper's phoneme stream carries for a clause's ending.
_MARKS = {".": ".", ",": ",", ";": ";", ":": ":", "!": "!", "?": "?"}


class PhonemizerError(RuntimeError):
    """espeak-ng is missing, refused the voice, or stopped answering."""


def espeak_program() -> str:
    """The espeak-ng executable, or a clear error naming it and how to install it."""
    path = shutil.which(PROGRAM)
    if path is None:
        raise PhonemizerError(
            f"the {PROGRAM!r} program is not on PATH: Piper voices need it for phonemes "
            "(Debian/Ubuntu: apt-get install espeak-ng; macOS: brew install espeak-ng)"
        )
    return path


def split_clauses(text: str) -> list[tuple[str, str]]:
    """(clause text, punctuation mark or "") pairs, in order; empty clauses dropped."""
    text = _CONTROL.sub(" ", text)
    clauses: list[tuple[str, str]] = []
    for match in _CLAUSE.finditer(text):
        body = (match.group(1) if match.group(3) is None else match.group(3)) or ""
        marks = match.group(2) or ""
        # "?!" and "..." keep their first mark: it sets the intonation.
        mark = _MARKS.get(marks[:1], "")
        if body.strip() or mark:
            clauses.append((body.strip(), mark))
    return clauses


class _EspeakProcess:
    """One persistent `espeak-ng -q --ipa -v VOICE` answering lines on stdin."""

    def __init__(self, program: str, voice: str, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.proc = subprocess.Popen(
            [program, "-q", "--ipa", "-v", voice],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
        )
        self._pending = b""
        self._selector = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        self._selector.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            self.marker = self._send(_SENTINEL, None)[0]
        except PhonemizerError:
            self.close()
            raise

    def _send(self, line: str, marker: str | None) -> list[str]:
        """Write one line; return espeak's output lines up to the marker (or one line)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        payload = line.encode("utf-8") + b"\n"
        if marker is not None:
            payload += _SENTINEL.encode() + b"\n"
        try:
            self.proc.stdin.write(payload)
        except (BrokenPipeError, OSError) as exc:
            raise PhonemizerError(f"{PROGRAM} stopped: {self._stderr()}") from exc
        lines: list[str] = []
        deadline = time.monotonic() + self.timeout_s
        while True:
            while b"\n" in self._pending:
                raw, self._pending = self._pending.split(b"\n", 1)
                text = raw.decode("utf-8", errors="replace").strip()
                if marker is None:
                    return [text]
                if text == marker:
                    return lines
                lines.append(text)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._selector.select(remaining):
                raise PhonemizerError(f"{PROGRAM} did not answer within {self.timeout_s:.0f}s")
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                raise PhonemizerError(f"{PROGRAM} exited: {self._stderr()}")
            self._pending += chunk

    def _stderr(self) -> str:
        """What espeak-ng said before it exited (it closes stdout just before exiting)."""
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return "no message (still running)"
        if self.proc.stderr is None:
            return "no message"
        return self.proc.stderr.read().decode("utf-8", errors="replace").strip() or "no message"

    def ipa(self, clause: str) -> str:
        return " ".join(part for part in self._send(clause, self.marker) if part)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        self._selector.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


class EspeakPhonemizer:
    """A pool of persistent espeak-ng processes for one espeak voice; thread-safe.

    Start-up fails (PhonemizerError) when the program is missing or the voice unknown.
    A process that dies or stops answering is replaced; the call that saw it fails.
    """

    def __init__(
        self, voice: str, processes: int = 2, timeout_s: float = 10.0, program: str | None = None
    ) -> None:
        self.voice = voice
        self._program = program or espeak_program()
        self._timeout_s = timeout_s
        self._idle: queue.LifoQueue[_EspeakProcess] = queue.LifoQueue()
        self._all: list[_EspeakProcess] = []
        self._lock = threading.Lock()
        self._closed = False
        for _ in range(max(1, processes)):
            self._idle.put(self._spawn())

    def _spawn(self) -> _EspeakProcess:
        try:
            process = _EspeakProcess(self._program, self.voice, self._timeout_s)
        except OSError as exc:
            raise PhonemizerError(f"cannot run {self._program}: {exc}") from exc
        except PhonemizerError as exc:
            raise PhonemizerError(f"{PROGRAM} with voice {self.voice!r}: {exc}") from exc
        with self._lock:
            self._all.append(process)
        return process

    def phonemize(self, text: str) -> str:
        """IPA for `text`, clause punctuation kept (Piper's form), NFD-normalized."""
        clauses = split_clauses(_SENTINEL_WORD.sub(" ", text))
        if not clauses:
            return ""
        if self._closed:
            raise PhonemizerError("the phonemizer is closed")
        try:
            process = self._idle.get(timeout=self._timeout_s)
        except queue.Empty:
            raise PhonemizerError(
                f"no {PROGRAM} process free within {self._timeout_s:.0f}s"
            ) from None
        try:
            parts = []
            for body, mark in clauses:
                ipa = process.ipa(body) if body else ""
                parts.append(ipa + mark)
        except PhonemizerError:
            self._discard(process)
            self._idle.put(self._spawn())  # raises (and the pool shrinks) if espeak is gone
            raise
        self._idle.put(process)
        return unicodedata.normalize("NFD", " ".join(p for p in parts if p))

    def _discard(self, process: _EspeakProcess) -> None:
        with self._lock:
            if process in self._all:
                self._all.remove(process)
        process.close()

    def close(self) -> None:
        self._closed = True
        with self._lock:
            processes, self._all = self._all, []
        for process in processes:
            process.close()
