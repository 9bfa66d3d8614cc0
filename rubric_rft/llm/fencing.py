"""Untrusted text shown to a model, fenced so that it cannot pose as instructions.

A policy's answer, a user's prompt or a reference is shown between `<<<TAG-nonce>>>` and `<<<END-TAG-nonce>>>`,
whose nonce is derived from a hash of everything shown and occurs in none of it: no shown text can close its
own fence. Judge, pairwise and proposer prompts all fence this way, and the system prompt tells the model to
treat fenced text as data.
"""

from __future__ import annotations

import hashlib
import json

NONCE_HEX_DIGITS = 16


def fenced(title: str, tag: str, text: str, nonce: str) -> str:
    """`text` under `title`, between its fence lines."""
    return f"{title}:\n<<<{tag}-{nonce}>>>\n{text}\n<<<END-{tag}-{nonce}>>>"


def nonce_for(*shown: str) -> str:
    """A hex string derived from the shown texts that occurs in none of them (re-salted in the rare clash)."""
    material = json.dumps(shown, ensure_ascii=False)
    salt = 0
    while True:
        nonce = hashlib.sha256(f"{salt}:{material}".encode()).hexdigest()[:NONCE_HEX_DIGITS]
        if not any(nonce in text for text in shown):
            return nonce
        salt += 1
