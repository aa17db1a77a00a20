# -*- test-case-name: tests.test_dialback -*-
"""
Server Dialback (XEP-0220) keys and names.

The key is the XEP-0185 recommendation, as in interworking.md section 6.2::

    HMAC-SHA256(key = hex(SHA256(secret)),
                msg = Receiving + " " + Originating + " " + StreamID)

in lower-case hex. Unlike L{wokkel.server.generateKey}, which encodes every
part as ASCII (so a non-ASCII secret raises L{UnicodeEncodeError}) and hangs
a stream when the secret is L{bytes}, this function takes text and encodes
it as UTF-8, and refuses anything else with a clear L{TypeError}. For ASCII
inputs the two give the same key.
"""

import hashlib
import hmac

__all__ = [
    "NS_DIALBACK",
    "NS_DIALBACK_FEATURES",
    "generateKey",
    "keysEqual",
]

#: The dialback namespace, always bound to the C{db:} prefix.
NS_DIALBACK = "jabber:server:dialback"

#: The stream feature advertising dialback (with C{<errors/>}) (XEP-0220
#: section 2.5).
NS_DIALBACK_FEATURES = "urn:xmpp:features:dialback"


def generateKey(secret, receivingServer, originatingServer, streamID):
    """
    Compute an XEP-0185 dialback key.

    @param secret: the dialback secret shared by every instance serving
        the originating domain.
    @type secret: L{str}
    @param receivingServer: the domain the key is sent to.
    @type receivingServer: L{str}
    @param originatingServer: the domain the key is sent from (ours).
    @type originatingServer: L{str}
    @param streamID: the id the receiving server gave the stream.
    @type streamID: L{str}
    @return: 64 lower-case hexadecimal characters.
    @rtype: L{str}
    @raise TypeError: if an argument is not text.
    """
    for name, value in (("secret", secret), ("receivingServer", receivingServer),
                        ("originatingServer", originatingServer),
                        ("streamID", streamID)):
        if not isinstance(value, str):
            raise TypeError(f"dialback {name} must be text (str), not {type(value).__name__}")
    hashedSecret = hashlib.sha256(secret.encode("utf-8")).hexdigest()
    message = " ".join([receivingServer, originatingServer, streamID])
    return hmac.new(
        hashedSecret.encode("ascii"), message.encode("utf-8"), hashlib.sha256
    ).hexdigest()


def keysEqual(a, b):
    """
    Compare two dialback keys in constant time.

    @type a: L{str}
    @type b: L{str}
    @rtype: L{bool}
    """
    return hmac.compare_digest(a.strip().encode("utf-8"), b.strip().encode("utf-8"))
