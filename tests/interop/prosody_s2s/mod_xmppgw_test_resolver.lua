-- mod_xmppgw_test_resolver: make Prosody's S2S find listed domains without DNS.
--
-- For the xmppgw interop tests only (tests/interop/test_s2s.py). mod_s2s
-- resolves a remote domain with net.resolvers.service.new(host,
-- "xmpp-server", "tcp", extra) (and "xmpps-server" for direct TLS). This
-- module replaces that function: for a domain listed in the global option
--
--   xmppgw_test_s2s_targets = { ["gw.test"] = { "127.0.0.1", 5299 } }
--
-- it answers with a fixed address (net.resolvers.basic) for xmpp-server and
-- with nothing for xmpps-server; every other domain goes to the original
-- resolver. The machine's DNS is never touched.

local basic = require "net.resolvers.basic";
local service = require "net.resolvers.service";

local targets = module:get_option("xmppgw_test_s2s_targets", {});

if not service.xmppgw_original_new then
	service.xmppgw_original_new = service.new;
end
local original_new = service.xmppgw_original_new;

local nothing_mt = { __index = { next = function (self, cb) cb(nil); end } };

service.new = function (hostname, service_name, proto, extra)
	local target = targets[hostname];
	if target then
		if service_name ~= "xmpp-server" then
			return setmetatable({}, nothing_mt);
		end
		module:log("info", "xmppgw test resolver: %s -> %s:%d", hostname, target[1], target[2]);
		return basic.new(target[1], target[2], proto, extra);
	end
	return original_new(hostname, service_name, proto, extra);
end

function module.unload()
	service.new = original_new;
end
