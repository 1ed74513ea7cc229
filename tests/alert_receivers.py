"""Real local receivers for alert channel tests: an HTTP webhook receiver (stdlib
``ThreadingHTTPServer`` on 127.0.0.1) that verifies the HMAC-SHA256 signature, refuses the
first N deliveries with HTTP 503 and dedupes on ``Idempotency-Key`` (the receiver contract in
sitewatch.outbox); and an SMTP server (aiosmtpd) on 127.0.0.1, optionally with STARTTLS."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebhookReceiver:
    """``deliveries``: every request (headers, body) as received; ``effects``: the first body per
    idempotency key (what a deduping receiver acts on); ``effect_count``: times each key was
    acted on (always 1 when deduping works)."""

    def __init__(self, secret: str | None = None, refuse: int = 0, path: str = "/hook"):
        self.secret, self.refuse, self.path = secret, refuse, path
        self.deliveries: list[dict[str, Any]] = []
        self.effects: dict[str, Any] = {}
        self.effect_count: dict[str, int] = {}
        self.bad_signatures = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    outer.deliveries.append({"headers": dict(self.headers), "body": body, "path": self.path})
                    if self.path != outer.path:
                        return self._answer(404)
                    if outer.refuse > 0:
                        outer.refuse -= 1
                        return self._answer(503)
                    if outer.secret is not None:
                        want = "sha256=" + hmac.new(outer.secret.encode(), body, hashlib.sha256).hexdigest()
                        if not hmac.compare_digest(want, self.headers.get("X-Sitewatch-Signature", "")):
                            outer.bad_signatures += 1
                            return self._answer(401)
                    key = self.headers.get("Idempotency-Key") or f"no-key-{len(outer.deliveries)}"
                    if key not in outer.effects:
                        outer.effects[key] = json.loads(body)
                        outer.effect_count[key] = outer.effect_count.get(key, 0) + 1
                self._answer(200)

            def _answer(self, code: int) -> None:
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{path}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "WebhookReceiver":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


class SmtpReceiver:
    """An aiosmtpd server on 127.0.0.1; ``messages`` are the received email.message objects.
    With ``tls_cert=(certfile, keyfile)`` it offers STARTTLS and requires it."""

    def __init__(self, tls_cert: tuple[str, str] | None = None, refuse: int = 0):
        from aiosmtpd.controller import Controller

        self.messages: list[Any] = []
        self.refuse = refuse
        outer = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                if outer.refuse > 0:
                    outer.refuse -= 1
                    return "451 Try again later"
                outer.messages.append(message_from_bytes(envelope.content, policy=policy.default))
                return "250 OK"

        kw: dict[str, Any] = {}
        if tls_cert:
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls_cert)
            kw = {"tls_context": ctx, "require_starttls": True}
        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **kw)

    def __enter__(self) -> "SmtpReceiver":
        self.controller.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.controller.stop()


def self_signed_cert(folder: str) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (cert and key PEM paths) made with cryptography."""
    import datetime as dt
    import ipaddress
    import os

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cp, kp = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    with open(cp, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(kp, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cp, kp
