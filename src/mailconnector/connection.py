"""The Email connection: how to reach one account's SMTP and IMAP servers and how to log in.

A validated model (pydantic), built in code or from a project file. Secret fields accept
``${env:NAME}`` / ``${file:PATH}`` references, resolved at load time so that a missing variable is
reported as a configuration error naming the field, before anything touches the network.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from . import secrets
from ._providers import PROVIDERS, Provider, provider_of
from ._validation import config_error_from_validation

__all__ = [
    "PRESETS",
    "AuthSettings",
    "Connection",
    "OAuth2Settings",
    "SendingLimits",
    "ServerSettings",
    "Timeouts",
    "TlsSettings",
]

Security = Literal["ssl", "starttls", "none"]

DEFAULT_PORTS: dict[str, dict[str, int]] = {
    "smtp": {"ssl": 465, "starttls": 587, "none": 25},
    "imap": {"ssl": 993, "starttls": 143, "none": 143},
}

# The `provider:` presets of the smtp and imap blocks (docs: README, the project file).
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    name: {"smtp": provider.smtp, "imap": provider.imap} for name, provider in PROVIDERS.items()
}

# Well-known ports whose meaning is certain enough to refuse a contradicting setting.
_PORT_MEANING: dict[int, tuple[str, str, str]] = {
    # port: (protocol, security, words)
    25: ("smtp", "plain", "the SMTP relay port (plain or STARTTLS)"),
    465: ("smtp", "ssl", "the SMTP over TLS port"),
    587: ("smtp", "starttls", "the SMTP submission port (STARTTLS)"),
    143: ("imap", "starttls", "the IMAP port (plain or STARTTLS)"),
    993: ("imap", "ssl", "the IMAP over TLS port"),
}

_HOSTNAME = re.compile(r"^(?=.{1,253}$)(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*\.?$")


def _resolve_secret(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, str):
        base = (info.context or {}).get("base_dir")
        try:
            return secrets.resolve(value, base_dir=base)
        except secrets.SecretReferenceError as exc:
            raise ValueError(str(exc)) from None
    return value


Secret = Annotated[SecretStr, BeforeValidator(_resolve_secret)]


class _Model(BaseModel):
    # hide_input_in_errors: a rejected value may be a password.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True, frozen=True)


class ServerSettings(_Model):
    """One server: SMTP or IMAP."""

    host: str
    port: int = Field(description="default: the security mode's usual port")
    security: Security = "ssl"
    username: str | None = Field(None, description="login name when it differs from auth.username")

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("host is empty")
        if any(c in v for c in "\r\n\t\0 "):
            raise ValueError("host contains whitespace or control characters")
        bare = v[1:-1] if v.startswith("[") and v.endswith("]") else v
        try:
            ipaddress.ip_address(bare)
            return bare
        except ValueError:
            pass
        try:
            ascii_host = bare.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"{v!r} is not a valid host name") from None
        if not _HOSTNAME.match(ascii_host):
            raise ValueError(f"{v!r} is not a valid host name or IP address")
        return v

    @field_validator("port", mode="before")
    @classmethod
    def _port_not_bool(cls, v: Any) -> Any:
        # YAML reads `port: yes` as True, which would otherwise become port 1.
        if isinstance(v, bool):
            raise ValueError("must be a port number, not true/false")
        return v

    @field_validator("port")
    @classmethod
    def _port(cls, v: int) -> int:
        if not 1 <= v <= 65535:
            raise ValueError(f"{v} is not a TCP port (1 to 65535)")
        return v


class TlsSettings(_Model):
    verify: bool = Field(True, description="check the server certificate and host name; false is logged")
    ca_file: Path | None = Field(None, description="PEM file of the CA(s) to trust instead of the system's")
    client_cert: Path | None = Field(None, description="PEM client certificate (with its key, or see client_key)")
    client_key: Path | None = None


class Timeouts(_Model):
    connect: float = Field(15.0, gt=0, le=600, description="seconds to open a connection")
    command: float = Field(60.0, gt=0, le=3600, description="seconds to wait for any server reply")


class OAuth2Settings(_Model):
    provider: Literal["microsoft365", "google", "generic"]
    grant: Literal["client_credentials", "password", "refresh_token"]
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: Secret | None = None
    refresh_token: Secret | None = None
    scopes: list[str] = Field(default_factory=list)
    authority_host: str | None = Field(None, description="Microsoft 365: default login.microsoftonline.com")
    token_url: str | None = Field(None, description="generic (and Google) token endpoint")
    service_account_file: Path | None = Field(None, description="Google: service account JSON key")
    mechanism: Literal["xoauth2", "oauthbearer"] = "xoauth2"
    client_auth: Literal["post", "basic"] = Field(
        "post", description="generic: client_id/client_secret in the form (post) or as HTTP Basic (basic)"
    )
    token_cache: bool = Field(True, description="keep access tokens in the project's store between runs")

    @model_validator(mode="after")
    def _grant_needs(self) -> OAuth2Settings:
        need: list[str] = []
        if self.provider == "generic" and not self.token_url:
            need.append("token_url")
        if self.grant == "client_credentials":
            if self.provider == "google":
                if not self.service_account_file:
                    need.append("service_account_file")
            else:
                need += [f for f in ("client_id", "client_secret") if not getattr(self, f)]
                if self.provider == "microsoft365" and not self.tenant_id:
                    need.append("tenant_id")
        elif self.grant == "refresh_token":
            need += [f for f in ("client_id", "refresh_token") if not getattr(self, f)]
        elif self.grant == "password" and not self.client_id:
            need.append("client_id")
        if need:
            raise ValueError(f"grant {self.grant!r} with provider {self.provider!r} needs {', '.join(need)}")
        return self

    def effective_scopes(self) -> list[str]:
        if self.scopes:
            return self.scopes
        provider = provider_of(oauth2=self.provider)
        return list(provider.oauth2_scopes) if provider is not None else []


class AuthSettings(_Model):
    type: Literal["basic", "oauth2", "none"] = Field(
        "basic", description="none: send through an SMTP relay that takes mail without a login (no IMAP)")
    username: str = Field("", validate_default=True, description="the login name (not needed with type none)")
    password: Secret | None = None
    oauth2: OAuth2Settings | None = None

    @field_validator("username")
    @classmethod
    def _username(cls, v: str, info: ValidationInfo) -> str:
        if info.data.get("type") != "none" and not v.strip():
            raise ValueError("username is empty" if v else "username is required")
        if any(c in v for c in "\r\n\0"):
            raise ValueError("username contains CR, LF or NUL")
        return v

    @model_validator(mode="after")
    def _complete(self) -> AuthSettings:
        if self.type == "none":
            if self.password is not None or self.oauth2 is not None:
                raise ValueError("auth.type none logs in nowhere: remove password and oauth2, or set type basic")
            return self
        if self.type == "basic" and self.password is None:
            raise ValueError("basic auth needs a password (write it as ${env:NAME} or ${file:PATH})")
        if self.type == "oauth2":
            if self.oauth2 is None:
                raise ValueError("auth.type oauth2 needs an oauth2 block (provider, grant, client_id, ...)")
            if self.oauth2.grant == "password" and self.password is None:
                raise ValueError("the password grant needs auth.password")
        return self


class SendingLimits(_Model):
    """What the account may send, held across every process and worker that sends as it (the state store)."""

    messages_per_minute: float | None = Field(None, gt=0, description="messages a minute, all senders together")
    recipients_per_day: int | None = Field(None, gt=0, description="recipients a day (UTC), all senders together; "
                                           "past it a record fails, to be sent by a rerun the next day")
    recipients_per_message: int | None = Field(None, gt=0, description="a record with more recipients fails "
                                               "(split it)")


class Connection(_Model):
    """A named, validated Email connection (SPEC section 1)."""

    name: str = "default"
    provider: Literal["microsoft365", "gmail", "icloud"] | None = Field(
        None, description="fills smtp/imap host, port and security"
    )
    activities: Literal["both", "send", "read"] = "both"
    auth: AuthSettings
    smtp: ServerSettings | None = None
    imap: ServerSettings | None = None
    tls: TlsSettings = Field(default_factory=TlsSettings)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    from_address: str | None = None
    server_files_sent: bool | None = Field(
        None, description="the server files each message submitted over SMTP into a Sent folder by itself "
        "(Microsoft 365 and Gmail do; default: true for those providers), so `mailconnector ledger reconcile` "
        "can look for an uncertain send there")
    sent_folder: str | None = Field(None, description="where the server files sent mail (default: the folder "
                                    "marked \\Sent)")
    limits: SendingLimits | None = Field(None, description="sending limits of the account (default: the "
                                         "provider's documented ones for Microsoft 365 and Gmail, else none)")

    @property
    def files_sent_mail(self) -> bool:
        if self.server_files_sent is not None:
            return self.server_files_sent
        return self.provider is not None and PROVIDERS[self.provider].files_sent_mail

    @model_validator(mode="before")
    @classmethod
    def _fill_defaults(cls, data: Any) -> Any:
        """Provider presets first, then each server's port from its security mode."""
        if not isinstance(data, Mapping):
            return data
        merged = dict(data)
        preset = merged.get("provider")
        for proto in ("smtp", "imap"):
            given = merged.get(proto)
            if isinstance(preset, str) and preset in PRESETS and (given is None or isinstance(given, Mapping)):
                given = {**PRESETS[preset][proto], **(given or {})}
            # Only an absent port takes the default: an explicit 0 must reach the port check and be refused.
            if isinstance(given, Mapping) and given.get("port") is None:
                security = given.get("security", "ssl")
                if security in DEFAULT_PORTS[proto]:
                    given = {**given, "port": DEFAULT_PORTS[proto][security]}
            if given is not None:
                merged[proto] = given
        return merged

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v or "/" in v or ":" in v or any(ord(c) < 32 for c in v):
            raise ValueError("a connection name must be non-empty and contain no '/', ':' or control characters")
        return v

    @field_validator("from_address")
    @classmethod
    def _from(cls, v: str | None) -> str | None:
        if v is not None and any(c in v for c in "\r\n\0"):
            raise ValueError("from_address contains CR, LF or NUL")
        return v

    @model_validator(mode="after")
    def _servers(self) -> Connection:
        problems: list[str] = []
        for proto in ("smtp", "imap"):
            needed = self.activities in ("both", "send" if proto == "smtp" else "read")
            server: ServerSettings | None = getattr(self, proto)
            if server is None:
                if needed:
                    problems.append(f"{proto}: required because activities is {self.activities!r}")
                continue
            if proto == "imap" and self.auth.type == "none":
                problems.append("auth.type none: IMAP always needs a login; give credentials, or remove the "
                                "imap block and set activities: send for a send-only relay connection")
                continue
            problem = _port_problem(proto, server.port, server.security)
            if problem:
                problems.append(f"{proto}.port: {problem}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # --------------------------------------------------------------- loading
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, name: str | None = None, source: str | None = None,
                  base_dir: Path | None = None, locate: Any = None) -> Connection:
        """Validate a mapping (a project file entry); errors become one ``ConfigError`` naming each field."""
        payload = dict(data)
        if name is not None:
            payload["name"] = name
        try:
            return cls.model_validate(payload, context={"base_dir": base_dir})
        except ValidationError as exc:
            prefix = f"connections.{name}" if name else None
            raise config_error_from_validation(exc, source=source, prefix=prefix, locate=locate) from None

    # ------------------------------------------------------------ convenience
    def smtp_login(self) -> str:
        assert self.smtp is not None
        return self.smtp.username or self.auth.username

    def imap_login(self) -> str:
        assert self.imap is not None
        return self.imap.username or self.auth.username

    def sending_limits(self) -> SendingLimits:
        """``limits:``, each field not given taken from the provider's documented limits."""
        provider = self.known_provider()
        preset: dict[str, Any] = dict(provider.limits) if provider is not None else {}
        given = self.limits.model_dump(exclude_none=True) if self.limits is not None else {}
        return SendingLimits.model_validate({**preset, **given})

    def known_provider(self) -> Provider | None:
        """The big provider behind this connection: named (``provider:``, ``auth.oauth2.provider``) or told
        by its host names; None for any other server."""
        oauth2 = self.auth.oauth2.provider if self.auth.oauth2 is not None else None
        hosts = [s.host for s in (self.smtp, self.imap) if s is not None]
        return provider_of(self.provider, *hosts, oauth2=oauth2)

    @property
    def account(self) -> str:
        """Who sends: the login, or for a relay without one (auth type none) the sender address, else the
        server. Derived Message-IDs depend on it, not on the connection's name (a rename sends nothing again)."""
        if self.auth.username:
            return self.auth.username
        if self.from_address:
            return self.from_address
        return f"{self.smtp.host}:{self.smtp.port}" if self.smtp is not None else ""

    def serves(self, activity: Literal["send", "read"]) -> bool:
        return self.activities in ("both", activity)


def _port_problem(proto: str, port: int, security: str) -> str | None:
    meaning = _PORT_MEANING.get(port)
    if meaning is None:
        return None
    other, port_security, words = meaning
    if other != proto:
        proper = DEFAULT_PORTS[proto][security]
        mode = {"ssl": "over TLS", "starttls": "with STARTTLS", "none": "in plain text"}[security]
        return f"{port} is {words}; {proto.upper()} {mode} uses {proper}"
    if port_security == "ssl" and security != "ssl":
        return f"{port} is {words} (implicit TLS); set security: ssl, or use port {DEFAULT_PORTS[proto][security]}"
    if port_security in ("starttls", "plain") and security == "ssl":
        return (f"{port} is {words}, which does not speak TLS at once; set security: starttls, "
                f"or use port {DEFAULT_PORTS[proto]['ssl']} for implicit TLS")
    return None
