#!/usr/bin/env python3
"""
A scriptable XMPP client for the interop tests (slixmpp), run as a child
process by L{tests.interop.harness.XMPPClient}.

Usage::

    xmpp_client.py JID PASSWORD HOST PORT [--max-lifetime SECONDS]

It logs in on C{HOST:PORT} without TLS (loopback test servers only), sends
initial presence and then:

  - prints one JSON object per line on stdout for each event:
    C{{"kind": "ready"}} once online (again after each reconnection),
    C{{"kind": "message", "from", "to", "type", "id", "body", "subject",
    "thread", "lang", "error"}} for every received message stanza
    (C{type} is the raw attribute, C{null} when absent; C{error} is
    C{{"condition", "type", "text"}} or C{null}; C{lang} is the stanza's
    C{xml:lang}, which Prosody fills in from the sender's stream, "en" by
    default), C{{"kind": "sent", "id"}}
    after each send, C{{"kind": "disconnected"}}, C{{"kind": "auth_failed"}},
    C{{"kind": "bad_command", "reason"}};
  - reads one JSON command per line on stdin:
    C{{"cmd": "send", "to", "body", "id", "lang", "subject", "type",
    "thread"}} (only C{to} is required) and C{{"cmd": "quit"}}. End of input
    also quits.

When the connection drops it reconnects on its own, every 0.3 s, so a
restarted server gets its user back quickly. It exits by itself after
C{--max-lifetime} seconds (default 900) so that it can never outlive a test
run.
"""

import argparse
import asyncio
import json
import logging
import os
import sys
import threading

from slixmpp import ClientXMPP
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

RECONNECT_DELAY = 0.3
NS_CHATSTATES = "http://jabber.org/protocol/chatstates"
NS_RECEIPTS = "urn:xmpp:receipts"


def emit(obj):
    """
    Print one JSON event line and flush it.
    """
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def describeMessage(msg):
    """
    The JSON view of a received message stanza.
    """
    xml = msg.xml
    error = None
    if xml.get("type") == "error":
        err = msg["error"]
        error = {
            "condition": err["condition"] or None,
            "type": err["type"] or None,
            "text": err["text"] or None,
        }
    lang = xml.get("{http://www.w3.org/XML/1998/namespace}lang")
    return {
        "kind": "message",
        "from": str(msg["from"]) if xml.get("from") else None,
        "to": str(msg["to"]) if xml.get("to") else None,
        "type": xml.get("type"),
        "id": xml.get("id"),
        "body": msg["body"] if msg.xml.find("{jabber:client}body") is not None else None,
        "subject": msg["subject"] if xml.find("{jabber:client}subject") is not None else None,
        "thread": msg["thread"] if xml.find("{jabber:client}thread") is not None else None,
        "lang": lang,
        "error": error,
        # Presence tests (issue 7): chat state, receipt request/ack.
        "chatstate": next((c.tag.split("}")[1] for c in xml
                           if c.tag.startswith("{%s}" % NS_CHATSTATES)), None),
        "receipt_request": xml.find("{%s}request" % NS_RECEIPTS) is not None,
        "received": (xml.find("{%s}received" % NS_RECEIPTS).get("id")
                     if xml.find("{%s}received" % NS_RECEIPTS) is not None
                     else None),
    }


def describePresence(xml):
    """
    The JSON view of a received presence stanza (issue 7 tests).
    """
    def text(name):
        child = xml.find("{jabber:client}%s" % name)
        return child.text if child is not None else None

    return {"kind": "presence", "from": xml.get("from"), "to": xml.get("to"),
            "type": xml.get("type"), "show": text("show"),
            "status": text("status"), "priority": text("priority")}


class ScriptedClient(ClientXMPP):
    """
    The client: events out as JSON, commands in as JSON.
    """

    def __init__(self, jid, password, host, port):
        ClientXMPP.__init__(
            self, jid, password,
            plugin_config={"feature_mechanisms": {
                "unencrypted_plain": True,
                "unencrypted_scram": True,
            }})
        # No xml:lang on our stream: Prosody copies the stream's language onto
        # every stanza, and the tests want stanzas without one unless asked.
        self.stream_header = self.stream_header.replace(
            " xml:lang='%s'" % self.default_lang, "")
        self.enable_direct_tls = False
        self.enable_starttls = False
        self.enable_plaintext = True
        self.targetHost = host
        self.targetPort = port
        self.quitting = False
        self._reconnectHandle = None
        self.add_event_handler("session_start", self.onSessionStart)
        # Every <message/> once: slixmpp's "message" event skips stanzas
        # without a <body/>, and an error that carries a body would fire
        # both "message" and "message_error".
        self.register_handler(Callback(
            "xmpp_client every message",
            MatchXPath("{jabber:client}message"),
            self.onMessage))
        self.add_event_handler("disconnected", self.onDisconnected)
        self.add_event_handler("connection_failed", self.onConnectionFailed)
        self.add_event_handler("failed_auth", self.onFailedAuth)
        self.register_handler(Callback(
            "AllPresence", MatchXPath("{jabber:client}presence"),
            lambda p: emit(describePresence(p.xml))))

    def start(self):
        self.connect(self.targetHost, self.targetPort)

    async def onSessionStart(self, event):
        self.send_presence()
        emit({"kind": "ready", "jid": str(self.boundjid)})

    def onMessage(self, msg):
        emit(describeMessage(msg))

    def onFailedAuth(self, event):
        emit({"kind": "auth_failed"})

    def _scheduleReconnect(self):
        if self.quitting:
            return
        if self._reconnectHandle is not None:
            self._reconnectHandle.cancel()
        self._reconnectHandle = self.loop.call_later(
            RECONNECT_DELAY, self._reconnect)

    def _reconnect(self):
        self._reconnectHandle = None
        if not self.quitting:
            self.connect(self.targetHost, self.targetPort)

    def onDisconnected(self, reason):
        if self.quitting:
            return
        emit({"kind": "disconnected", "reason": str(reason) if reason else None})
        self._scheduleReconnect()

    def onConnectionFailed(self, error):
        # slixmpp's own retry backs off (1, 3, 7 ... s); retry quickly instead.
        if self.quitting:
            return
        self.cancel_connection_attempt()
        self._scheduleReconnect()

    def command(self, line):
        """
        Run one JSON command line from stdin.
        """
        line = line.strip()
        if not line:
            return
        try:
            cmd = json.loads(line)
            if not isinstance(cmd, dict):
                raise ValueError("a command is a JSON object")
        except ValueError as e:
            emit({"kind": "bad_command", "reason": str(e)})
            return
        name = cmd.get("cmd")
        if name == "quit":
            self.quit()
        elif name == "send":
            self.sendCommand(cmd)
        elif name == "presence":
            # {"cmd": "presence", "type", "to", "show", "status", "priority"}
            self.send_presence(
                pto=cmd.get("to"), ptype=cmd.get("type"), pshow=cmd.get("show"),
                pstatus=cmd.get("status"), ppriority=cmd.get("priority"))
            emit({"kind": "sent_presence", "type": cmd.get("type")})
        elif name == "roster_policy":
            # {"cmd": "roster_policy", "auto_authorize", "auto_subscribe"}
            self.roster.auto_authorize = cmd.get("auto_authorize", True)
            self.roster.auto_subscribe = cmd.get("auto_subscribe", True)
            if cmd.get("get_roster"):
                # Prosody sends subscription approvals and roster pushes
                # only to resources that have fetched the roster.
                asyncio.ensure_future(self.getRoster())
        else:
            emit({"kind": "bad_command", "reason": f"unknown cmd {name!r}"})

    def sendCommand(self, cmd):
        to = cmd.get("to")
        if not to:
            emit({"kind": "bad_command", "reason": "send needs 'to'"})
            return
        msg = self.make_message(mto=to)
        mtype = cmd.get("type")
        if mtype:
            msg["type"] = mtype
        else:
            # slixmpp defaults to 'normal'; leave the attribute out.
            if "type" in msg.xml.attrib:
                del msg.xml.attrib["type"]
        if cmd.get("id"):
            msg["id"] = cmd["id"]
        # make_message stamps the client's default xml:lang ("en") on every
        # stanza; only send one when asked to.
        msg.del_lang()
        if cmd.get("lang"):
            msg["lang"] = cmd["lang"]
        if cmd.get("subject") is not None:
            msg["subject"] = cmd["subject"]
        if cmd.get("thread") is not None:
            msg["thread"] = cmd["thread"]
        if cmd.get("body") is not None:
            msg["body"] = cmd["body"]
        if cmd.get("chatstate"):
            msg.xml.append(ET.Element("{%s}%s" % (NS_CHATSTATES, cmd["chatstate"])))
        if cmd.get("request_receipt"):
            msg.xml.append(ET.Element("{%s}request" % NS_RECEIPTS))
        if cmd.get("received"):
            msg.xml.append(ET.Element("{%s}received" % NS_RECEIPTS,
                                      {"id": cmd["received"]}))
        msg.send()
        emit({"kind": "sent", "id": msg.xml.get("id")})

    async def getRoster(self):
        await self.get_roster()
        emit({"kind": "roster"})

    def quit(self):
        if self.quitting:
            return
        self.quitting = True
        if self._reconnectHandle is not None:
            self._reconnectHandle.cancel()
        self.cancel_connection_attempt()
        done = self.disconnect(wait=1.0)
        done.add_done_callback(lambda _: self.loop.stop())
        self.loop.call_later(3.0, self.loop.stop)


def readStdin(loop, client):
    """
    Thread body: hand each stdin line to the client; quit at end of input.
    """
    for line in sys.stdin:
        loop.call_soon_threadsafe(client.command, line)
    loop.call_soon_threadsafe(client.quit)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("jid")
    parser.add_argument("password")
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--max-lifetime", type=float, default=900.0)
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    client = ScriptedClient(args.jid, args.password, args.host, args.port)
    client.start()
    threading.Thread(target=readStdin, args=(loop, client), daemon=True).start()
    loop.call_later(args.max_lifetime, client.quit)
    try:
        loop.run_forever()
    finally:
        sys.stdout.flush()
    # Skip interpreter teardown races with slixmpp's pending tasks.
    os._exit(0)


if __name__ == "__main__":
    main()
