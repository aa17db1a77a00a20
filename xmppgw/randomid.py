# -*- test-case-name: tests.test_randomid -*-
"""
Cheap random identifiers for the per-message path.

L{secrets.token_hex} reads the system's random source with one system call
per identifier (about 2.5 us each; a relayed XMPP message needs a Call-ID,
a From tag and a Via branch, a SIP MESSAGE a To tag). L{randomHex} returns
the same kind of identifier, hex digits of bytes from L{os.urandom}, but
reads them 4 KiB at a time: every identifier is still cryptographically
random (RFC 3261 section 19.3 asks tags for at least 32 random bits) and
never shares bytes with another one. The buffer is dropped in a child
process after C{fork}, so parent and child never hand out the same bytes.
"""

import os
import threading

__all__ = ["randomHex"]

_POOL_SIZE = 4096
_lock = threading.Lock()
_acquire = _lock.acquire
_release = _lock.release
#: The hex digits of C{_POOL_SIZE} random bytes, and how many of them were
#: handed out: digits are converted once per pool, not once per call.
_pool = ""
_position = 0


def randomHex(nbytes):
    """
    C{2 * nbytes} hex digits of fresh random bytes, like
    C{secrets.token_hex(nbytes)}.

    @param nbytes: how many random bytes, 1 to 256.
    @rtype: L{str}
    """
    global _pool, _position
    if not 0 < nbytes <= 256:
        raise ValueError("randomHex takes 1 to 256 bytes, not %r" % (nbytes,))
    digits = nbytes + nbytes
    # acquire/release rather than "with": no __enter__/__exit__ calls.
    _acquire()
    try:
        start = _position
        end = start + digits
        if end > len(_pool):
            _pool = os.urandom(_POOL_SIZE).hex()
            start = 0
            end = digits
        _position = end
        return _pool[start:end]
    finally:
        _release()


def _forget():
    global _pool, _position
    _pool = ""
    _position = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget)
