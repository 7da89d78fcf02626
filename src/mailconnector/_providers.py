"""What the connector knows of the big mail providers, in one place: their servers, whether they file sent
mail by themselves, their OAuth2 scopes, and what to do when they refuse a password.

Everything that used to test a host name for "office365" or "gmail" asks ``provider_of`` instead. A leaf
module: it imports nothing of the package, so any layer may use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["PROVIDERS", "Provider", "provider_of"]


@dataclass(frozen=True)
class Provider:
    name: str  # the connection's `provider:` value
    smtp: dict[str, Any]  # the preset of the smtp block
    imap: dict[str, Any]
    host_markers: tuple[str, ...]  # parts of a host name that mean this provider, when `provider:` is not given
    files_sent_mail: bool  # the server files each message submitted over SMTP into Sent by itself
    password_refused: str  # the hint when a password login is refused
    smtp_password_refused: str = ""  # what to add to it for SMTP
    oauth2: str | None = None  # the `auth.oauth2.provider` name for its token endpoint
    oauth2_scopes: tuple[str, ...] = field(default=())
    # Its documented sending limits per mailbox (the connection's `limits:` defaults): a big run paces itself
    # to them instead of being throttled or blocked for a day.
    limits: dict[str, float] = field(default_factory=dict)


def _server(host: str, port: int, security: str) -> dict[str, Any]:
    """One server block's preset, so that each provider's two servers fit on one line of the table."""
    return {"host": host, "port": port, "security": security}


PROVIDERS: dict[str, Provider] = {p.name: p for p in (
    Provider("microsoft365", host_markers=("office365", "outlook"), files_sent_mail=True,
             smtp=_server("smtp.office365.com", 587, "starttls"), imap=_server("outlook.office365.com", 993, "ssl"),
             password_refused="Microsoft 365 turns basic auth off for most tenants: use auth.type oauth2",
             smtp_password_refused=", and make sure SMTP AUTH is enabled for the mailbox",
             oauth2="microsoft365", oauth2_scopes=("https://outlook.office365.com/.default",),
             # Exchange Online: 30 messages a minute, 10,000 recipients a day, 500 recipients a message.
             limits={"messages_per_minute": 30, "recipients_per_day": 10_000, "recipients_per_message": 500}),
    Provider("gmail", host_markers=("gmail", "google"), files_sent_mail=True,
             smtp=_server("smtp.gmail.com", 465, "ssl"), imap=_server("imap.gmail.com", 993, "ssl"),
             password_refused="Google needs an app password (with 2-step verification) or OAuth2",
             oauth2="google", oauth2_scopes=("https://mail.google.com/",),
             # Google Workspace: 2,000 messages a day per user (a free account: 500), at most 100 recipients per
             # message sent over SMTP. Counted here as recipients, which is the stricter reading.
             limits={"recipients_per_day": 2_000, "recipients_per_message": 100}),
    Provider("icloud", host_markers=("mail.me.com",), files_sent_mail=False,
             smtp=_server("smtp.mail.me.com", 587, "starttls"), imap=_server("imap.mail.me.com", 993, "ssl"),
             password_refused="iCloud needs an app-specific password"),
)}

def provider_of(name: str | None = None, *hosts: str, oauth2: str | None = None) -> Provider | None:
    """The provider a connection names (``provider:``, or its ``auth.oauth2.provider``), else the one its
    host names point at; None for any other server."""
    if name in PROVIDERS:
        return PROVIDERS[name]
    by_oauth = next((p for p in PROVIDERS.values() if oauth2 is not None and p.oauth2 == oauth2), None)
    if by_oauth is not None:
        return by_oauth
    lowered = " ".join(hosts).lower()
    return next((p for p in PROVIDERS.values() if any(marker in lowered for marker in p.host_markers)), None)
