"""``--web.config.file``: TLS and basic auth in the exporter-toolkit's file format.

The file is the one node_exporter and every official exporter read
(prometheus/exporter-toolkit ``docs/web-configuration.md``)::

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      client_ca_file: ca.crt                      # optional
      client_auth_type: RequireAndVerifyClientCert  # default NoClientCert
      min_version: TLS12                          # default TLS12; max_version too
    basic_auth_users:
      alice: $2y$10$...                           # bcrypt hashes
    http_server_config:
      headers: {X-Frame-Options: deny}            # added to every answer

Whether the listeners speak TLS is decided at start-up (a config with
``tls_server_config`` at start gives TLS listeners, none gives plain HTTP).
After that, as the toolkit re-reads its file on every request, the
:class:`WebConfigWatcher` looks at the file (and the certificate files it
names) at every TLS handshake and every request and reloads what changed;
SIGHUP reloads at once. A file that no longer loads keeps the previous
configuration in force and is logged once per change; so does a change of
client_auth_type or TLS versions, which only a new listener could apply. Keys the toolkit
knows but Python's ``ssl`` cannot honour (``cipher_suites``,
``curve_preferences``, ``client_allowed_sans``, ``RequestClientCert``...)
are refused by name rather than silently ignored.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import logging
import os
import re
import ssl
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml

log = logging.getLogger(__name__)

#: The toolkit's version names, as Go's crypto/tls spells them.
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}

#: The toolkit's client_auth_type values Python's ssl can do, and what they become.
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}

#: Keys of the toolkit's format this exporter refuses, and why.
UNSUPPORTED = {
    "cipher_suites": "Python's ssl takes OpenSSL cipher strings, not Go's suite names",
    "curve_preferences": "Python's ssl sets one ECDH curve, not a preference list",
    "client_allowed_sans": "not implemented: use a client CA that signs only allowed clients",
    "prefer_server_cipher_suites": "OpenSSL's server preference is always on here",
    "rate_limit": "not implemented: put a reverse proxy in front to limit rates",
}

_TLS_KEYS = {
    "cert",
    "key",
    "client_ca",
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
}
_HEADERS = {
    "Content-Security-Policy",
    "X-Frame-Options",
    "X-Content-Type-Options",
    "X-XSS-Protection",
    "Strict-Transport-Security",
}

#: A bcrypt hash as htpasswd -B (2y) and the bcrypt libraries (2a, 2b) write it.
_BCRYPT = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")

#: Successful bcrypt checks kept, as the toolkit caches them: bcrypt is slow on purpose.
AUTH_CACHE_SIZE = 1024


class WebConfigError(ValueError):
    """The web config file cannot be read or says something this exporter cannot do."""


@dataclass(frozen=True)
class TlsServerConfig:
    """The ``tls_server_config`` section, resolved to file contents."""

    cert_pem: str
    key_pem: str
    client_ca_pem: str | None = None
    client_auth: ssl.VerifyMode = ssl.CERT_NONE
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3
    min_version_name: str = "TLS12"

    def ssl_context(self) -> ssl.SSLContext:
        """Return a server context with this certificate, key, client CA and versions."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = self.min_version
        context.maximum_version = self.max_version
        # load_cert_chain reads files only: the PEMs go through a private temp dir.
        with tempfile.TemporaryDirectory(prefix="sysinner-exporter-tls-") as tmp:
            cert, key = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
            cert.write_text(self.cert_pem)
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self.key_pem)
            try:
                context.load_cert_chain(cert, key)
            except ssl.SSLError as e:
                raise WebConfigError(f"tls_server_config: certificate or key: {e}") from e
        if self.client_ca_pem is not None:
            try:
                context.load_verify_locations(cadata=self.client_ca_pem)
            except ssl.SSLError as e:
                raise WebConfigError(f"tls_server_config: client CA: {e}") from e
        context.verify_mode = self.client_auth
        return context


@dataclass(frozen=True)
class WebConfig:
    """What ``--web.config.file`` says: TLS, basic auth users, extra headers."""

    tls: TlsServerConfig | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """Return one line saying what this config turns on."""
        parts = []
        if self.tls is not None:
            client = {
                ssl.CERT_NONE: "no client certificates",
                ssl.CERT_OPTIONAL: "client certificates verified when given",
                ssl.CERT_REQUIRED: "client certificates required",
            }[self.tls.client_auth]
            parts.append(f"TLS (min {self.tls.min_version_name}, {client})")
        else:
            parts.append("no TLS (plain HTTP)")
        if self.users:
            parts.append(f"basic auth for {len(self.users)} user{'s' * (len(self.users) > 1)}")
        else:
            parts.append("no basic auth")
        return ", ".join(parts)


def _mapping(value: object, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise WebConfigError(f"{where}: expected a mapping")
    return value


def _read(base: Path, value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise WebConfigError(f"{where}: expected a file name")
    path = base / value
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise WebConfigError(f"{where}: cannot read {path}: {e}") from e


def _pem(tls: dict[str, Any], base: Path, inline: str, file_key: str) -> str | None:
    """Return the PEM given inline or by file name; WebConfigError when both are given."""
    if tls.get(inline) and tls.get(file_key):
        raise WebConfigError(f"tls_server_config: give {inline} or {file_key}, not both")
    if tls.get(inline):
        value = tls[inline]
        if not isinstance(value, str):
            raise WebConfigError(f"tls_server_config.{inline}: expected a PEM string")
        return value
    if tls.get(file_key):
        return _read(base, tls[file_key], f"tls_server_config.{file_key}")
    return None


def _tls(tls: dict[str, Any], base: Path) -> TlsServerConfig:
    for name in tls:
        if name in UNSUPPORTED:
            raise WebConfigError(f"tls_server_config.{name}: not supported ({UNSUPPORTED[name]})")
        if name not in _TLS_KEYS:
            raise WebConfigError(f"tls_server_config.{name}: unknown key")
    cert = _pem(tls, base, "cert", "cert_file")
    key = _pem(tls, base, "key", "key_file")
    if cert is None or key is None:
        raise WebConfigError("tls_server_config: cert_file and key_file (or cert and key) needed")
    auth_name = tls.get("client_auth_type") or "NoClientCert"
    if auth_name not in CLIENT_AUTH:
        known = ", ".join(CLIENT_AUTH)
        raise WebConfigError(
            f"tls_server_config.client_auth_type: {auth_name!r} is not supported (one of "
            f"{known}; Python's ssl cannot ask for a certificate without verifying it)"
        )
    client_ca = _pem(tls, base, "client_ca", "client_ca_file")
    auth = CLIENT_AUTH[auth_name]
    if auth is not ssl.CERT_NONE and client_ca is None:
        raise WebConfigError(
            f"tls_server_config: client_auth_type {auth_name} needs client_ca_file"
        )
    if auth is ssl.CERT_NONE and client_ca is not None:
        # As the toolkit: a client CA with no policy is a mistake, not a default.
        raise WebConfigError(
            "tls_server_config: client_ca_file is set but client_auth_type is NoClientCert"
        )
    versions = {}
    for key_name, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        name = tls.get(key_name) or default
        if name not in TLS_VERSIONS:
            raise WebConfigError(
                f"tls_server_config.{key_name}: {name!r} is not one of {', '.join(TLS_VERSIONS)}"
            )
        versions[key_name] = name
    if TLS_VERSIONS[versions["min_version"]] > TLS_VERSIONS[versions["max_version"]]:
        raise WebConfigError("tls_server_config: min_version is above max_version")
    config = TlsServerConfig(
        cert,
        key,
        client_ca,
        auth,
        TLS_VERSIONS[versions["min_version"]],
        TLS_VERSIONS[versions["max_version"]],
        versions["min_version"],
    )
    config.ssl_context()  # fails here, naming the file, rather than at the first handshake
    return config


def parse_web_config(text: str, base: Path) -> WebConfig:
    """Return the config ``text`` describes; file names are relative to ``base``."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise WebConfigError(f"not valid YAML: {e}") from e
    doc = _mapping(doc, "the file")
    for key in doc:
        if key in UNSUPPORTED:
            raise WebConfigError(f"{key}: not supported ({UNSUPPORTED[key]})")
        if key not in ("tls_server_config", "basic_auth_users", "http_server_config"):
            raise WebConfigError(f"{key}: unknown key")
    tls_doc = _mapping(doc.get("tls_server_config"), "tls_server_config")
    tls = _tls(tls_doc, base) if tls_doc else None
    users: dict[str, bytes] = {}
    for user, hashed in _mapping(doc.get("basic_auth_users"), "basic_auth_users").items():
        if not isinstance(hashed, str) or not _BCRYPT.fullmatch(hashed):
            raise WebConfigError(f"basic_auth_users.{user}: expected a bcrypt hash ($2y$...)")
        users[user] = hashed.encode()
    http = _mapping(doc.get("http_server_config"), "http_server_config")
    headers: dict[str, str] = {}
    for key, value in http.items():
        if key == "http2":
            continue  # aiohttp serves HTTP/1.1 only; http2: true is the toolkit's default
        if key != "headers":
            raise WebConfigError(f"http_server_config.{key}: unknown key")
        for name, header in _mapping(value, "http_server_config.headers").items():
            if name not in _HEADERS:
                raise WebConfigError(f"http_server_config.headers.{name}: unknown header")
            if header:
                headers[name] = str(header)
    return WebConfig(tls, users, headers)


def load_web_config(path: Path) -> WebConfig:
    """Return the config in the file at ``path``; WebConfigError names what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise WebConfigError(f"cannot read {path}: {e}") from e
    try:
        return parse_web_config(text, path.parent)
    except WebConfigError as e:
        raise WebConfigError(f"{path}: {e}") from e


def _signature(paths: list[Path]) -> tuple[tuple[int, int, int, int], ...]:
    """Return what changes when any of ``paths`` is rewritten or replaced."""
    out = []
    for p in paths:
        try:
            st = p.stat()
            out.append((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        except OSError:
            out.append((0, 0, 0, 0))
    return tuple(out)


def _referenced_files(path: Path) -> list[Path]:
    """Return the config file and the certificate files it names (as far as it parses)."""
    files = [path]
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        tls = doc.get("tls_server_config") or {}
        for key in ("cert_file", "key_file", "client_ca_file"):
            if isinstance(tls.get(key), str):
                files.append(path.parent / tls[key])
    except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError):
        pass
    return files


class WebConfigWatcher:
    """The web config in force, reloaded when its files change (looked at per use) or on demand."""

    def __init__(self, path: Path) -> None:
        """Load ``path``; WebConfigError if it does not load now (start-up must fail)."""
        self._path = path
        self._lock = threading.Lock()
        self._files = _referenced_files(path)
        self._seen = _signature(self._files)
        self._config = load_web_config(path)
        self._context = self._config.tls.ssl_context() if self._config.tls else None
        self._auth_cache: OrderedDict[bytes, None] = OrderedDict()
        self.reloads = 0

    @property
    def path(self) -> Path:
        """Return the web config file's path."""
        return self._path

    @property
    def tls(self) -> bool:
        """Return whether the listeners speak TLS (decided at start-up)."""
        return self._context is not None

    def current(self) -> WebConfig:
        """Return the config in force, reloading first when its files changed."""
        files = self._files
        if _signature(files) != self._seen:
            self.reload()
        return self._config

    def reload(self) -> bool:
        """Re-read the file now; keep the config in force when the new one does not load."""
        with self._lock:
            files = _referenced_files(self._path)
            seen = _signature(files)
            self._files, self._seen = files, seen
            try:
                config = load_web_config(self._path)
                self._same_listener(config)
                context = config.tls.ssl_context() if config.tls else None
            except WebConfigError as e:
                log.error("web config not reloaded, the previous one stays in force: %s", e)
                return False
            self._config, self._context = config, context
            self._auth_cache.clear()
            self.reloads += 1
            log.info("web config reloaded from %s: %s", self._path, config.describe())
            return True

    def _same_listener(self, config: WebConfig) -> None:
        """Raise WebConfigError for a change only a new listener can make.

        A connection's TLS versions and client certificate policy are set when
        it is accepted, from the listener's context; the per-handshake swap
        brings certificates, keys and the client CA, not those. Taking such a
        change silently would leave, say, a tightened client_auth_type unenforced.
        """
        if (config.tls is None) != (self._context is None):
            raise WebConfigError("tls_server_config was added or removed: that takes a restart")
        old, new = self._config.tls, config.tls
        if old is not None and new is not None:
            for name, before, after in (
                ("client_auth_type", old.client_auth, new.client_auth),
                ("min_version", old.min_version, new.min_version),
                ("max_version", old.max_version, new.max_version),
            ):
                if before != after:
                    raise WebConfigError(f"tls_server_config.{name} changed: that takes a restart")

    def ssl_context(self) -> ssl.SSLContext | None:
        """Return the listeners' context: it hands each handshake the context in force."""
        if self._context is None:
            return None
        listener = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        # The listener's own settings are the start-up ones; sni_callback runs on
        # every ClientHello (server_name None without SNI) and swaps in the
        # current context, which is what the handshake then uses.
        initial = self._context
        listener.minimum_version = initial.minimum_version
        listener.maximum_version = initial.maximum_version
        listener.verify_mode = initial.verify_mode

        def per_handshake(
            sslobj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
        ) -> None:
            self.current()
            if self._context is not None:
                sslobj.context = self._context

        listener.sni_callback = per_handshake
        return listener

    def check_basic(self, header: str) -> str | None:
        """Return the user an ``Authorization: Basic`` header authenticates, else None."""
        users = self.current().users
        scheme, _, encoded = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, sep, password = (
                base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            return None
        hashed = users.get(user)
        if not sep or hashed is None:
            # Hash anyway so an unknown user takes as long as a wrong password.
            bcrypt.checkpw(password.encode(), _dummy_hash())
            return None
        key = hashlib.sha256(b"\0".join((user.encode(), password.encode(), hashed))).digest()
        with self._lock:
            if key in self._auth_cache:
                self._auth_cache.move_to_end(key)
                return user
        if not bcrypt.checkpw(password.encode(), hashed):
            return None
        with self._lock:
            self._auth_cache[key] = None
            while len(self._auth_cache) > AUTH_CACHE_SIZE:
                self._auth_cache.popitem(last=False)
        return user

    def auth_cache_size(self) -> int:
        """Return how many successful checks are cached (bounded by AUTH_CACHE_SIZE)."""
        return len(self._auth_cache)


@functools.cache
def _dummy_hash() -> bytes:
    """Return a hash to check unknown users against (made once, when first needed)."""
    return bcrypt.hashpw(b"not a password", bcrypt.gensalt(rounds=10))
