"""Listening sockets, bound before anything claims to serve, with errors a person can act on."""

from __future__ import annotations

import errno
import socket

from exporter.config import flag_name


class ListenError(Exception):
    """An address cannot be listened on; the message is one line with what to do."""

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(message)
        self.errno = code


def shown(host: str, port: int) -> str:
    """Return ``host:port`` as it is typed (IPv6 hosts in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def hint(code: int | None, port: int) -> str:
    """Return what to do about a bind that failed with ``code`` ("" when nothing useful)."""
    return {
        errno.EADDRINUSE: f"another process listens there (perhaps a running exporter: "
        f"`ss -ltnp 'sport = :{port}'`); pick another with {flag_name('web_listen_address')}",
        errno.EACCES: "ports below 1024 need root or CAP_NET_BIND_SERVICE",
        errno.EADDRNOTAVAIL: "no interface of this host has that address",
    }.get(code or 0, "")


def bind(host: str, port: int, *, listen: bool = True) -> socket.socket:
    """Return a socket bound to ``host:port`` (listening unless told not to); ListenError."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as e:
        raise ListenError(e.errno, f"cannot listen on {shown(host, port)}: {e}") from e
    try:
        # As aiohttp's own sites: a restart may bind while old connections sit in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        if listen:
            sock.listen(128)
    except OSError as e:
        sock.close()
        what = f"cannot listen on {shown(host, port)}: {(e.strerror or str(e)).lower()}"
        advice = hint(e.errno, port)
        raise ListenError(e.errno, f"{what}; {advice}" if advice else what) from e
    return sock


def bind_all(addresses: list[tuple[str, int]]) -> list[socket.socket]:
    """Return a listening socket per address, or close them all and raise ListenError."""
    sockets: list[socket.socket] = []
    try:
        for host, port in addresses:
            sockets.append(bind(host, port))
    except ListenError:
        for s in sockets:
            s.close()
        raise
    return sockets
