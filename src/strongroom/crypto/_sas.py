"""Short authentication strings (SAS): a thin wrapper around vodozemac's ``Sas``.

Each side makes an ephemeral Curve25519 key, the two keys give a shared secret, and from
it come the bytes that the people compare (as emoji or numbers) and the MAC key that
proves each side's long-term device key.  vodozemac exceptions enter here and leave as
``CryptoError`` (``SignatureError`` for a MAC that does not verify).

Rules:

1. A ``SasKeys`` is used for one flow: it cannot be pickled, and a flow does not survive
   a restart of the app (it is cancelled, and started again).
2. Every byte string and MAC is bound to an ``info`` string the caller builds from both
   devices, both SAS keys and the flow id, so a value from one flow, or one direction,
   never passes in another.
"""

from __future__ import annotations

import hashlib

import vodozemac

from strongroom.errors import CryptoError, SignatureError

__all__ = ["EMOJI", "SasKeys", "SharedSas", "sas_commitment"]

#: The 64 emoji of the SAS table (index → (emoji, name)); the same table Matrix clients
#: use, so people who know it from elsewhere see the same pictures.
EMOJI: tuple[tuple[str, str], ...] = (
    ("🐶", "Dog"), ("🐱", "Cat"), ("🦁", "Lion"), ("🐎", "Horse"),
    ("🦄", "Unicorn"), ("🐷", "Pig"), ("🐘", "Elephant"), ("🐰", "Rabbit"),
    ("🐼", "Panda"), ("🐓", "Rooster"), ("🐧", "Penguin"), ("🐢", "Turtle"),
    ("🐟", "Fish"), ("🐙", "Octopus"), ("🦋", "Butterfly"), ("🌷", "Flower"),
    ("🌳", "Tree"), ("🌵", "Cactus"), ("🍄", "Mushroom"), ("🌏", "Globe"),
    ("🌙", "Moon"), ("☁️", "Cloud"), ("🔥", "Fire"), ("🍌", "Banana"),
    ("🍎", "Apple"), ("🍓", "Strawberry"), ("🌽", "Corn"), ("🍕", "Pizza"),
    ("🎂", "Cake"), ("❤️", "Heart"), ("😀", "Smiley"), ("🤖", "Robot"),
    ("🎩", "Hat"), ("👓", "Glasses"), ("🔧", "Spanner"), ("🎅", "Santa"),
    ("👍", "Thumbs Up"), ("☂️", "Umbrella"), ("⌛", "Hourglass"), ("⏰", "Clock"),
    ("🎁", "Gift"), ("💡", "Light Bulb"), ("📕", "Book"), ("✏️", "Pencil"),
    ("📎", "Paperclip"), ("✂️", "Scissors"), ("🔒", "Lock"), ("🔑", "Key"),
    ("🔨", "Hammer"), ("☎️", "Telephone"), ("🏁", "Flag"), ("🚂", "Train"),
    ("🚲", "Bicycle"), ("✈️", "Aeroplane"), ("🚀", "Rocket"), ("🏆", "Trophy"),
    ("⚽", "Ball"), ("🎸", "Guitar"), ("🎺", "Trumpet"), ("🔔", "Bell"),
    ("⚓", "Anchor"), ("🎧", "Headphones"), ("📁", "Folder"), ("📌", "Pin"),
)  # fmt: skip


def sas_commitment(public_key: str, context: bytes) -> bytes:
    """What a responder commits to before it sees the initiator's key."""
    return hashlib.sha256(public_key.encode() + b"\x00" + context).digest()


class SharedSas:
    """The secret two SAS keys agreed on: the short string and MACs come from it."""

    def __init__(self, established: vodozemac.EstablishedSas) -> None:
        self._sas = established

    def emoji_indices(self, info: str) -> tuple[int, ...]:
        """Seven indices into ``EMOJI``."""
        return tuple(self._sas.bytes(info).emoji_indices)

    def decimals(self, info: str) -> tuple[int, int, int]:
        """Three numbers, each 1000..9191."""
        return tuple(self._sas.bytes(info).decimals)  # type: ignore[return-value]

    def mac(self, data: str, info: str) -> str:
        return self._sas.calculate_mac(data, info)

    def verify_mac(self, data: str, info: str, tag: str) -> None:
        """Raises ``SignatureError`` unless ``tag`` is the MAC of ``data`` under ``info``."""
        try:
            self._sas.verify_mac(data, info, tag)
        except (vodozemac.SasException, ValueError) as exc:
            raise SignatureError("the verification MAC does not check out") from exc


class SasKeys:
    """One side's ephemeral SAS key pair (rule 1)."""

    def __init__(self) -> None:
        self._sas: vodozemac.Sas | None = vodozemac.Sas()
        self.public_key: str = self._sas.public_key.to_base64()

    def agree(self, their_key: str) -> SharedSas:
        """The shared secret with the other side's key; a ``SasKeys`` agrees once.

        Raises ``CryptoError`` if the key is malformed or this pair was used already.
        """
        if self._sas is None:
            raise CryptoError("this SAS key pair was used already")
        try:
            key = vodozemac.Curve25519PublicKey.from_base64(their_key)
            established = self._sas.diffie_hellman(key)
        except (vodozemac.KeyException, vodozemac.SasException, ValueError) as exc:
            raise CryptoError("the other side's SAS key is malformed") from exc
        self._sas = None
        return SharedSas(established)
