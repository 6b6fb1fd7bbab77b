"""What expansion remembers of the jobs already yielded, compactly: a 1,000,000-row manifest
must be checked for identical requests and clashing output names without holding a million
strings (a dict of key → row took ~200 bytes a job and made every garbage collection walk it).

``Seen`` is an open-addressing hash table over two flat ``array``s: 16 bytes a slot, at most
two slots a value. A value is remembered by a 96-bit fingerprint (of a job key: its first 96
bits, already a sha256; of a file name: blake2b), so a false "seen" needs two of a million
values to share 96 bits (odds about 1 in 10^17). Each value carries a number (the row's
ordinal) and one flag, which is all a problem about it has to name."""

from __future__ import annotations

import hashlib
from array import array

_LOW = 0xFFFFFFFF
_FLAG = 1 << 31
_MAX_NUMBER = _FLAG - 1


def fingerprint_of_key(key: str) -> int:
    """96 bits of a job key (hex sha256): already uniform, no hashing needed."""
    return int(key[:24], 16)


def fingerprint_of_text(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=12).digest(), "big")


class Seen:
    """A set of 96-bit fingerprints, each with a number (< 2**31) and a flag."""

    def __init__(self, capacity: int = 1 << 12) -> None:
        self._alloc(capacity)
        self.count = 0

    def _alloc(self, capacity: int) -> None:
        # high: the fingerprint's top 64 bits (0 marks an empty slot, so a value whose top bits
        # are 0 is stored as 1: its low 32 bits still tell it apart); low: its low 32 bits
        # above the flag and the number.
        # Repeated in place: array("Q", bytes(n)) would first build n zero bytes beside it.
        self._high = array("Q", [0]) * capacity
        self._low = array("Q", [0]) * capacity
        self._mask = capacity - 1

    def add(self, fingerprint: int, number: int, flag: bool = False) -> tuple[int, bool] | None:
        """Remember ``fingerprint`` with (``number``, ``flag``); if it was already remembered,
        leave it and return the first one's (number, flag) instead."""
        if not 0 <= number <= _MAX_NUMBER:
            raise ValueError(f"number out of range: {number}")
        high = (fingerprint >> 32) or 1
        tag = fingerprint & _LOW
        table, lows, mask = self._high, self._low, self._mask
        slot = high & mask
        while True:
            h = table[slot]
            if not h:
                break
            if h == high and lows[slot] >> 32 == tag:
                payload = lows[slot]
                return payload & _MAX_NUMBER, bool(payload & _FLAG)
            slot = (slot + 1) & mask
        table[slot] = high
        lows[slot] = (tag << 32) | (_FLAG if flag else 0) | number
        self.count += 1
        if 2 * self.count > len(table):  # at most half full: probes stay short
            self._grow()
        return None

    def _grow(self) -> None:
        old_high, old_low = self._high, self._low
        self._alloc(2 * len(old_high))
        table, lows, mask = self._high, self._low, self._mask
        for h, low in zip(old_high, old_low):
            if h:
                slot = h & mask
                while table[slot]:
                    slot = (slot + 1) & mask
                table[slot] = h
                lows[slot] = low
