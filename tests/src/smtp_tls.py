"""A real SMTP server with TLS and a login, for stockhook's mail tests (tests/src/smtp_tls.rs).

Debian's python3-aiosmtpd, configured beyond what `python3 -m aiosmtpd` offers on its command
line: implicit TLS or STARTTLS with a given certificate, AUTH with one account and a chosen set
of mechanisms. Every accepted message is stored in a maildir (<maildir>/new/), with the login
that sent it in an `X-Authenticated-As` header, so a test can check who logged in.

    /usr/bin/python3 smtp_tls.py --port P --maildir DIR --tls {none,starttls,implicit}
        [--cert PEM --key PEM] [--user U --password P] [--mechanisms PLAIN,LOGIN]

--user makes AUTH required; --mechanisms limits what is offered (default both). With
--tls none and a --user, AUTH is never offered (aiosmtpd offers it only over TLS): the
"server offers no AUTH" case. The server prints "listening" once it accepts connections.
"""

import argparse
import warnings
import signal
import mailbox
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Store:
    def __init__(self, maildir):
        self.box = mailbox.Maildir(maildir, create=True)

    async def handle_DATA(self, server, session, envelope):
        who = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else ""
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode()
        head = f"X-Authenticated-As: {who}\r\nX-RcptTo: {', '.join(envelope.rcpt_tos)}\r\n".encode()
        self.box.add(head + raw)
        return "250 OK stored"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--maildir", required=True)
    p.add_argument("--tls", choices=["none", "starttls", "implicit"], default="none")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--mechanisms", default="PLAIN,LOGIN")
    a = p.parse_args()
    # Implicit TLS with AUTH is safe; aiosmtpd cannot tell and warns.
    warnings.simplefilter("ignore", UserWarning)

    ctx = None
    if a.tls != "none":
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(a.cert, a.key)

    offered = {m.strip().upper() for m in a.mechanisms.split(",") if m.strip()}
    exclude = [m for m in ("PLAIN", "LOGIN") if m not in offered]

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == a.user
            and auth_data.password.decode() == a.password
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    store = Store(a.maildir)

    class Factory(Controller):
        def factory(self):
            return SMTP(
                self.handler,
                hostname="stockhook-test-smtp",
                tls_context=ctx if a.tls == "starttls" else None,
                require_starttls=a.tls == "starttls",
                # Implicit TLS: the whole session is encrypted, so AUTH may be offered at once.
                auth_require_tls=a.tls != "implicit",
                auth_required=a.user is not None,
                authenticator=authenticator if a.user is not None else None,
                auth_exclude_mechanism=exclude,
            )

    controller = Factory(
        store,
        hostname="127.0.0.1",
        port=a.port,
        ssl_context=ctx if a.tls == "implicit" else None,
        # The readiness self-check connects in plain text; it cannot speak implicit TLS.
        ready_timeout=10,
    )
    controller.start()
    print("listening", flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    sys.exit(main())
