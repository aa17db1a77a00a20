"""
The XMPP side of the gateway.
"""
