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

-- After the VirtualHost sections:
Component "sip-xmpp.example.org"
  component_secret = "secret"
