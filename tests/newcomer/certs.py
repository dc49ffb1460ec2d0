"""A CA and certificates made with the openssl CLI, for TLS tests on loopback."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pki:
    """Files of a test CA, a server certificate for 127.0.0.1 and a client certificate."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _issue(directory: Path, name: str, subject: str, ca: tuple[Path, Path], ext: str) -> None:
    key, csr, cert = (directory / f"{name}.{x}" for x in ("key", "csr", "crt"))
    extfile = directory / f"{name}.ext"
    extfile.write_text(ext)
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", subject)  # fmt: skip
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
             "-CAcreateserial", "-days", "2", "-out", str(cert),
             "-extfile", str(extfile))  # fmt: skip


def issue_server_certificate(ca_cert: Path, ca_key: Path, directory: Path) -> tuple[Path, Path]:
    """Issue a server certificate for 127.0.0.1, ::1 and localhost; return (cert, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    _issue(directory, "server", "/CN=127.0.0.1", (ca_cert, ca_key),
           "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\n"
           "extendedKeyUsage=serverAuth\n")  # fmt: skip
    return directory / "server.crt", directory / "server.key"


def make_pki(directory: Path) -> Pki:
    """Make a CA, a server certificate (127.0.0.1, ::1, localhost) and a client one."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.crt"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(ca_key), "-out", str(ca_cert), "-days", "2",
             "-subj", "/CN=sysinner-exporter test CA")  # fmt: skip
    issue_server_certificate(ca_cert, ca_key, directory)
    _issue(directory, "client", "/CN=prometheus", (ca_cert, ca_key),
           "extendedKeyUsage=clientAuth\n")  # fmt: skip
    return Pki(
        ca_cert,
        ca_key,
        directory / "server.crt",
        directory / "server.key",
        directory / "client.crt",
        directory / "client.key",
    )
