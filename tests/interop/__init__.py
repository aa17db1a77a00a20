"""
Interop tests: the real peers (Prosody, sipp) on loopback.
"""
