"""LZString's URI-safe form (`compressToEncodedURIComponent` and its inverse), the encoding
of every `encodedMask` in Ego-Exo4D's relations files.

The format: each character of the alphabet `A-Za-z0-9+-$` carries 6 bits, read from its
highest bit down; codes are read least significant bit first, `n_bits` at a time, and form an
LZW-like stream (0: an 8-bit literal follows, 1: a 16-bit literal, 2: end of stream, else a
dictionary entry) whose code width grows as the dictionary does.

`decompress_uri` does not walk the bits one Python step at a time: the characters are mapped
and their bits laid out in stream order by numpy, the stream becomes one Python integer, and
each code is one shift-and-mask of it, read a window at a time. `compress_uri` (used by
`omama-synth --download`) writes the same format plainly; masks are small.
"""

from __future__ import annotations

import numpy as np

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-$"
_VALUE = np.full(256, -1, np.int16)
_VALUE[np.frombuffer(ALPHABET.encode(), np.uint8)] = np.arange(len(ALPHABET))
_WINDOW = 1 << 12  # bits of the stream held in one integer at a time


class LZStringError(ValueError):
    """The text is not a well-formed LZString stream (the message says where it breaks)."""


def _bit_stream(text: str) -> tuple[int, int]:
    """The text's bits in reading order as one integer (bit k = k-th bit read), and their
    number."""
    try:
        raw = np.frombuffer(text.replace(" ", "+").encode("ascii"), np.uint8)
    except UnicodeEncodeError:
        raise LZStringError("holds a character outside the URI-safe alphabet") from None
    values = _VALUE[raw]
    if (values < 0).any():
        bad = chr(int(raw[int(np.flatnonzero(values < 0)[0])]))
        raise LZStringError(f"holds {bad!r}, outside the URI-safe alphabet")
    bits = np.unpackbits(values.astype(np.uint8)[:, None], axis=1)[:, 2:]  # 6 bits, high first
    packed = np.packbits(bits.ravel(), bitorder="little")
    return int.from_bytes(packed.tobytes(), "little"), bits.size


class _Reader:
    """Codes of `n` bits from the stream, least significant bit first."""

    def __init__(self, text: str) -> None:
        self.stream, self.total = _bit_stream(text)
        self.pos = 0
        self.base = 0
        self.window = self.stream & ((1 << _WINDOW) - 1)

    def read(self, n: int) -> int:
        if self.pos + n > self.total:
            raise LZStringError(f"ends inside a code at bit {self.pos} of {self.total}")
        if self.pos + n > self.base + _WINDOW:
            self.base = self.pos
            self.window = (self.stream >> self.base) & ((1 << _WINDOW) - 1)
        value = (self.window >> (self.pos - self.base)) & ((1 << n) - 1)
        self.pos += n
        return value


def decompress_uri(text: str) -> str:
    """`LZString.decompressFromEncodedURIComponent(text)`; LZStringError for a text that is
    not one (a character outside the alphabet, a stream cut short, a code never defined)."""
    if text == "":
        raise LZStringError("is empty")
    reader = _Reader(text)
    literal = reader.read(2)
    if literal == 2:
        return ""
    if literal > 2:
        raise LZStringError(f"starts with code {literal}, not a literal")
    w = chr(reader.read(8 if literal == 0 else 16))
    entries = ["", "", "", w]  # codes 0-2 are the stream's commands
    out = [w]
    n_bits, enlarge_in = 3, 4
    while True:
        code = reader.read(n_bits)
        if code < 2:
            entries.append(chr(reader.read(8 if code == 0 else 16)))
            code = len(entries) - 1
            enlarge_in -= 1
        elif code == 2:
            return "".join(out)
        if enlarge_in == 0:
            enlarge_in, n_bits = 1 << n_bits, n_bits + 1
        if code < len(entries):
            entry = entries[code]
        elif code == len(entries):
            entry = w + w[0]
        else:
            raise LZStringError(f"uses code {code} before it is defined (bit {reader.pos})")
        out.append(entry)
        entries.append(w + entry[0])
        enlarge_in -= 1
        w = entry
        if enlarge_in == 0:
            enlarge_in, n_bits = 1 << n_bits, n_bits + 1


class _Writer:
    """Codes into 6-bit characters, least significant bit of each code first."""

    def __init__(self) -> None:
        self.chars: list[str] = []
        self.value = 0
        self.filled = 0

    def bit(self, b: int) -> None:
        self.value = (self.value << 1) | b
        self.filled += 1
        if self.filled == 6:
            self.chars.append(ALPHABET[self.value])
            self.value = self.filled = 0

    def code(self, value: int, n: int) -> None:
        for _ in range(n):
            self.bit(value & 1)
            value >>= 1

    def finish(self) -> str:
        while True:  # pad with zeros up to and including one more full character
            self.value <<= 1
            if self.filled == 5:
                self.chars.append(ALPHABET[self.value])
                return "".join(self.chars)
            self.filled += 1


def compress_uri(text: str) -> str:
    """`LZString.compressToEncodedURIComponent(text)`."""
    writer = _Writer()
    codes: dict[str, int] = {}
    pending: set[str] = set()  # single characters whose literal is not written yet
    w = ""
    size, n_bits, enlarge_in = 3, 2, 2

    def grow() -> None:
        nonlocal enlarge_in, n_bits
        enlarge_in -= 1
        if enlarge_in == 0:
            enlarge_in, n_bits = 1 << n_bits, n_bits + 1

    def emit(word: str) -> None:
        if word in pending:
            wide = ord(word) > 255
            writer.code(1 if wide else 0, n_bits)
            writer.code(ord(word), 16 if wide else 8)
            grow()
            pending.discard(word)
        else:
            writer.code(codes[word], n_bits)
        grow()

    for c in text:
        if c not in codes:
            codes[c] = size
            size += 1
            pending.add(c)
        if w + c in codes:
            w += c
            continue
        emit(w)
        codes[w + c] = size
        size += 1
        w = c
    if w:
        emit(w)
    writer.code(2, n_bits)
    return writer.finish()
