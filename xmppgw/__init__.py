"""
xmppgw: a SIP <-> XMPP instant-messaging gateway, run as a twistd plugin.
"""

__version__ = "0.1.0"
