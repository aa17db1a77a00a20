"""
The gateway's own SIP stack: messages, parser, transactions, transports.
"""
