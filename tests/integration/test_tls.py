"""`serve --tls-cert/--tls-key` with a private CA, and devices that pin it with --ca."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import arun
from strongroom import client, proto, server
from strongroom.cli._local import LocalServer


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_messaging_over_tls(tmp_path: Path) -> None:
    import httpx

    cert, key = _self_signed(tmp_path)
    data = server.init_data_dir(tmp_path / "data", "TLS Org")
    arun(server.migrate(data))
    token = data.read_admin_token()
    context = ssl.create_default_context(cafile=str(cert))
    with LocalServer(data.path, tls=(cert, key)) as srv:
        assert srv.url.startswith("https://")
        codes = {}
        with httpx.Client(base_url=srv.url, verify=context) as admin:
            auth = {"authorization": f"Bearer {token}"}
            for user in ("alice", "bob"):
                body = proto.encode_json(proto.UserAdd(user, ""))
                assert admin.post(
                    "/v1/admin/users", content=body, headers=auth
                ).is_success
                issued = admin.post(
                    f"/v1/admin/users/{user}/code", content=b"{}", headers=auth
                )
                codes[user] = proto.decode_json(issued.content, proto.CodeIssued).code
        for user in codes:
            arun(
                client.activate(
                    tmp_path / user, srv.url, user, codes[user], ca=str(cert)
                )
            )

        async def exchange() -> list[str]:
            async with client.Client(tmp_path / "alice") as alice:
                await alice.send_text("bob", "over TLS")
            async with client.Client(tmp_path / "bob") as bob:
                return [m.text for m in await bob.receive(0.2)]

        assert arun(exchange()) == ["over TLS"]
