"""The server's data directory and its configuration file.

A data directory holds::

    strongroom.toml    configuration (TOML): organisation, listen address, storage, limits,
                       and the web console's password as an Argon2id hash only
    strongroom.db      the SQLite database (the embedded default)
    blobs/             attachment ciphertext, one file per blob (``[storage] blobs``)
    authority.pem      the organisation's Ed25519 authority key, mode 0600, never in the DB
    admin.token        the admin API credential, mode 0600 (the config keeps only its hash)
    run.json           written by a running server: its URL and process id
    logs/server.log    the server's log (never message content or keys)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import tomllib
from pathlib import Path

import msgspec
from argon2 import PasswordHasher

from strongroom.crypto import AuthorityKey
from strongroom.errors import ConfigError

__all__ = [
    "MIN_ADMIN_PASSWORD",
    "Config",
    "DataDir",
    "hash_admin_password",
    "init_data_dir",
]

#: The shortest console password accepted, in characters.
MIN_ADMIN_PASSWORD = 12


class Organisation(msgspec.Struct, frozen=True):
    name: str


class ServerSection(msgspec.Struct, frozen=True):
    host: str = "127.0.0.1"
    port: int = 8700


class Storage(msgspec.Struct, frozen=True):
    database: str = "sqlite:///strongroom.db"
    bus: str = "local:"
    #: Attachment ciphertext; relative to the data directory.  Every node of a cluster
    #: must see the same directory (a shared file system): a blob uploaded through one
    #: node is downloaded through any other.
    blobs: str = "blobs"

    def blob_dir(self, data_dir: Path) -> Path:
        path = Path(self.blobs)
        return path if path.is_absolute() else data_dir / path


class Admin(msgspec.Struct, frozen=True):
    token_sha256: str
    #: The web console's password as an Argon2id hash (PHC string); None: the console
    #: refuses every sign-in until ``strongroom admin password set`` sets one.
    password_argon2: str | None = None


class Limits(msgspec.Struct, frozen=True):
    code_ttl_seconds: int = 48 * 3600
    code_tries: int = 3
    activation_session_seconds: int = 300
    delivery_window: int = 512
    hello_timeout_seconds: float = 10.0
    #: Largest attachment blob (ciphertext: the file plus 16 bytes per 1 MiB chunk).
    max_attachment_bytes: int = 100 * 1024 * 1024
    #: How long a complete blob stays after nothing waits for it or names it any more.
    blob_grace_seconds: float = 24 * 3600
    #: How long an upload may make no progress before it is abandoned.
    upload_ttl_seconds: float = 24 * 3600
    #: How often expired state and unreferenced blobs are collected.
    prune_seconds: float = 600


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    organisation: Organisation
    admin: Admin
    server: ServerSection = ServerSection()
    storage: Storage = Storage()
    limits: Limits = Limits()


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def hash_admin_password(password: str) -> str:
    """The Argon2id hash (argon2-cffi's defaults) kept in ``[admin] password_argon2``.

    Raises ``ConfigError`` if the password is shorter than ``MIN_ADMIN_PASSWORD``.
    """
    if len(password) < MIN_ADMIN_PASSWORD:
        raise ConfigError(
            f"the console password needs at least {MIN_ADMIN_PASSWORD} characters"
        )
    return PasswordHasher().hash(password)


_PASSWORD_LINE = re.compile(r"^password_argon2\s*=.*$", re.MULTILINE)
_ADMIN_HEADER = re.compile(r"^\[admin\][ \t]*$", re.MULTILINE)


class DataDir:
    """Paths inside a server data directory, and loading what is in them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.config = path / "strongroom.toml"
        self.authority = path / "authority.pem"
        self.admin_token = path / "admin.token"
        self.run_file = path / "run.json"
        self.logs = path / "logs"

    def exists(self) -> bool:
        return self.config.exists() or self.authority.exists()

    def load_config(self) -> Config:
        """Raises ``ConfigError`` if the file is missing or malformed."""
        if not self.config.exists():
            raise ConfigError(
                f"{self.path} holds no Strongroom organisation: run `strongroom init` first"
            )
        try:
            raw = tomllib.loads(self.config.read_text())
            config = msgspec.convert(raw, Config)
        except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
            raise ConfigError(f"{self.config}: {exc}") from exc
        database = os.environ.get("STRONGROOM_DATABASE_URL")
        bus = os.environ.get("STRONGROOM_BUS_URL")
        if database or bus:
            storage = msgspec.structs.replace(
                config.storage,
                database=database or config.storage.database,
                bus=bus or config.storage.bus,
            )
            config = msgspec.structs.replace(config, storage=storage)
        return config

    def load_authority(self) -> AuthorityKey:
        if not self.authority.exists():
            raise ConfigError(f"the authority key {self.authority} is missing")
        mode = self.authority.stat().st_mode & 0o777
        if mode & 0o077:
            raise ConfigError(
                f"{self.authority} is readable by others (mode {mode:o}): chmod 600 it"
            )
        return AuthorityKey.from_pem(self.authority.read_bytes())

    def read_admin_token(self) -> str:
        if not self.admin_token.exists():
            raise ConfigError(f"the admin credential {self.admin_token} is missing")
        return self.admin_token.read_text().strip()

    def set_admin_password(self, password: str) -> None:
        """Replace the console password's hash in the config, keeping the rest of the
        file as written.  A running server reads it at its next start.

        Raises ``ConfigError`` (no config, a password that is too short, or a config
        that would not load afterwards).
        """
        self.load_config()
        line = f"password_argon2 = {json.dumps(hash_admin_password(password))}"
        text = self.config.read_text()
        if _PASSWORD_LINE.search(text):
            text = _PASSWORD_LINE.sub(lambda _: line, text, count=1)
        elif (header := _ADMIN_HEADER.search(text)) is not None:
            text = text[: header.end()] + "\n" + line + text[header.end() :]
        else:
            raise ConfigError(f"{self.config} has no [admin] section")
        temporary = self.config.with_name(self.config.name + ".new")
        temporary.write_text(text)
        os.chmod(temporary, self.config.stat().st_mode & 0o777)
        try:
            msgspec.convert(tomllib.loads(text), Config)
        except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
            temporary.unlink()
            raise ConfigError(f"{self.config}: {exc}") from exc
        os.replace(temporary, self.config)

    def server_url(self) -> str:
        """The URL of the running server (from run.json), else the configured address."""
        if self.run_file.exists():
            try:
                url = json.loads(self.run_file.read_text())["url"]
                if isinstance(url, str):
                    return url
            except (ValueError, KeyError, TypeError):
                pass
        config = self.load_config()
        return f"http://{config.server.host}:{config.server.port}"


def init_data_dir(
    path: Path,
    org: str,
    *,
    database: str | None = None,
    bus: str | None = None,
    admin_password: str | None = None,
) -> DataDir:
    """Create a new organisation in ``path``, on the named database and bus, with
    ``admin_password`` as the web console's password (None: no console sign-in until
    ``strongroom admin password set``).

    Raises ``ConfigError`` if ``path`` already holds one (an organisation's authority key
    is never overwritten), if a URL names no backend this build has, or if the password
    is too short.
    """
    from .bus import bus_from_url
    from .store import store_from_url

    database = database or Storage().database
    bus = bus or Storage().bus
    store_from_url(database, path)  # refuse a bad URL before anything is written
    bus_from_url(bus, "check")
    password_line = (
        ""
        if admin_password is None
        else f"password_argon2 = {json.dumps(hash_admin_password(admin_password))}\n"
    )
    data = DataDir(path)
    if data.exists():
        raise ConfigError(
            f"{path} already holds a Strongroom organisation; not overwriting it"
        )
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    data.logs.mkdir(exist_ok=True)
    authority = AuthorityKey.generate()
    _write_private(data.authority, authority.to_pem())
    token = secrets.token_urlsafe(32)
    _write_private(data.admin_token, (token + "\n").encode())
    data.config.write_text(
        "# Strongroom server configuration\n"
        "[organisation]\n"
        f"name = {json.dumps(org)}\n\n"
        "[server]\n"
        'host = "127.0.0.1"\n'
        "port = 8700\n\n"
        "[storage]\n"
        f"database = {json.dumps(database)}\n"
        f"bus = {json.dumps(bus)}\n\n"
        "[admin]\n"
        f'token_sha256 = "{token_hash(token)}"\n'
        f"{password_line}\n"
        "[limits]\n"
        "code_ttl_seconds = 172800\n"
        "code_tries = 3\n"
    )
    return data
