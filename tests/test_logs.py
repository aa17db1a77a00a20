"""
Tests for L{xmppgw.logs} (text and JSON log lines) and the per-message log
line of the router.
"""

import io
import json
import signal
import sys

from twisted.application import service
from twisted.logger import (
    ILogObserver, LogLevel, capturedLogs, formatEventAsClassicLogText,
    formatTime, timeFormatRFC3339)
from twisted.python.failure import Failure
from twisted.trial import unittest

from xmppgw import tap
from xmppgw.config import parseConfig
from xmppgw.logs import (
    JSONLineObserver, JSONLoggingService, TextLoggingService, _twistdLogFile,
    eventAsJSONLine, jsonObserver, textLineFormatter, textObserver)

from tests.test_router import FakeServerTransaction, RouterTestsMixin, sipMessage


class JSONLineTests(unittest.TestCase):
    """
    L{eventAsJSONLine} and L{JSONLineObserver}.
    """

    def test_fields(self):
        """
        A line has the time in UTC, the level, the namespace, the formatted
        text and the event's own fields.
        """
        event = {
            "log_time": 0.25, "log_level": LogLevel.info,
            "log_namespace": "xmppgw.router", "log_format": "{code} in {ms}",
            "code": 202, "ms": 1.5, "log_logger": object(),
        }
        record = json.loads(eventAsJSONLine(event))
        self.assertEqual({
            "time": "1970-01-01T00:00:00.250Z", "level": "info",
            "namespace": "xmppgw.router", "text": "202 in 1.5",
            "code": 202, "ms": 1.5,
        }, record)

    def test_oddValues(self):
        """
        Values that are not JSON types are written as their repr; lists and
        dicts are kept; one event is one line.
        """
        event = {"log_format": "x\ny", "thing": object(), "items": [1, (2, 3)],
                 "table": {1: "a"}}
        line = eventAsJSONLine(event)
        self.assertNotIn("\n", line)
        record = json.loads(line)
        self.assertTrue(record["thing"].startswith("<object object"))
        self.assertEqual([1, [2, 3]], record["items"])
        self.assertEqual({"1": "a"}, record["table"])
        self.assertEqual("x\ny", record["text"])
        self.assertEqual("info", record["level"])

    def test_failure(self):
        """
        A failure's traceback is in C{failure}.
        """
        try:
            1 / 0
        except ZeroDivisionError:
            f = Failure()
        record = json.loads(eventAsJSONLine(
            {"log_format": "oops", "log_failure": f,
             "log_level": LogLevel.critical}))
        self.assertIn("ZeroDivisionError", record["failure"])
        self.assertEqual("critical", record["level"])

    def test_observer(self):
        """
        L{JSONLineObserver} writes one line per event.
        """
        out = io.StringIO()
        observer = JSONLineObserver(out)
        self.assertTrue(ILogObserver.providedBy(observer))
        observer({"log_format": "a"})
        observer({"log_format": "b"})
        self.assertEqual(["a", "b"], [json.loads(l)["text"]
                                      for l in out.getvalue().splitlines()])

    def test_jsonObserverFactory(self):
        """
        C{twistd --logger xmppgw.logs.jsonObserver}: a JSON observer on
        stdout.
        """
        observer = jsonObserver()
        self.assertIsInstance(observer, JSONLineObserver)
        self.assertIs(sys.stdout, observer.outFile)


class JSONLoggingServiceTests(unittest.TestCase):
    """
    C{[log] format = "json"} gives twistd's application a JSON observer.
    """

    def test_setsObserver(self):
        """
        Attached to an application, the wrapper sets its L{ILogObserver}
        component, which twistd then uses.
        """
        observer = JSONLineObserver(io.StringIO())
        gateway = service.MultiService()
        wrapper = JSONLoggingService(gateway, observerFactory=lambda: observer)
        self.assertIs(wrapper, gateway.parent)
        application = service.Application("xmppgw")
        wrapper.setServiceParent(application)
        self.assertIs(observer, application.getComponent(ILogObserver))

    def test_keepsExisting(self):
        """
        An observer already set on the application, or C{--syslog}, wins.
        """
        application = service.Application("xmppgw")
        existing = JSONLineObserver(io.StringIO())
        application.setComponent(ILogObserver, existing)
        JSONLoggingService(service.MultiService(),
                           observerFactory=lambda: 1 / 0
                           ).setServiceParent(application)
        self.assertIs(existing, application.getComponent(ILogObserver))
        application = service.Application("xmppgw")
        JSONLoggingService(service.MultiService(), {"syslog": True},
                           observerFactory=lambda: 1 / 0
                           ).setServiceParent(application)
        self.assertIsNone(application.getComponent(ILogObserver, None))

    def test_daemonToStdoutLeftToTwistd(self):
        """
        A daemon asked to log to stdout (C{--logfile -} without C{-n}) gets
        no observer from the wrapper: twistd then refuses to start, as it
        always did, instead of logging to nowhere.
        """
        application = service.Application("xmppgw")
        TextLoggingService(service.MultiService(),
                           {"logfile": "-", "nodaemon": False}
                           ).setServiceParent(application)
        self.assertIsNone(application.getComponent(ILogObserver, None))

    def test_logFile(self):
        """
        The JSON lines go where twistd's text lines would: stdout with
        C{-n} or C{--logfile -}, else the log file (rotated on SIGUSR1).
        """
        self.assertIs(sys.stdout, _twistdLogFile(None))
        self.assertIs(sys.stdout, _twistdLogFile({"logfile": "-",
                                                  "nodaemon": True}))
        # A daemon logging to stdout: left to twistd, which refuses it.
        self.assertIsNone(_twistdLogFile({"logfile": "-", "nodaemon": False}))
        self.assertIs(sys.stdout, _twistdLogFile({"logfile": None,
                                                  "nodaemon": True}))
        previous = signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        self.addCleanup(signal.signal, signal.SIGUSR1, previous)
        path = self.mktemp()
        logFile = _twistdLogFile({"logfile": path, "nodaemon": False})
        self.addCleanup(logFile.close)
        self.assertEqual(path, logFile.path[-len(path):])
        self.assertTrue(callable(signal.getsignal(signal.SIGUSR1)))

    def test_makeService(self):
        """
        L{tap.makeService} wraps the gateway in the text or the JSON
        logging service, as C{format} says.
        """
        from tests.test_tap import UDPMemoryReactor

        listen = {"listen": ["udp:127.0.0.1:5999"]}
        text = parseConfig({"sip": listen}, "x.toml")
        json_ = parseConfig({"sip": listen, "log": {"format": "json"}}, "x.toml")
        plain = tap.makeService({"gateway": text}, reactor=UDPMemoryReactor())
        self.assertIsInstance(plain, TextLoggingService)
        self.assertIs(textObserver, plain.makeObserver)
        self.assertEqual("sip", plain.gateway.getServiceNamed("sip").name)
        wrapped = tap.makeService({"gateway": json_}, reactor=UDPMemoryReactor())
        self.assertIsInstance(wrapped, JSONLoggingService)
        self.assertIs(JSONLineObserver, wrapped.makeObserver)
        self.assertEqual("sip", wrapped.gateway.getServiceNamed("sip").name)


class MessageLineTests(RouterTestsMixin, unittest.TestCase):
    """
    The router's one line per relayed message.
    """

    def receive(self, request):
        txn = FakeServerTransaction()
        self.sip.requestHandler(request, txn)
        return txn

    def test_line(self):
        """
        With C{logMessages}, a relayed message gives one info line with
        both addresses, the mapped ones, the code and the latency, also as
        a number for JSON output.
        """
        import dataclasses

        self.router.settings = dataclasses.replace(self.settings,
                                                   logMessages=True)
        self.link.isAuthenticated = False
        with capturedLogs() as events:
            self.receive(sipMessage())
            self.clock.advance(0.125)
            self.link.isAuthenticated = True
            self.router.xmppLinkUp()
        [event] = [e for e in events if e.get("direction")]
        self.assertEqual(LogLevel.info, event["log_level"])
        self.assertEqual(125.0, event["latencyMs"])
        record = json.loads(eventAsJSONLine(event))
        self.assertEqual(
            "SIP->XMPP <sip:bob@sip.example>;tag=ft1 -> "
            "sip:alice*xmpp.example@gw.example as bob*sip.example@gw.example "
            "-> alice@xmpp.example: 202 in 125.0 ms", record["text"])
        self.assertEqual(202, record["code"])

    def test_off(self):
        """
        Without C{logMessages}, no line.
        """
        with capturedLogs() as events:
            self.receive(sipMessage())
        self.assertEqual([], [e for e in events if e.get("direction")])


class TextLineFormatterTests(unittest.TestCase):
    """
    L{textLineFormatter} writes exactly what twistd's text observer writes.
    """

    def reference(self, event):
        return formatEventAsClassicLogText(
            event, formatTime=lambda when: formatTime(when, timeFormatRFC3339))

    def test_sameLines(self):
        """
        For preformatted events (the fast path) and every other kind (a
        format string, a failure, a system, several lines, no time, a
        second boundary), the line is the one twistd writes.
        """
        try:
            1 / 0
        except ZeroDivisionError:
            failure = Failure()
        base = {"log_namespace": "xmppgw.router.MessageRouter",
                "log_level": LogLevel.info, "log_time": 1764160000.25}
        events = [
            dict(base, log_format="{text}", text="SIP->XMPP a -> b: 202"),
            dict(base, log_format="{text}", text="two\nlines {braces}"),
            dict(base, log_format="{text}", text=""),
            dict(base, log_format="{text}", text=42),
            dict(base, log_format="{text}", text="boundary",
                 log_time=1764160000.9999996),
            dict(base, log_format="{text}", text="no level",
                 log_level=None),
            dict(base, log_format="{text}", text="no namespace",
                 log_namespace=None),
            dict(base, log_format="{text}", text="system", log_system="x"),
            dict(base, log_format="{text}", text="oops",
                 log_failure=failure),
            dict(base, log_format="{text}", text="no time", log_time=None),
            dict(base, log_format="{a} and {b}", a=1, b="two"),
            dict(base, log_format="plain"),
        ]
        for event in events:
            event = {k: v for k, v in event.items() if v is not None
                     or k == "log_time"}
            self.assertEqual(self.reference(event),
                             textLineFormatter()(event), event)
        # Within one second the cached stamp is reused, and a new second
        # gets its own.
        format = textLineFormatter()
        for when in (1764160000.1, 1764160000.9, 1764160001.0, 1764160061.5):
            event = dict(base, log_format="{text}", text="t", log_time=when)
            self.assertEqual(self.reference(event), format(event))

    def test_observer(self):
        """
        L{textObserver} writes the formatted lines to its file.
        """
        out = io.StringIO()
        observer = textObserver(out)
        event = {"log_namespace": "n", "log_level": LogLevel.warn,
                 "log_time": 1764160000.0, "log_format": "{text}",
                 "text": "hello"}
        observer(event)
        self.assertEqual(self.reference(event), out.getvalue())
