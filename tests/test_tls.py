"""Mutual TLS between the master and its clients, with certificates made by `openssl` here."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
from conftest import Cluster, logdispatch, wait_for

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="openssl is not installed: apt-get install openssl"
)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(where: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=where,
    )  # fmt: skip


def _leaf(where: Path, name: str, ca: str) -> None:
    (where / f"{name}.ext").write_text(
        "subjectAltName=IP:127.0.0.1\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "authorityKeyIdentifier=keyid\n"
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
        cwd=where,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
        cwd=where,
    )  # fmt: skip
    (where / f"{name}.key").chmod(0o600)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ca: the cluster's CA, with master, worker; other-ca, with stranger."""
    where = tmp_path_factory.mktemp("certs")
    _ca(where, "ca")
    _ca(where, "other-ca")
    _leaf(where, "master", "ca")
    _leaf(where, "worker", "ca")
    _leaf(where, "stranger", "other-ca")
    return where


def tls(certs: Path, name: str, ca: str = "ca") -> list[str]:
    return [
        "--tls-cert", str(certs / f"{name}.pem"), "--tls-key", str(certs / f"{name}.key"),
        "--tls-ca", str(certs / f"{ca}.pem"),
    ]  # fmt: skip


def _status(cluster: Cluster, *extra: str) -> subprocess.CompletedProcess[str]:
    key = ["--address", cluster.address, "--authkey-file", str(cluster.key_file)]
    return logdispatch("status", *key, "--json", *extra)


def test_a_worker_counts_files_through_a_tls_master(cluster: Cluster, certs: Path) -> None:
    master = cluster.serve(*tls(certs, "master"))
    cluster.work(*tls(certs, "worker"))
    (cluster.root / "a.log").write_bytes(b"ERROR one\nfine\nFATAL two\n")
    wait_for(lambda: cluster.files().get("a.log", {}).get("status") == "done")
    assert (cluster.files()["a.log"]["lines"], cluster.files()["a.log"]["error_lines"]) == (3, 2)
    shown = _status(cluster, *tls(certs, "worker"))
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["since_start"]["done"] == 1
    assert "refused" not in master.output


def test_clients_without_a_trusted_certificate_are_refused_and_logged(
    cluster: Cluster, certs: Path
) -> None:
    master = cluster.serve(*tls(certs, "master"))
    # A certificate from another CA: the master refuses it, the worker stops with one line.
    stranger = cluster.work(*tls(certs, "stranger"))
    assert stranger.wait(20) == 2
    assert "TLS with the master at 127.0.0.1" in stranger.output
    assert "check --tls-cert, --tls-key and --tls-ca" in stranger.output
    assert "Traceback" not in stranger.output
    wait_for(lambda: "TLS handshake failed: " in master.output)
    doubted = _status(cluster, *tls(certs, "stranger"))
    assert doubted.returncode == 2
    assert doubted.stderr.startswith("logdispatch status: error: TLS with the master at")
    assert len(doubted.stderr.splitlines()) == 1

    # TLS without a certificate.
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    raw = socket.create_connection(("127.0.0.1", cluster.port))
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.settimeout(10)
        with pytest.raises(ssl.SSLError, match="CERTIFICATE_REQUIRED"):
            sock.recv(1)
    wait_for(lambda: "peer did not return a certificate" in master.output)

    # No TLS at all: the master waits for a TLS hello that never comes, and hangs up.
    plain = _status(cluster)
    assert plain.returncode == 2
    assert "cannot reach the master" in plain.stderr
    wait_for(lambda: "no login within 5 s" in master.output)

    # A master with another CA: the worker refuses it.
    assert master.popen.poll() is None
    cluster.work(*tls(certs, "worker"))
    (cluster.root / "after.log").write_bytes(b"ERROR still serving\n")
    wait_for(lambda: cluster.files().get("after.log", {}).get("status") == "done")


def test_a_worker_refuses_a_master_whose_certificate_it_does_not_trust(
    cluster: Cluster, certs: Path
) -> None:
    cluster.serve(*tls(certs, "master"))
    doubting = cluster.work(*tls(certs, "worker", ca="other-ca"))
    assert doubting.wait(20) == 2
    assert "certificate verify failed" in doubting.output


def test_tls_options_go_together_and_bad_files_are_one_line_errors(
    cluster: Cluster, certs: Path
) -> None:
    key = ["--address", cluster.address, "--authkey-file", str(cluster.key_file)]
    alone = logdispatch("work", *key, "--tls-cert", str(certs / "worker.pem"))
    assert alone.returncode == 2
    assert "--tls-cert, --tls-key and --tls-ca go together" in alone.stderr
    swapped = tls(certs, "worker")
    swapped[3] = str(certs / "master.key")  # another certificate's key
    mismatched = logdispatch("status", *key, *swapped)
    assert mismatched.returncode == 2
    assert "key values mismatch" in mismatched.stderr
    assert len(mismatched.stderr.splitlines()) == 1
    missing = logdispatch(
        "serve", str(cluster.root), *key, "--state", str(cluster.state),
        *tls(certs, "nobody"),
    )  # fmt: skip
    assert missing.returncode == 2
    assert "cannot read --tls-cert" in missing.stderr
    # Also from the environment, as every option.
    shown = logdispatch(
        "config", "--json", "work",
        env={"LOGDISPATCH_TLS_CA": str(certs / "ca.pem")},
    )  # fmt: skip
    assert json.loads(shown.stdout)["options"]["tls-ca"]["source"] == "env"
