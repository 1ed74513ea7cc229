"""Email over SMTP (standard library smtplib; STARTTLS and login optional)."""

from __future__ import annotations

import hashlib
import smtplib
import socket
from email.message import EmailMessage

from . import ChannelError, Delivery, EmailSpec, alert_text


def message(spec: EmailSpec, d: Delivery) -> EmailMessage:
    subject, text = alert_text(d)
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = spec.sender
    msg["To"] = ", ".join(spec.to)
    # The same update always has the same Message-ID: mail systems that dedupe on it show it once.
    msg["Message-ID"] = f"<{hashlib.sha256(d.key.encode()).hexdigest()[:40]}@sitewatch>"
    msg["X-Sitewatch-Idempotency-Key"] = d.key
    msg.set_content(text)
    return msg


def send_email(spec: EmailSpec, d: Delivery) -> None:
    if not spec.to:
        raise ChannelError(f"channel {spec.name!r}: to got no address; expected at least one recipient")
    where = f"smtp://{spec.host}:{spec.port}"
    try:
        with smtplib.SMTP(spec.host, spec.port, timeout=spec.timeout) as s:
            if spec.starttls:
                s.starttls()
            if spec.username:
                s.login(spec.username, spec.password or "")
            s.send_message(message(spec, d))
    except smtplib.SMTPAuthenticationError as exc:
        raise ChannelError(f"channel {spec.name!r}: {where} refused the login for user {spec.username!r} (SMTP {exc.smtp_code})") from None
    except smtplib.SMTPException as exc:
        code = getattr(exc, "smtp_code", "")
        raise ChannelError(f"channel {spec.name!r}: {where} failed: {type(exc).__name__} {code}".rstrip()) from None
    except (OSError, socket.timeout) as exc:
        raise ChannelError(f"channel {spec.name!r}: could not reach {where}: {exc}") from None
