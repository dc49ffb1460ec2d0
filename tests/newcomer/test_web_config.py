"""--web.config.file: the exporter-toolkit's TLS and basic auth, end to end with a real Prometheus.

A CA, a server and a client certificate are made here with openssl; Debian's
``prometheus`` scrapes the exporter on 127.0.0.1 over HTTPS with
``tls_config`` (the CA, a client certificate) and ``basic_auth``, as the
README's example says. Everything stays on loopback.
"""

from __future__ import annotations

import base64
import json
import shutil
import signal
import socket
import ssl
import subprocess
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import bcrypt
import pytest
import yaml

from exporter import webconfig
from exporter.webconfig import WebConfigError, WebConfigWatcher, parse_web_config
from tests.newcomer.certs import Pki, issue_server_certificate, make_pki
from tests.newcomer.support import Exporter, get, wait_answer
from tests.support.engine import engine_answers
from tests.support.ports import free_port
from tests.support.requirements import require

PASSWORD = "correct horse battery staple"
TOKEN = "newcomer-api-token-0123456789"

StartExporter = Callable[..., Exporter]


def basic(user: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def client_context(pki: Pki, *, with_cert: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    if with_cert:
        context.load_cert_chain(pki.client_cert, pki.client_key)
    return context


def write_config(path: Path, pki: Pki) -> Path:
    """Write a web config next to copies of the server's certificate and key (names relative)."""
    shutil.copy(pki.server_cert, path.parent / "server.crt")
    shutil.copy(pki.server_key, path.parent / "server.key")
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    doc = {
        "tls_server_config": {
            "cert_file": "server.crt",
            "key_file": "server.key",
            "client_ca_file": str(pki.ca_cert),
            "client_auth_type": "RequireAndVerifyClientCert",
            "min_version": "TLS12",
        },
        "basic_auth_users": {"prometheus": hashed},
        "http_server_config": {"headers": {"X-Content-Type-Options": "nosniff"}},
    }
    path.write_text(yaml.safe_dump(doc))
    return path


# -- the file format, no server -------------------------------------------


@pytest.mark.parametrize(
    ("doc", "named"),
    [
        ({"tls_server_config": {"cipher_suites": ["TLS_AES_128_GCM_SHA256"]}}, "cipher_suites"),
        ({"tls_server_config": {"client_allowed_sans": ["a"]}}, "client_allowed_sans"),
        ({"rate_limit": {"interval": "1s", "burst": 2}}, "rate_limit"),
        ({"basic_auth_users": {"alice": "plain-text"}}, "basic_auth_users.alice"),
        ({"basic_auth_users": {"bob": "$2y$10$tooshort"}}, "basic_auth_users.bob"),
        ({"tls_server_config": {"cert_file": "x"}}, "tls_server_config"),
        ({"tls_server_confg": {}}, "tls_server_confg: unknown key"),
        ({"http_server_config": {"headers": {"X-Evil": "1"}}}, "X-Evil"),
    ],
)
def test_what_the_exporter_cannot_honour_is_refused_by_name(
    tmp_path: Path, doc: dict[str, object], named: str
) -> None:
    with pytest.raises(WebConfigError, match=named):
        parse_web_config(yaml.safe_dump(doc), tmp_path)


def test_client_auth_types_python_cannot_do_are_refused(pki: Pki) -> None:
    for kind in ("RequestClientCert", "RequireAnyClientCert"):
        text = yaml.safe_dump(
            {
                "tls_server_config": {
                    "cert_file": str(pki.server_cert),
                    "key_file": str(pki.server_key),
                    "client_ca_file": str(pki.ca_cert),
                    "client_auth_type": kind,
                }
            }
        )
        with pytest.raises(WebConfigError, match=f"{kind}' is not supported"):
            parse_web_config(text, Path("/"))


def test_a_client_ca_without_a_policy_is_a_mistake_not_a_default(pki: Pki) -> None:
    text = yaml.safe_dump(
        {
            "tls_server_config": {
                "cert_file": str(pki.server_cert),
                "key_file": str(pki.server_key),
                "client_ca_file": str(pki.ca_cert),
            }
        }
    )
    with pytest.raises(WebConfigError, match="client_ca_file is set but client_auth_type"):
        parse_web_config(text, Path("/"))


def test_successful_bcrypt_checks_are_cached_within_a_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webconfig, "AUTH_CACHE_SIZE", 3)
    users = {f"u{i}": bcrypt.hashpw(f"p{i}".encode(), bcrypt.gensalt(rounds=4)) for i in range(6)}
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump({"basic_auth_users": {u: h.decode() for u, h in users.items()}}))
    watcher = WebConfigWatcher(path)
    for i in range(6):
        assert watcher.check_basic(basic(f"u{i}", f"p{i}")["Authorization"]) == f"u{i}"
        assert watcher.auth_cache_size() == min(i + 1, 3)
    assert watcher.check_basic(basic("u0", "wrong")["Authorization"]) is None
    assert watcher.check_basic(basic("nobody", "p0")["Authorization"]) is None
    assert watcher.check_basic("Basic !!!not-base64") is None
    assert watcher.check_basic("Bearer u0:p0") is None


def test_htpasswd_hashes_are_taken(tmp_path: Path) -> None:
    # The exporter-toolkit's own example: `htpasswd -nBC 10 "" | tr -d ':\n'` writes $2y$.
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$", 1)
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump({"basic_auth_users": {"alice": hashed}}))
    watcher = WebConfigWatcher(path)
    assert watcher.check_basic(basic("alice", "pw")["Authorization"]) == "alice"
    assert watcher.check_basic(basic("alice", "wrong")["Authorization"]) is None


def test_a_file_that_no_longer_loads_keeps_the_previous_config(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    path.write_text(yaml.safe_dump({"basic_auth_users": {"a": hashed}}))
    watcher = WebConfigWatcher(path)
    path.write_text("basic_auth_users: [this is not a mapping")
    assert set(watcher.current().users) == {"a"}
    path.write_text(yaml.safe_dump({"basic_auth_users": {"a": hashed, "b": hashed}}))
    assert set(watcher.current().users) == {"a", "b"}
    assert watcher.reloads == 1


# -- end to end -----------------------------------------------------------


@pytest.fixture
def served(exporters: StartExporter, pki: Pki, tmp_path: Path) -> tuple[Exporter, int, Path]:
    require(engine_answers(), "a Docker engine", needs="engine")
    config = write_config(tmp_path / "web.yml", pki)
    token = tmp_path / "token"
    token.write_text(TOKEN)
    port = free_port()
    exporter = exporters(
        f"--web.listen-address=127.0.0.1:{port}",
        f"--web.config.file={config}",
        f"--api.token-file={token}",
        f"--state.dir={tmp_path / 'state'}",
        f"--pod.base-dir={tmp_path / 'pods'}",
        "--poll.interval=1",
    )
    assert exporter.serving() == [f"https://127.0.0.1:{port}/metrics"]
    return exporter, port, config


@pytest.mark.prometheus
@pytest.mark.engine
@pytest.mark.promtool
def test_prometheus_scrapes_over_https_with_basic_auth_and_a_client_certificate(
    served: tuple[Exporter, int, Path], pki: Pki, tmp_path: Path
) -> None:
    require(
        shutil.which("prometheus") is not None, "prometheus (Debian's package)", needs="prometheus"
    )
    _, port, _ = served
    (tmp_path / "good.password").write_text(PASSWORD)
    (tmp_path / "bad.password").write_text("not it")
    tls = {
        "ca_file": str(pki.ca_cert),
        "cert_file": str(pki.client_cert),
        "key_file": str(pki.client_key),
    }

    def job(name: str, password_file: str) -> dict[str, object]:
        return {
            "job_name": name,
            "scheme": "https",
            "tls_config": tls,
            "basic_auth": {"username": "prometheus", "password_file": password_file},
            "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
        }

    prom_config = tmp_path / "prometheus.yml"
    prom_config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s"},
                "scrape_configs": [
                    job("sysinner-exporter", str(tmp_path / "good.password")),
                    job("wrong-password", str(tmp_path / "bad.password")),
                ],
            }
        )
    )
    prom_port = free_port()
    with (tmp_path / "prometheus.log").open("wb") as log:
        prometheus = subprocess.Popen(
            [
                str(shutil.which("prometheus")),
                f"--config.file={prom_config}",
                f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:

        def targets(answer_body: bytes) -> dict[str, dict[str, object]]:
            doc = json.loads(answer_body)
            return {t["labels"]["job"]: t for t in doc["data"]["activeTargets"]}

        def scraped(answer: object) -> bool:
            found = targets(answer.body)  # type: ignore[attr-defined]
            return (
                found.get("sysinner-exporter", {}).get("health") == "up"
                and found.get("wrong-password", {}).get("health") == "down"
            )

        answer = wait_answer(
            f"http://127.0.0.1:{prom_port}/api/v1/targets",
            60,
            lambda a: a.status == 200 and scraped(a),
        )
        found = targets(answer.body)
        assert found["sysinner-exporter"]["lastError"] == ""
        assert found["sysinner-exporter"]["scrapeUrl"] == f"https://127.0.0.1:{port}/metrics"
        assert "401 Unauthorized" in str(found["wrong-password"]["lastError"])

        query = urllib.parse.quote('sysinner_exporter_build_info{job="sysinner-exporter"}')
        result = json.loads(get(f"http://127.0.0.1:{prom_port}/api/v1/query?query={query}").body)[
            "data"
        ]["result"]
        assert len(result) == 1, result
    finally:
        prometheus.send_signal(signal.SIGTERM)
        prometheus.wait(timeout=30)


@pytest.mark.engine
def test_every_route_but_the_api_needs_basic_auth_and_plain_http_is_refused(
    served: tuple[Exporter, int, Path], pki: Pki
) -> None:
    _, port, _ = served
    base = f"https://127.0.0.1:{port}"
    context = client_context(pki)
    good = basic("prometheus", PASSWORD)
    for path in ("/", "/metrics", "/healthz", "/readyz", "/nowhere"):
        assert get(base + path, context=context).status == 401, path
        wrong = get(base + path, context=context, headers=basic("prometheus", "wrong"))
        assert wrong.status == 401, path
        assert wrong.headers["WWW-Authenticate"] == 'Basic realm="sysinner-exporter"'
        assert json.loads(wrong.body)["error"] == "authentication required"
    assert get(base + "/", context=context, headers=good).status == 200
    assert b"sysinner_exporter_up" in get(base + "/metrics", context=context, headers=good).body
    # /api: the bearer token, which shares the Authorization header with basic auth.
    api = base + "/api/v1/ping"
    assert get(api, context=context, headers=good).status == 401
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert get(api, context=context, headers=bearer).status == 200
    # No client certificate: RequireAndVerifyClientCert ends the handshake.
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        get(base + "/healthz", context=client_context(pki, with_cert=False), headers=good)
    # Plain HTTP to the TLS listener gets no HTTP answer at all.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            reply = s.recv(4096)
        except ConnectionResetError:
            reply = b""
    assert not reply.startswith(b"HTTP/"), reply


def _served_certificate(port: int, pki: Pki) -> bytes:
    context = client_context(pki)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


@pytest.mark.engine
def test_new_certificates_and_users_take_effect_without_a_restart(
    served: tuple[Exporter, int, Path], pki: Pki, tmp_path: Path
) -> None:
    exporter, port, config = served
    before = _served_certificate(port, pki)
    # A new server certificate from the same CA, written over the files the config names.
    cert, key = issue_server_certificate(pki.ca_cert, pki.ca_key, tmp_path / "renewed")
    (config.parent / "server.key").write_bytes(key.read_bytes())
    (config.parent / "server.crt").write_bytes(cert.read_bytes())
    after = _served_certificate(port, pki)  # the next handshake presents it
    assert after != before
    assert after == ssl.PEM_cert_to_DER_cert(cert.read_text())

    # A config that does not load keeps the one in force, and says so.
    original = config.read_text()
    config.write_text("basic_auth_users: [broken")
    base = f"https://127.0.0.1:{port}"
    context = client_context(pki)
    good = basic("prometheus", PASSWORD)
    assert get(base + "/healthz", context=context, headers=good).status == 200
    record = exporter.wait_log(lambda r: r["msg"].startswith("web config not reloaded"), 10)
    assert record["level"] == "error"

    # A client auth policy is fixed when a connection is accepted: a change is refused
    # (and said), never taken silently while the old policy goes on being enforced.
    loose = yaml.safe_load(original)
    loose["tls_server_config"]["client_auth_type"] = "VerifyClientCertIfGiven"
    config.write_text(yaml.safe_dump(loose))
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        get(base + "/healthz", context=client_context(pki, with_cert=False), headers=good)
    exporter.wait_log(
        lambda r: r["msg"].endswith("client_auth_type changed: that takes a restart"), 10
    )

    # A new user: on change, and SIGHUP reloads at once too.
    doc = yaml.safe_load(original)
    doc["basic_auth_users"]["second"] = bcrypt.hashpw(b"pw2", bcrypt.gensalt(rounds=4)).decode()
    config.write_text(yaml.safe_dump(doc))
    assert exporter.proc is not None
    exporter.proc.send_signal(signal.SIGHUP)
    exporter.wait_log(lambda r: r["msg"].startswith("web config reloaded"), 10)
    answer = get(base + "/", context=context, headers=basic("second", "pw2"))
    assert answer.status == 200
    assert answer.headers["X-Content-Type-Options"] == "nosniff"

    # Another client CA: the clients it signed get in, the old ones no longer.
    other = make_pki(tmp_path / "other-ca")
    doc["tls_server_config"]["client_ca_file"] = str(other.ca_cert)
    config.write_text(yaml.safe_dump(doc))
    newcomer = ssl.create_default_context(cafile=str(pki.ca_cert))
    newcomer.load_cert_chain(other.client_cert, other.client_key)
    assert get(base + "/healthz", context=newcomer, headers=good).status == 200
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        get(base + "/healthz", context=context, headers=good)
