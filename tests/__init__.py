"""
Tests for xmppgw.
"""
