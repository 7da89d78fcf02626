"""Why a token request or a mail login was refused, in words an administrator can act on: advice, not token logic."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..errors import AuthenticationError, MailConnectorError
from ._base import _clean, jwt_claims

if TYPE_CHECKING:
    from ..connection import Connection


# AADSTS codes: what they mean for a mail connector, and what to do.
_AADSTS: dict[int, tuple[str, str]] = {
    7000215: ("wrong client secret",
              "copy the secret's Value (not its Secret ID) from the app registration's Certificates & secrets "
              "into auth.oauth2.client_secret, or create a new secret"),
    7000222: ("the client secret has expired",
              "create a new client secret in the app registration (Certificates & secrets) and update the project"),
    7000218: ("the application needs a client secret for this grant",
              "set auth.oauth2.client_secret, or allow public client flows in the app registration (Authentication)"),
    65001: ("consent is missing for the requested permissions",
            "in the app registration, API permissions: add IMAP.AccessAsApp / SMTP.SendAsApp (application) or "
            "IMAP.AccessAsUser.All / SMTP.Send (delegated), then 'Grant admin consent' for the tenant"),
    700016: ("the application was not found in this tenant",
             "check auth.oauth2.client_id (the Application (client) ID) and tenant_id (the Directory (tenant) ID); "
             "a single-tenant app only exists in its home tenant"),
    90002: ("the tenant was not found", "check auth.oauth2.tenant_id (the Directory (tenant) ID or a verified domain)"),
    900023: ("the tenant id is malformed", "check auth.oauth2.tenant_id"),
    50126: ("wrong username or password", "check auth.username and auth.password (the account's own password)"),
    50034: ("the user account does not exist in this tenant", "check auth.username (the user principal name)"),
    50053: ("the account is locked", "wait, or ask the administrator to unlock it"),
    50055: ("the password has expired", "change the account's password"),
    50057: ("the account is disabled", "ask the administrator to enable it"),
    50076: ("multi-factor authentication is required",
            "the password grant (ROPC) cannot do MFA: use the client_credentials grant (app-only access), or a "
            "refresh token obtained with `mailconnector auth login`, or exempt this account from MFA"),
    50079: ("multi-factor authentication registration is required",
            "the password grant (ROPC) cannot do MFA: use the client_credentials grant (app-only access), or a "
            "refresh token obtained with `mailconnector auth login`"),
    50158: ("an external security challenge is required", "use the client_credentials grant or `mailconnector "
            "auth login`; the password grant cannot answer interactive challenges"),
    53003: ("blocked by a Conditional Access policy", "ask the administrator to allow this app and location"),
    70011: ("the scope is not valid for this grant",
            "for client_credentials use the scope https://outlook.office365.com/.default; for delegated grants "
            "https://outlook.office365.com/IMAP.AccessAsUser.All and https://outlook.office365.com/SMTP.Send"),
    700082: ("the refresh token has expired (unused for too long)",
             "run `mailconnector auth login CONNECTION` again to get a new refresh token"),
    70008: ("the refresh token has expired or was revoked",
            "run `mailconnector auth login CONNECTION` again to get a new refresh token"),
    50173: ("the refresh token was revoked (the password changed?)",
            "run `mailconnector auth login CONNECTION` again to get a new refresh token"),
    500011: ("Exchange Online is not available in this tenant (resource principal not found)",
             "check the tenant has Exchange Online licences, and the scope https://outlook.office365.com/.default"),
    7000112: ("the application is disabled", "enable the application (enterprise application properties)"),
}


def _aadsts(result: dict[str, Any]) -> int | None:
    codes = result.get("error_codes")
    if isinstance(codes, list) and codes and isinstance(codes[0], int):
        return codes[0]
    desc = str(result.get("error_description", ""))
    if desc.startswith("AADSTS"):
        digits = "".join(c for c in desc[6:16] if c.isdigit())
        return int(digits) if digits else None
    return None


def _microsoft_error(result: dict[str, Any], grant: str) -> MailConnectorError:
    code = _aadsts(result)
    error = str(result.get("error", "error"))
    desc = str(result.get("error_description", "")).split(" Trace ID:")[0]
    meaning, hint = _AADSTS.get(code or 0, ("", ""))
    if not hint:
        if error == "invalid_client":
            meaning, hint = "the client was not accepted", "check client_id and client_secret"
        elif error == "invalid_grant" and grant == "refresh_token":
            meaning, hint = ("the refresh token was not accepted",
                             "run `mailconnector auth login CONNECTION` again to get a new refresh token")
        elif error == "invalid_scope":
            meaning, hint = "the scope is not valid", _AADSTS[70011][1]
        else:
            hint = "see the AADSTS code in Microsoft's sign-in error lookup, or the tenant's sign-in logs"
    label = f"AADSTS{code}" if code else error
    msg = f"Microsoft 365 refused the token request ({grant}): {label}"
    if meaning:
        msg += f": {meaning}"
    if desc:
        msg += f" — {_clean(desc, 300)}"
    return AuthenticationError(msg, hint=hint)


_USER_CLAIMS = ("upn", "preferred_username", "unique_name", "email", "sub")


def explain_refusal(connection: Connection, token: str | None, reply: str = "",
                    *, login: str | None = None) -> tuple[str, str]:
    """Why a mail server refused an OAuth2 login, as (words to add to the message, hint).

    Looks at the token's own claims when it is a JWT (expired? issued for someone else? for another
    resource?) and at the provider's usual causes (Exchange Online: service principal, mailbox permission,
    SMTP AUTH; Google: scope, IMAP access). Never repeats the token.
    """
    o = connection.auth.oauth2
    user = (login or connection.auth.username).lower()
    words: list[str] = []
    claims = jwt_claims(token) if token else None
    if claims:
        exp = claims.get("exp")
        if isinstance(exp, int | float) and exp <= time.time():
            when = datetime.fromtimestamp(exp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            words.append(f"the token expired {time.time() - exp:.0f} s ago (at {when})")
            return ("; " + "; ".join(words),
                    "the token endpoint handed out an expired token, or a clock is wrong: check the time on this "
                    "machine and on the token server")
        named = next((str(claims[c]) for c in _USER_CLAIMS if isinstance(claims.get(c), str) and "@" in claims[c]),
                     None)
        if named and named.lower() != user:
            return (f"; the token was issued for {named}, not for {user}",
                    f"get a token for {user} (sign in as that user with `mailconnector auth login`), or log in "
                    f"as {named}; for app-only tokens the mailbox is auth.username")
        aud = str(claims.get("aud", ""))
        if o is not None and o.provider == "microsoft365" and "graph.microsoft.com" in aud:
            return ("; the token is for Microsoft Graph, not Exchange Online",
                    "use the scope https://outlook.office365.com/.default (or the IMAP/SMTP delegated scopes)")
    provider = connection.known_provider()
    microsoft = provider is not None and provider.name == "microsoft365"
    google = provider is not None and provider.name == "gmail"
    text = reply.lower()
    if microsoft:
        if "5.7.139" in text or "smtpclientauthentication" in text or "smtp auth" in text:
            return ("; SMTP AUTH is disabled for this mailbox or tenant",
                    "enable SMTP AUTH for the mailbox (Exchange admin center > the mailbox > Email apps > "
                    "Authenticated SMTP, or Set-CASMailbox -SmtpClientAuthenticationDisabled $false)")
        if o is not None and o.grant == "client_credentials":
            return ("", "Exchange Online refused the app-only token: register the app's service principal in "
                        "Exchange Online (New-ServicePrincipal -AppId <client id> -ObjectId <enterprise app object "
                        "id>), give it the mailbox (Add-MailboxPermission -Identity <mailbox> -User <service "
                        "principal id> -AccessRights FullAccess), check the IMAP.AccessAsApp / SMTP.SendAsApp "
                        "permissions have admin consent, and for SMTP that SMTP AUTH is enabled for the mailbox")
        return ("", "Exchange Online refused the token: check the delegated permissions IMAP.AccessAsUser.All / "
                    "SMTP.Send have consent, that IMAP (or SMTP AUTH) is enabled for the mailbox, and that the "
                    "token's user is auth.username")
    if google:
        return ("", "Google refused the token: check the scope https://mail.google.com/, that IMAP is enabled for "
                    "the account, and (service account) that domain-wide delegation lists that scope")
    return ("", "the token was refused: check it is for this user, unexpired, and has the mail scope")
