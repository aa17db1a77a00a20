-- Prosody: the gateway as an external component (XEP-0114).
--
-- Add this to prosody.cfg.lua (the Component block after the VirtualHosts)
-- and keep the name and secret equal to xmpp_domain and xmpp_password in
-- xmppgw.toml, the port and interface to xmpp_port and xmpp_host.
-- The interop tests run Prosody with these same lines (tests/test_samples.py
-- checks them against xmppgw/localpeers.py).

-- Global section:
component_ports = { 5347 }
component_interfaces = { "127.0.0.1" }

-- Optional, global section, Prosody 0.12 on Lua 5.4: the generational
-- garbage collector. At 1,000-8,000 messages/s through the gateway it cut
-- Prosody's CPU per message by a quarter to two fifths on the test VM, for
-- about 1.6 MB more memory (docs/deployment.rst, "Prosody's garbage
-- collector"). Uncomment to use it:
-- gc = { mode = "generational" }

-- Optional, global section: Nagle's algorithm off on Prosody's sockets.
-- Prosody 0.12 leaves it on, so a stanza written while an earlier one is
-- still unacknowledged can wait for the client's delayed ACK (up to 40 ms
-- on Linux). Without the gateway, Prosody alone relayed 4,000 messages/s
-- with a p99 latency of 1.2-3.0 ms with it off, 1.8-57 ms with it on
-- (docs/deployment.rst, "Prosody and Nagle's algorithm"). Uncomment to use it:
-- network_settings = { nagle = false }

-- After the VirtualHost sections:
Component "sip-xmpp.example.org"
  component_secret = "secret"
