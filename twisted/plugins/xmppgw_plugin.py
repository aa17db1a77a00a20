"""
twistd plugin for the SIP <-> XMPP gateway: C{twistd xmppgw --config FILE}.
"""

from twisted.application.service import ServiceMaker

XMPPGateway = ServiceMaker(
    "xmppgw",
    "xmppgw.tap",
    "SIP <-> XMPP instant-messaging gateway",
    "xmppgw",
)
