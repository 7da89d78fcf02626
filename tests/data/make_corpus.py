"""Write the golden corpus of test messages into ``tests/data/eml/``.

The .eml files are committed; this script only documents how they were made and regenerates them
byte for byte (it is deterministic). Run from the repository root:

    .venv/bin/python tests/data/make_corpus.py            # write tests/data/eml/*.eml
    .venv/bin/python tests/data/make_corpus.py --expected # also rewrite tests/data/expected/*.json

Rewriting the expected records takes the parser's word for it: read every changed file before
committing (``git diff tests/data/expected``). Messages use CRLF line ends except
``lf-line-endings.eml``, which tests the bare-LF form that mail stores keep on disk.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
EML = HERE / "eml"
EXPECTED = HERE / "expected"

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
PDF = b"%PDF-1.4\n% mailconnector test document\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n"
TNEF = bytes([0x78, 0x9F, 0x3E, 0x22, 0x01, 0x00, 0x01, 0x06, 0x90, 0x08, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00])


def b64(data: bytes) -> str:
    """Base64 in 76-character lines, as mailers write it."""
    return base64.encodebytes(data).decode("ascii").rstrip("\n")


def head(
    subject: str | None = "Test message",
    *,
    frm: str | None = "Alice Example <alice@example.test>",
    to: str | None = "Bob Example <bob@example.test>",
    date: str | None = "Fri, 01 Mar 2024 10:00:00 +0100",
    mid: str | None = "auto",
    name: str = "",
    mime: bool = True,
) -> str:
    """The usual top-level headers; pass None to leave one out."""
    lines = []
    if frm is not None:
        lines.append(f"From: {frm}")
    if to is not None:
        lines.append(f"To: {to}")
    if subject is not None:
        lines.append(f"Subject: {subject}")
    if date is not None:
        lines.append(f"Date: {date}")
    if mid is not None:
        lines.append(f"Message-ID: <{name or 'msg'}@example.test>" if mid == "auto" else f"Message-ID: {mid}")
    if mime:
        lines.append("MIME-Version: 1.0")
    return "\n".join(lines) + "\n"


def crlf(data: bytes) -> bytes:
    """CRLF line ends everywhere (the files are written with LF in this script for readability)."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


MESSAGES: dict[str, bytes] = {}


def add(name: str, text: str | bytes, *, line_ends: str = "crlf") -> None:
    data = text.encode("utf-8") if isinstance(text, str) else text
    MESSAGES[name] = crlf(data) if line_ends == "crlf" else data


# --------------------------------------------------------------------------------------------- layouts

add("text-only", head("Plain text only", name="text-only") + """\
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Hello Bob,

this message has one plain-text body with a few non-ASCII letters: äöü ß é ñ.

--\x20
Alice
""")

add("html-only", head("HTML only", name="html-only") + """\
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: quoted-printable

<html><body><p>Hello <b>Bob</b>, this message has only an HTML body =E2=80=94 =
no text part.</p></body></html>
""")

add("alternative", head("Text and HTML", name="alternative") + """\
Content-Type: multipart/alternative; boundary="alt-1"

This is a multi-part message in MIME format.
--alt-1
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 7bit

Hello Bob, plain version.
--alt-1
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: 7bit

<p>Hello Bob, <i>HTML</i> version.</p>
--alt-1--
""")

add("related-inline-image", head("HTML with an inline image", name="related-inline-image") + f"""\
Content-Type: multipart/related; boundary="rel-1"; type="text/html"

--rel-1
Content-Type: text/html; charset=utf-8

<p>Our logo: <img src="cid:logo-1@example.test" alt="logo"></p>
--rel-1
Content-Type: image/png; name="logo.png"
Content-Transfer-Encoding: base64
Content-ID: <logo-1@example.test>

{b64(PNG)}
--rel-1--
""")

add("mixed-attachments", head("Report and data attached", name="mixed-attachments") + f"""\
Content-Type: multipart/mixed; boundary="mix-1"

--mix-1
Content-Type: multipart/alternative; boundary="alt-2"

--alt-2
Content-Type: text/plain; charset=us-ascii

The report and the data are attached.
--alt-2
Content-Type: text/html; charset=us-ascii

<p>The report and the data are attached.</p>
--alt-2--

--mix-1
Content-Type: application/pdf; name="report.pdf"
Content-Disposition: attachment; filename="report.pdf"
Content-Transfer-Encoding: base64

{b64(PDF)}
--mix-1
Content-Type: text/csv; charset=utf-8; name="data.csv"
Content-Disposition: attachment; filename="data.csv"
Content-Transfer-Encoding: 7bit

id,name
1,alpha
2,beta
--mix-1--
""")

add("related-mixed-alternative", head("Alternative inside mixed inside related",
                                      name="related-mixed-alternative") + f"""\
Content-Type: multipart/related; boundary="rel-2"

--rel-2
Content-Type: multipart/mixed; boundary="mix-2"

--mix-2
Content-Type: multipart/alternative; boundary="alt-3"

--alt-3
Content-Type: text/plain; charset=utf-8

Deeply nested body text.
--alt-3
Content-Type: text/html; charset=utf-8

<p>Deeply nested <img src="cid:pic@example.test"> body.</p>
--alt-3--
--mix-2
Content-Type: application/pdf
Content-Disposition: attachment; filename="nested.pdf"
Content-Transfer-Encoding: base64

{b64(PDF)}
--mix-2--
--rel-2
Content-Type: image/png
Content-Transfer-Encoding: base64
Content-ID: <pic@example.test>

{b64(PNG)}
--rel-2--
""")

add("no-content-type", head("No MIME headers at all", name="no-content-type", mime=False) + """\

A message from before MIME: no MIME-Version, no Content-Type. It is plain US-ASCII text.
""")

add("attachment-only", head("Only an attachment", name="attachment-only") + f"""\
Content-Type: application/pdf; name="scan.pdf"
Content-Disposition: attachment; filename="scan.pdf"
Content-Transfer-Encoding: base64

{b64(PDF)}
""")

add("text-attachment", head("A text file attached", name="text-attachment") + """\
Content-Type: multipart/mixed; boundary="mix-3"

--mix-3
Content-Type: text/plain; charset=utf-8

See the notes.
--mix-3
Content-Type: text/plain; charset=utf-8
Content-Disposition: attachment; filename="notes.txt"

line one
line two
--mix-3--
""")

add("apple-mail-inline", head("Text, picture, more text", name="apple-mail-inline") + f"""\
Content-Type: multipart/mixed; boundary="apple-1"

--apple-1
Content-Type: text/plain; charset=us-ascii

Before the picture.
--apple-1
Content-Type: image/png; name="photo.png"
Content-Disposition: inline; filename="photo.png"
Content-Transfer-Encoding: base64

{b64(PNG)}
--apple-1
Content-Type: text/plain; charset=us-ascii

After the picture.
--apple-1--
""")

add("headers-only", head("Headers and no body", name="headers-only").rstrip("\n") + "\n")

# --------------------------------------------------------------------------------------------- names

add("unicode-filename-raw-utf8", head("Raw UTF-8 file name", name="unicode-filename-raw-utf8") + f"""\
Content-Type: multipart/mixed; boundary="mix-4"

--mix-4
Content-Type: text/plain; charset=utf-8

Attached: Überweisung März.
--mix-4
Content-Type: application/pdf; name="Überweisung März 2024.pdf"
Content-Disposition: attachment; filename="Überweisung März 2024.pdf"
Content-Transfer-Encoding: base64

{b64(PDF)}
--mix-4--
""")

add("rfc2231-filename", head("RFC 2231 file name", name="rfc2231-filename") + f"""\
Content-Type: multipart/mixed; boundary="mix-5"

--mix-5
Content-Type: text/plain; charset=utf-8

Price list attached.
--mix-5
Content-Type: application/pdf
Content-Disposition: attachment; filename*=utf-8''%E2%82%AC%20price%20list%20%E6%97%A5%E6%9C%AC.pdf
Content-Transfer-Encoding: base64

{b64(PDF)}
--mix-5--
""")

add("rfc2231-continuations", head("RFC 2231 continuations and charset", name="rfc2231-continuations") + f"""\
Content-Type: multipart/mixed; boundary="mix-6"

--mix-6
Content-Type: text/plain; charset=utf-8

A long Latin-1 name split over three parameters.
--mix-6
Content-Type: application/octet-stream
Content-Disposition: attachment;
 filename*0*=iso-8859-1'de'Gr%FC%DFe%20aus%20;
 filename*1*=K%F6ln%20und%20;
 filename*2="Bonn.txt"
Content-Transfer-Encoding: base64

{b64(b"Gruesse")}
--mix-6--
""")

add("encoded-word-filename", head("Encoded-word file name", name="encoded-word-filename") + f"""\
Content-Type: multipart/mixed; boundary="mix-7"

--mix-7
Content-Type: text/plain; charset=utf-8

Outlook style names.
--mix-7
Content-Type: application/pdf;
 name="=?utf-8?B?UmVjaG51bmcgTsKwIDQyIOKAkyDDnGJlcnNpY2h0LnBkZg==?="
Content-Disposition: attachment
Content-Transfer-Encoding: base64

{b64(PDF)}
--mix-7
Content-Type: image/png; name="=?iso-8859-1?Q?caf=E9_photo.png?="
Content-Transfer-Encoding: base64

{b64(PNG)}
--mix-7--
""")

add("inline-image-cid", head("Inline image with Content-ID in mixed", name="inline-image-cid") + f"""\
Content-Type: multipart/mixed; boundary="mix-8"

--mix-8
Content-Type: text/html; charset=utf-8

<p>Signature: <img src="cid:sig@example.test"></p>
--mix-8
Content-Type: image/png; name="sig.png"
Content-Disposition: inline; filename="sig.png"
Content-ID: <sig@example.test>
Content-Transfer-Encoding: base64

{b64(PNG)}
--mix-8--
""")

HOSTILE_NAMES = [
    "../../etc/passwd",
    "/etc/shadow",
    "C:\\\\Windows\\\\System32\\\\evil.exe",  # backslashes doubled: the name is a quoted-string
    "CON.txt",
    "nul",
    "LPT1.tar.gz",
    ".bashrc",
    "trailing dots. . .",
    "invoice\u202efdp.exe",
    "x" * 300 + ".pdf",
    "report.pdf",
    "report.pdf",
    "Report.PDF",
    "tab\there.txt",
]
add("hostile-filenames", head("Hostile attachment names", name="hostile-filenames") + """\
Content-Type: multipart/mixed; boundary="mix-9"

--mix-9
Content-Type: text/plain; charset=utf-8

Names that must never reach a file system unchanged.
""" + "".join(f"""\
--mix-9
Content-Type: application/octet-stream
Content-Disposition: attachment; filename="{fname}"
Content-Transfer-Encoding: base64

{b64(f"payload {index}".encode())}
""" for index, fname in enumerate(HOSTILE_NAMES)) + "--mix-9--\n")

# --------------------------------------------------------------------------------------------- special parts

FORWARDED = head("Original question", frm="Carol <carol@example.test>", name="inner-1") + """\
Content-Type: text/plain; charset=utf-8

Can you check the numbers?
"""

add("forwarded-message", head("Fwd: Original question", name="forwarded-message") + f"""\
Content-Type: multipart/mixed; boundary="fwd-1"

--fwd-1
Content-Type: text/plain; charset=utf-8

Forwarding Carol's message, attached whole.
--fwd-1
Content-Type: message/rfc822
Content-Disposition: attachment

{FORWARDED}
--fwd-1--
""")

ICS = """\
BEGIN:VCALENDAR
PRODID:-//Example//Calendar//EN
VERSION:2.0
METHOD:REQUEST
BEGIN:VEVENT
UID:meeting-1@example.test
DTSTART:20240305T090000Z
DTEND:20240305T100000Z
SUMMARY:Planning
ORGANIZER:mailto:alice@example.test
ATTENDEE;RSVP=TRUE:mailto:bob@example.test
END:VEVENT
END:VCALENDAR
"""

add("calendar-invite", head("Invitation: Planning", name="calendar-invite") + f"""\
Content-Type: multipart/alternative; boundary="cal-1"

--cal-1
Content-Type: text/plain; charset=utf-8

You are invited to Planning on 5 March, 09:00 UTC.
--cal-1
Content-Type: text/html; charset=utf-8

<p>You are invited to <b>Planning</b> on 5 March, 09:00 UTC.</p>
--cal-1
Content-Type: text/calendar; charset=utf-8; method=REQUEST
Content-Transfer-Encoding: 7bit

{ICS}--cal-1--
""")

add("winmail-dat", head("Outlook rich text", name="winmail-dat") + f"""\
Content-Type: multipart/mixed; boundary="tnef-1"

--tnef-1
Content-Type: text/plain; charset=us-ascii

The body Outlook sent alongside its TNEF blob.
--tnef-1
Content-Type: application/ms-tnef; name="winmail.dat"
Content-Disposition: attachment; filename="winmail.dat"
Content-Transfer-Encoding: base64

{b64(TNEF)}
--tnef-1--
""")

add("bounce-dsn", head("Undelivered Mail Returned to Sender",
                       frm="MAILER-DAEMON@mx.example.test (Mail Delivery System)",
                       to="alice@example.test", name="bounce-dsn") + """\
Content-Type: multipart/report; report-type=delivery-status; boundary="dsn-1"

--dsn-1
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.example.test.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<nobody@example.test>: host mx.example.test said: 550 5.1.1 User unknown

--dsn-1
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.test
Arrival-Date: Fri,  1 Mar 2024 10:00:01 +0100 (CET)

Final-Recipient: rfc822; nobody@example.test
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 User unknown

--dsn-1
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

From: Alice Example <alice@example.test>
To: nobody@example.test
Subject: Hello
Date: Fri, 01 Mar 2024 09:59:00 +0100

--dsn-1--
""")

add("multipart-digest", head("Digest of two messages", name="multipart-digest") + """\
Content-Type: multipart/digest; boundary="dig-1"

--dig-1

From: Dave <dave@example.test>
Subject: First digest entry

First.
--dig-1

From: Erin <erin@example.test>
Subject: Second digest entry

Second.
--dig-1--
""")

add("pgp-signed", head("Signed message", name="pgp-signed") + """\
Content-Type: multipart/signed; micalg=pgp-sha256; protocol="application/pgp-signature"; boundary="sig-1"

--sig-1
Content-Type: text/plain; charset=utf-8

This text is signed.
--sig-1
Content-Type: application/pgp-signature; name="signature.asc"
Content-Disposition: attachment; filename="signature.asc"

-----BEGIN PGP SIGNATURE-----

iHUEARYIAB0WIQTtest0000000000000000000000000000000000AAoJEtest
=abcd
-----END PGP SIGNATURE-----
--sig-1--
""")

# --------------------------------------------------------------------------------------------- charsets

add("charset-unknown", (head("Unknown charset label", name="charset-unknown") + """\
Content-Type: text/plain; charset="x-unknown"
Content-Transfer-Encoding: 8bit

""").encode("ascii") + "Caf\u00e9 cr\u00e8me \u2013 \u201cquoted\u201d\n".encode("cp1252"))

add("charset-mislabelled-utf8", (head("Declared UTF-8, really Latin-1", name="charset-mislabelled-utf8") + """\
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

""").encode("ascii") + "Gr\u00fc\u00dfe aus K\u00f6ln, \u00e0 bient\u00f4t.\n".encode("latin-1"))

add("charset-unknown-8bit", (head("unknown-8bit charset", name="charset-unknown-8bit") + """\
Content-Type: text/plain; charset=unknown-8bit
Content-Transfer-Encoding: 8bit

""").encode("ascii") + "Stra\u00dfe und \u00c4pfel \u2014 UTF-8 bytes under an unknown label.\n".encode("utf-8"))

add("charset-latin1-windows", (head("ISO-8859-1 label with Windows-1252 quotes", name="charset-latin1-windows") + """\
Content-Type: text/plain; charset=iso-8859-1
Content-Transfer-Encoding: quoted-printable

It=92s =93quoted=94 and costs =8020 =96 caf=E9.
""").encode("ascii"))

add("html-meta-charset", (head("HTML charset only in a meta tag", name="html-meta-charset") + """\
Content-Type: text/html
Content-Transfer-Encoding: 8bit

<html><head><meta http-equiv="Content-Type" content="text/html; charset=windows-1252"></head>
""").encode("ascii") + "<body><p>Na\u00efve \u201csmart\u201d quotes.</p></body></html>\n".encode("cp1252"))

add("encoded-words-charsets", head(
    "=?iso-2022-jp?B?GyRCRnxLXDhsGyhC?= =?utf-8?q?und_=C3=9C?= =?utf-8?b?w5xiZXI=?= "
    "=?utf-8?q?=E2=82?= =?utf-8?q?=AC_split_euro?= =?windows-1252?q?=80_cp1252?=",
    name="encoded-words-charsets") + """\
Content-Type: text/plain; charset=utf-8

The subject mixes ISO-2022-JP, UTF-8 (Q and B) and Windows-1252, and splits one character across two words.
""")

add("header-8bit-raw", (
    b"From: J\xf6rg M\xfcller <joerg@example.test>\n"
    b"To: Bob Example <bob@example.test>\n"
    b"Subject: Gr\xfc\xdfe \x96 raw Latin-1 bytes\n"
    b"X-Utf8-Header: Gr\xc3\xbc\xc3\x9fe in UTF-8\n"
    b"Date: Fri, 01 Mar 2024 10:00:00 +0100\n"
    b"Message-ID: <header-8bit-raw@example.test>\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"\n"
    b"Headers with 8-bit bytes and no encoded words.\n"
))

# --------------------------------------------------------------------------------------------- headers

add("missing-from", head("No From header", frm=None, name="missing-from") + """\
Content-Type: text/plain; charset=us-ascii

Nobody signed this.
""")

add("missing-date", head("No Date header", date=None, name="missing-date") + """\
Content-Type: text/plain; charset=us-ascii

Timeless.
""")

add("missing-subject", head(None, name="missing-subject") + """\
Content-Type: text/plain; charset=us-ascii

No subject line.
""")

add("missing-message-id", head("No Message-ID", mid=None) + """\
Content-Type: text/plain; charset=us-ascii

No message id.
""")

add("duplicate-subject", head("First subject", name="duplicate-subject") + """\
Subject: Second subject
Content-Type: text/plain; charset=us-ascii

Two Subject headers.
""")

add("duplicate-from", head("Two From headers", name="duplicate-from") + """\
From: Mallory <mallory@example.test>
Content-Type: text/plain; charset=us-ascii

Two From headers; the first one wins.
""")

add("malformed-date", head("Unreadable date", date="yesterday, around noon", name="malformed-date") + """\
Content-Type: text/plain; charset=us-ascii

The date cannot be read.
""")

add("date-variants", head("Obsolete date form", date="1 Mar 24 10:00 EST", name="date-variants") + """\
Resent-Date: Fri, 01 Mar 2024 10:00:00 CET
Content-Type: text/plain; charset=us-ascii

A two-digit year and an RFC 822 zone name.
""")

add("date-iso8601", head("ISO 8601 date", date="2024-03-01T10:00:00+01:00", name="date-iso8601") + """\
Content-Type: text/plain; charset=us-ascii

A date written the way a script would, not as RFC 5322 asks.
""")

add("malformed-addresses", head(
    "Addresses that need repair",
    frm='"Unterminated <alice@example.test',
    to="Doe, John <john@example.test>, bob@, Mail Delivery System, x@example.test y@example.test, "
       "undisclosed-recipients:;, <route@example.test",
    name="malformed-addresses") + """\
Cc: carol@example.test (Carol Comment), "Quoted \\"Nick\\" Name" <dave@example.test>; erin@example.test
Content-Type: text/plain; charset=us-ascii

Broken address headers.
""")

add("address-encoded-names", head(
    "Encoded display names",
    frm="=?utf-8?q?Andr=C3=A9_Fran=C3=A7ois?= <andre@example.test>",
    to='"=?utf-8?B?5bGx55Sw?=" <yamada@example.test>, =?iso-8859-1?q?J=F6rg?= <joerg@example.test>',
    name="address-encoded-names") + """\
Cc: =?utf-8?B?broken*base64?= <broken@example.test>
Reply-To: Support Team <support@example.test>
Sender: Relay <relay@example.test>
Bcc: hidden@example.test
Content-Type: text/plain; charset=us-ascii

Display names in encoded words, one of them broken.
""")

add("reply-references", head("Re: Planning", name="reply-references") + """\
In-Reply-To: <root@example.test> <parent@example.test>
References: <root@example.test>
 <middle@example.test> <parent@example.test>
Content-Type: text/plain; charset=us-ascii

A reply in a thread.
""")

add("encoded-word-newline", head(
    "=?utf-8?Q?Line_break_inside_an_enc\n oded_word_=C3=A4?=", name="encoded-word-newline") + """\
Content-Type: text/plain; charset=us-ascii

The subject's encoded word was folded in the middle.
""")

LONG_VALUE = " ".join(f"token{index:04d}" for index in range(220))
add("long-header-line", head("Long header line", name="long-header-line") + f"""\
X-Long-Header: {LONG_VALUE}
Content-Type: text/plain; charset=us-ascii

One header line is {len("X-Long-Header: " + LONG_VALUE)} characters long, past the 998 limit.
""")

add("mbox-from-line", "From alice@example.test Fri Mar  1 10:00:00 2024\n" + head("Saved from an mbox file",
                                                                                    name="mbox-from-line") + """\
Content-Type: text/plain; charset=us-ascii

The first line is an mbox separator.
""")

# --------------------------------------------------------------------------------------------- structure

NESTED_DEPTH = 1000
nested = [head("Nested 1,000 levels deep", name="nested-1000")]
for level in range(NESTED_DEPTH):
    nested.append(f'Content-Type: multipart/mixed; boundary="n{level}"\n\n--n{level}\n')
nested.append("Content-Type: text/plain; charset=us-ascii\n\nThe innermost text.\n")
for level in reversed(range(NESTED_DEPTH)):
    nested.append(f"--n{level}--\n")
add("nested-1000", "".join(nested))

add("huge-declared-size", head("Parts claiming huge sizes", name="huge-declared-size") + f"""\
Content-Length: 99999999999999999999
Content-Type: multipart/mixed; boundary="huge-1"

--huge-1
Content-Type: text/plain; charset=us-ascii
Content-Length: 18446744073709551616

Small body, huge claims.
--huge-1
Content-Type: application/octet-stream; name="small.bin"
Content-Disposition: attachment; filename="small.bin"; size=99999999999999999
Content-Length: 99999999999999
Content-Transfer-Encoding: base64

{b64(b"sixteen bytes!!!")}
--huge-1--
""")

add("nul-byte", (head("NUL bytes", name="nul-byte") + """\
X-Nul: before\x00after
Content-Type: multipart/mixed; boundary="nul-1"

--nul-1
Content-Type: text/plain; charset=us-ascii

Text with a NUL\x00 inside.
--nul-1
Content-Type: application/octet-stream; name="bytes.bin"
Content-Disposition: attachment; filename="bytes.bin"
Content-Transfer-Encoding: base64

{payload}
--nul-1--
""").replace("{payload}", b64(b"\x00\x01\x02\x00")))

add("truncated-multipart", head("Cut short", name="truncated-multipart") + f"""\
Content-Type: multipart/mixed; boundary="cut-1"

--cut-1
Content-Type: text/plain; charset=us-ascii

The last part is cut off and the closing boundary is missing.
--cut-1
Content-Type: application/pdf; name="cut.pdf"
Content-Disposition: attachment; filename="cut.pdf"
Content-Transfer-Encoding: base64

{b64(PDF)[:61]}""")

add("missing-boundary-param", head("Multipart without a boundary parameter", name="missing-boundary-param") + """\
Content-Type: multipart/mixed

--found-in-body
Content-Type: text/plain; charset=us-ascii

The boundary parameter is missing; the parser finds it in the body.
--found-in-body--
""")

add("boundary-never-found", head("Boundary never found", name="boundary-never-found") + """\
Content-Type: multipart/alternative; boundary="declared-but-absent"

No delimiter line anywhere, so this is read as plain text.
""")

add("base64-garbage", head("Base64 with garbage", name="base64-garbage") + """\
Content-Type: multipart/mixed; boundary="b64-1"

--b64-1
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: base64

SGVsbG8g!!QmFzZTY0*IHdv
cmxk
--b64-1
Content-Type: application/octet-stream; name="unpadded.bin"
Content-Disposition: attachment; filename="unpadded.bin"
Content-Transfer-Encoding: base64

SGk
--b64-1--
""")

add("qp-soft-breaks", head("Quoted-printable with soft line breaks", name="qp-soft-breaks") + """\
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

This line is long enough that the encoder had to break it with a soft line=
 break, and it continues here. Equals: =3D. Umlaut: =C3=BC.=20
Hard line break above; a trailing space was encoded as =3D20.
Invalid escape stays: =ZZ.
""")

add("cte-unknown", head("Unknown transfer encoding", name="cte-unknown") + """\
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: x-gibberish

Read as it is.
""")

add("invalid-content-type", head("Invalid content type", name="invalid-content-type") + """\
Content-Type: text; charset=utf-8

The type has no subtype.
""")

add("lf-line-endings", head("Bare LF line ends", name="lf-line-endings") + """\
Content-Type: multipart/mixed; boundary="lf-1"

--lf-1
Content-Type: text/plain; charset=utf-8

Stored with LF only.
--lf-1
Content-Type: text/plain; charset=utf-8; name="lines.txt"
Content-Disposition: attachment; filename="lines.txt"

one
two
--lf-1--
""", line_ends="lf")

add("binary-garbage", bytes((index * 131 + 7) % 256 for index in range(600)))


def write_expected() -> None:
    sys.path.insert(0, str(HERE.parents[1] / "src"))
    from mailconnector.mime.parse import parse_message

    EXPECTED.mkdir(exist_ok=True)
    for name in sorted(MESSAGES):
        record = parse_message((EML / f"{name}.eml").read_bytes())
        text = json.dumps(record.model_dump(mode="json", by_alias=True), indent=2, ensure_ascii=False)
        (EXPECTED / f"{name}.json").write_text(text + "\n", encoding="utf-8")


def main(argv: list[str]) -> int:
    EML.mkdir(exist_ok=True)
    for name, data in sorted(MESSAGES.items()):
        (EML / f"{name}.eml").write_bytes(data)
    print(f"wrote {len(MESSAGES)} messages to {EML}")
    if "--expected" in argv:
        write_expected()
        print(f"wrote expected records to {EXPECTED}: read them before committing")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
