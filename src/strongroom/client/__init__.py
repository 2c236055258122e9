"""The Strongroom device SDK: activation, the encrypted local store, sending and receiving.

``Device`` is the core (decisions, no network); ``Client`` drives it over HTTP and the
stream; ``activate`` turns an empty device home into an activated device.
"""

from ._activation import ActivatedDevice, activate
from ._client import CLIENT_VERSION, Client, SendResult
from ._device import Device, Received
from ._store import LocalStore, Peer, StoredMessage

__all__ = [
    "CLIENT_VERSION",
    "ActivatedDevice",
    "Client",
    "Device",
    "LocalStore",
    "Peer",
    "Received",
    "SendResult",
    "StoredMessage",
    "activate",
]
