# -*- test-case-name: tests.test_hashing -*-
"""
The one hash of the per-message path: the first 128 bits of BLAKE2b, in
hex (L{xmppgw.messages.stanzaIDFor}).

On CPython that is L{hashlib.blake2b}, C code. PyPy's L{hashlib.blake2b}
is a Python class over a CFFI module that validates ten parameters and
allocates a parameter block, a state and an output buffer per hash (1.2-2.9
us per stanza id, more than the rest of the id); there L{blake2b128} calls
the same CFFI functions with one parameter block made once and a state and
output buffer reused under a lock (0.5 us). The digest is the same
(L{blake2b128} checks it against L{hashlib} at import and uses L{hashlib}
if the CFFI module is missing or differs); a call that finds the buffers
in use by another thread takes L{hashlib}'s path.
"""

import hashlib
import threading

__all__ = ["blake2b128"]

_DIGEST_SIZE = 16


def _hashlibDigest(data):
    return hashlib.blake2b(data, digest_size=_DIGEST_SIZE).hexdigest()


def _cffiDigest(lock=None):
    """
    The digest function over PyPy's BLAKE2b CFFI module, or L{None} where
    there is none (CPython) or it does not give L{hashlib}'s digest.

    @param lock: for tests: the lock that guards the buffers (a new
        L{threading.Lock} if L{None}).
    """
    try:
        from _blake2 import _blake2b_cffi
        ffi, lib = _blake2b_cffi.ffi, _blake2b_cffi.lib
        param = ffi.new("blake_param*")
        param.digest_length = _DIGEST_SIZE
        param.fanout = 1
        param.depth = 1
        state = ffi.new("blake_state*")
        out = ffi.new("char[]", _DIGEST_SIZE)
        init, update, final = (lib.blake_init_param, lib.blake_update,
                               lib.blake_final)
        unpack = ffi.unpack
    except Exception:
        return None
    if lock is None:
        lock = threading.Lock()
    acquire = lock.acquire
    release = lock.release

    def digest(data):
        if not acquire(False):
            # Another thread is hashing: no waiting, no shared buffers.
            return _hashlibDigest(data)
        try:
            if init(state, param) < 0:
                raise RuntimeError("BLAKE2b initialisation failed")
            update(state, data, len(data))
            final(state, out, _DIGEST_SIZE)
            return unpack(out, _DIGEST_SIZE).hex()
        finally:
            release()

    try:
        for sample in (b"", b"xmppgw", bytes(range(256)) * 3):
            if digest(sample) != _hashlibDigest(sample):
                return None
    except Exception:
        return None
    return digest


#: C{blake2b128(data)}: the hex digits of the 128-bit BLAKE2b digest of the
#: L{bytes} C{data} (C{hashlib.blake2b(data, digest_size=16).hexdigest()}).
blake2b128 = _cffiDigest() or _hashlibDigest
