"""
Tests for L{xmppgw.logs} (text and JSON log lines) and the per-message log
line of the router.
"""

import io
import json
import os
import signal
import sys
import threading
import time

from twisted.application import service
from twisted.internet.task import Clock
from twisted.logger import (
    FilteringLogObserver, ILogObserver, Logger, LogLevel,
    LogLevelFilterPredicate, capturedLogs, formatEventAsClassicLogText,
    formatTime, globalLogPublisher, timeFormatRFC3339)
from twisted.python.failure import Failure
from twisted.trial import unittest

from xmppgw import tap
from xmppgw.config import parseConfig
from xmppgw import logs
from xmppgw.logs import (
    FLUSH_INTERVAL, BufferedLogFile, JSONLineObserver, JSONLoggingService,
    LineFlusher, TextLineObserver, TextLoggingService, _twistdLogFile,
    emitEvent, eventAsJSONLine, jsonObserver, textLineFormatter, textObserver)

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


class FlushCountingFile(io.StringIO):
    """
    A text file that counts its flushes and keeps what was written up to
    the last one in C{flushed}; C{failFlush} makes a flush raise.
    """

    def __init__(self):
        io.StringIO.__init__(self)
        self.flushes = 0
        self.flushed = ""
        self.failFlush = False

    def flush(self):
        if self.failFlush:
            raise OSError(28, "No space left on device")
        self.flushes += 1
        self.flushed = self.getvalue()


class FlushCountingBytesFile(io.BytesIO):
    """
    L{FlushCountingFile} for bytes.
    """

    def __init__(self):
        io.BytesIO.__init__(self)
        self.flushes = 0

    def flush(self):
        self.flushes += 1


class LineFlusherTests(unittest.TestCase):
    """
    L{LineFlusher} and the observers that use it: a line is flushed at most
    C{flush_interval} seconds after it was written.
    """

    def test_everyLine(self):
        """
        With interval 0, or without a clock, every line is flushed at once.
        """
        for interval, clock in ((0, Clock()), (0.1, None)):
            out = FlushCountingFile()
            flusher = LineFlusher(out, interval, clock)
            out.write("a\n")
            flusher.written()
            out.write("b\n")
            flusher.written()
            self.assertEqual((2, "a\nb\n"), (out.flushes, out.flushed))
            self.assertEqual(0, flusher.interval)
            if clock is not None:
                self.assertEqual([], clock.getDelayedCalls())

    def test_interval(self):
        """
        The first line arms one timer; the lines written before it fires
        are flushed together when it does; the next line arms it again.
        """
        clock = Clock()
        out = FlushCountingFile()
        flusher = LineFlusher(out, 0.1, clock)
        for line in ("a\n", "b\n", "c\n"):
            out.write(line)
            flusher.written()
        self.assertEqual((0, ""), (out.flushes, out.flushed))
        self.assertEqual([0.1], [c.getTime() for c in clock.getDelayedCalls()])
        clock.advance(0.099)
        self.assertEqual(0, out.flushes)
        clock.advance(0.001)
        self.assertEqual((1, "a\nb\nc\n"), (out.flushes, out.flushed))
        self.assertEqual([], clock.getDelayedCalls())
        out.write("d\n")
        flusher.written()
        clock.advance(0.1)
        self.assertEqual((2, "a\nb\nc\nd\n"), (out.flushes, out.flushed))

    def test_otherThread(self):
        """
        A line written from another thread than the flusher's is flushed
        at once (the timer is armed from the reactor's thread only).
        """
        import threading
        clock = Clock()
        out = FlushCountingFile()
        flusher = LineFlusher(out, 0.1, clock)
        out.write("a\n")
        thread = threading.Thread(target=flusher.written)
        thread.start()
        thread.join()
        self.assertEqual((1, "a\n"), (out.flushes, out.flushed))
        self.assertEqual([], clock.getDelayedCalls())

    def test_flushEveryLine(self):
        """
        L{LineFlusher.flushEveryLine} flushes what is buffered, disarms the
        timer and flushes every later line at once.
        """
        clock = Clock()
        out = FlushCountingFile()
        flusher = LineFlusher(out, 0.1, clock)
        out.write("a\n")
        flusher.written()
        flusher.flushEveryLine()
        self.assertEqual((1, "a\n"), (out.flushes, out.flushed))
        self.assertEqual([], clock.getDelayedCalls())
        out.write("b\n")
        flusher.written()
        self.assertEqual((2, "a\nb\n"), (out.flushes, out.flushed))

    def test_failedTimedFlush(self):
        """
        A flush that fails on the timer raises nowhere; the next line is
        flushed at once, so its error reaches the caller (the log
        publisher), and after a good flush the timer is used again.
        """
        clock = Clock()
        out = FlushCountingFile()
        flusher = LineFlusher(out, 0.1, clock)
        out.write("a\n")
        flusher.written()
        out.failFlush = True
        clock.advance(0.1)
        out.write("b\n")
        self.assertRaises(OSError, flusher.written)
        out.failFlush = False
        flusher.written()
        self.assertEqual((1, "a\nb\n"), (out.flushes, out.flushed))
        out.write("c\n")
        flusher.written()
        self.assertEqual(1, out.flushes)
        clock.advance(0.1)
        self.assertEqual((2, "a\nb\nc\n"), (out.flushes, out.flushed))

    def test_textObserver(self):
        """
        L{textObserver} with an interval and a clock writes every line at
        once and flushes on the timer; without them it flushes every line
        (twistd's behaviour).
        """
        event = {"log_namespace": "n", "log_level": LogLevel.info,
                 "log_time": 1764160000.0, "log_format": "{text}",
                 "text": "hello"}
        clock = Clock()
        out = FlushCountingFile()
        observer = textObserver(out, 0.1, clock)
        self.assertIsInstance(observer, TextLineObserver)
        self.assertTrue(ILogObserver.providedBy(observer))
        observer(event)
        observer(event)
        line = textLineFormatter()(event)
        self.assertEqual((line * 2, 0), (out.getvalue(), out.flushes))
        clock.advance(0.1)
        self.assertEqual(1, out.flushes)
        out = FlushCountingFile()
        observer = textObserver(out)
        observer(event)
        self.assertEqual((line, 1), (out.getvalue(), out.flushes))

    def test_textObserverBytes(self):
        """
        To a file of bytes the lines go as UTF-8, as twistd's
        L{FileLogObserver<twisted.logger.FileLogObserver>} writes them; an
        event with no text writes and flushes nothing.
        """
        out = FlushCountingBytesFile()
        observer = TextLineObserver(out, lambda event: event["text"])
        observer({"text": "h\u00e9llo \u2603\n"})
        observer({"text": ""})
        observer({"text": None})
        self.assertEqual(("h\u00e9llo \u2603\n".encode("utf-8"), 1),
                         (out.getvalue(), out.flushes))

    def test_jsonObserver(self):
        """
        L{JSONLineObserver} with an interval and a clock flushes on the
        timer.
        """
        clock = Clock()
        out = FlushCountingFile()
        observer = JSONLineObserver(out, 0.1, clock)
        observer({"log_format": "a"})
        observer({"log_format": "b"})
        self.assertEqual(0, out.flushes)
        clock.advance(0.1)
        self.assertEqual(["a", "b"], [json.loads(l)["text"]
                                      for l in out.flushed.splitlines()])

    def test_services(self):
        """
        The logging services make their observer with C{flushInterval} and
        C{clock}, register a flush at exit, and on stop flush it and every
        later line.
        """
        registered = []
        self.patch(logs.atexit, "register",
                   lambda f, *a: registered.append((f, a)))
        self.patch(logs, "_twistdLogFile",
                   lambda options, size, kept: FlushCountingFile())
        for wrapperClass, observerClass in (
                (TextLoggingService, TextLineObserver),
                (JSONLoggingService, JSONLineObserver)):
            del registered[:]
            clock = Clock()
            wrapper = wrapperClass(service.MultiService(), {},
                                   flushInterval=0.25, clock=clock)
            application = service.Application("xmppgw")
            wrapper.setServiceParent(application)
            observer = application.getComponent(ILogObserver)
            self.assertIsInstance(observer, observerClass)
            self.assertIs(observer, wrapper.observer)
            flusher = observer.flusher
            self.assertEqual((0.25, clock), (flusher.interval, flusher.clock))
            self.assertEqual([(logs._flushAtExit, (flusher,))], registered)
            wrapper.startService()
            observer({"log_format": "x", "log_level": LogLevel.info,
                      "log_namespace": "n", "log_time": 1.0, "text": "x"})
            self.assertEqual(0, flusher.outFile.flushes)
            wrapper.stopService()
            self.assertEqual((1, 0), (flusher.outFile.flushes,
                                      flusher.interval))
            self.assertEqual([], clock.getDelayedCalls())

    def test_flushAtExit(self):
        """
        The flush at exit flushes; a file closed already or failing is left
        alone.
        """
        out = FlushCountingFile()
        flusher = LineFlusher(out, 0.1, Clock())
        logs._flushAtExit(flusher)
        self.assertEqual((1, 0), (out.flushes, flusher.interval))
        out.failFlush = True
        logs._flushAtExit(flusher)
        closed = io.StringIO()
        closed.close()
        logs._flushAtExit(LineFlusher(closed))

    def test_makeService(self):
        """
        L{tap.makeService} gives the logging service C{[log]
        flush_interval} (default L{FLUSH_INTERVAL}) and its reactor.
        """
        from tests.test_tap import UDPMemoryReactor

        self.assertEqual(0.1, FLUSH_INTERVAL)
        listen = {"listen": ["udp:127.0.0.1:5999"]}
        for log, interval in (({}, FLUSH_INTERVAL),
                              ({"flush_interval": 0}, 0.0),
                              ({"format": "json", "flush_interval": 2.5},
                               2.5)):
            config = parseConfig({"sip": listen, "log": log}, "x.toml")
            reactor = UDPMemoryReactor()
            wrapper = tap.makeService({"gateway": config}, reactor=reactor)
            self.assertEqual((interval, reactor),
                             (wrapper.flushInterval, wrapper.clock))


def _fields():
    """
    The fields of a message line, as the router gives them.
    """
    return {"text": "SIP->XMPP a -> b as c -> d: 202 in 1.5 ms",
            "direction": "SIP->XMPP", "sender": "a", "target": "b",
            "mapped": "c -> d", "code": 202, "reason": "", "latency":
            " in 1.5 ms", "latencyMs": 1.5}


class _Source:
    """
    A class with a L{Logger} class attribute, as the router has.
    """
    log = Logger()


class EmitEventTests(unittest.TestCase):
    """
    L{emitEvent} emits the event L{Logger.emit} would, to the same observer.
    """

    def emitBoth(self, level=LogLevel.info, observer=None):
        """
        The events of C{Logger.emit} and L{emitEvent} for the same fields,
        through one logger bound to one source.
        """
        events = []
        source = _Source()
        logger = _Source.log.__get__(source, _Source)
        logger.observer = events.append if observer is None else observer
        logger.emit(level, "{text}", **_fields())
        emitEvent(logger, level, "{text}", _fields(), now=lambda: 12.5)
        return logger, source, events

    def test_sameEvent(self):
        """
        Same keys in the same order, same values (the time: from the wall
        clock, or C{now}), so the same text and JSON lines.
        """
        logger, source, [reference, event] = self.emitBoth()
        self.assertEqual(list(reference), list(event))
        self.assertEqual(
            ["text", "direction", "sender", "target", "mapped", "code",
             "reason", "latency", "latencyMs", "log_logger", "log_level",
             "log_namespace", "log_source", "log_format", "log_time"],
            list(event))
        self.assertIs(logger, event["log_logger"])
        self.assertIs(source, event["log_source"])
        self.assertEqual("tests.test_logs._Source", event["log_namespace"])
        self.assertEqual(12.5, event["log_time"])
        reference["log_time"] = event["log_time"]
        self.assertEqual(reference, event)
        self.assertEqual(eventAsJSONLine(reference), eventAsJSONLine(event))
        self.assertEqual(textLineFormatter()(reference),
                         textLineFormatter()(event))
        self.assertEqual(formatEventAsClassicLogText(reference),
                         formatEventAsClassicLogText(event))

    def test_wallClock(self):
        """
        By default C{log_time} is the wall clock's time, as Twisted's.
        """
        events = []
        logger = Logger(namespace="n", observer=events.append)
        before = time.time()
        emitEvent(logger, LogLevel.warn, "x", {})
        after = time.time()
        [event] = events
        self.assertTrue(before <= event["log_time"] <= after)
        self.assertEqual(LogLevel.warn, event["log_level"])

    def test_levels(self):
        """
        Every level gives the same event as C{Logger.emit}.
        """
        for level in LogLevel.iterconstants():
            _, _, [reference, event] = self.emitBoth(level)
            reference["log_time"] = event["log_time"]
            self.assertEqual(reference, event)

    def test_levelFiltering(self):
        """
        The observer's level filtering applies as to C{Logger.emit}: below
        the level, neither event passes; at or above it, both do.
        """
        for level, count in [(LogLevel.debug, 0), (LogLevel.info, 0),
                             (LogLevel.warn, 2), (LogLevel.error, 2)]:
            passed = []
            filtering = FilteringLogObserver(
                passed.append,
                [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)])
            self.emitBoth(level, filtering)
            self.assertEqual(count, len(passed), level)

    def test_globalObservers(self):
        """
        Through a logger on the global publisher (the router's), the event
        reaches the observers there: C{capturedLogs}, twistd's, a filtering
        one.
        """
        passed = []
        filtering = FilteringLogObserver(
            passed.append,
            [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)])
        globalLogPublisher.addObserver(filtering)
        self.addCleanup(globalLogPublisher.removeObserver, filtering)
        logger = _Source().log
        with capturedLogs() as events:
            emitEvent(logger, LogLevel.info, "{text}", _fields())
            emitEvent(logger, LogLevel.error, "{text}", _fields())
        self.assertEqual([LogLevel.info, LogLevel.error],
                         [e["log_level"] for e in events])
        self.assertEqual([LogLevel.error], [e["log_level"] for e in passed])

    def test_invalidLevel(self):
        """
        A level that is not a L{LogLevel} is reported as C{Logger.emit}
        reports it, and the event is not emitted.
        """
        logger, _, events = self.emitBoth(level="info")
        self.assertEqual(2, len(events))
        for event in events:
            self.assertEqual(LogLevel.critical, event["log_level"])
            self.assertEqual("info", event["invalidLevel"])
            self.assertIn("invalid log level", event["log_format"])

    def test_trace(self):
        """
        A C{log_trace} gets the logger and its observer, as with
        C{Logger.emit}.
        """
        events = []
        logger = Logger(namespace="n", observer=events.append)
        trace = []
        emitEvent(logger, LogLevel.info, "x", {"log_trace": trace})
        self.assertEqual([(logger, events.append)], trace)


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

    def test_makeServiceRotation(self):
        """
        L{tap.makeService} gives the logging service C{[log] rotate_size}
        and C{rotated_files_max}.
        """
        from tests.test_tap import UDPMemoryReactor

        listen = {"listen": ["udp:127.0.0.1:5999"]}
        for log in ({}, {"format": "json"}):
            config = parseConfig(
                {"sip": listen,
                 "log": {**log, "rotate_size": 5000, "rotated_files_max": 3}},
                "x.toml")
            wrapper = tap.makeService({"gateway": config},
                                      reactor=UDPMemoryReactor())
            self.assertEqual((5000, 3), (wrapper.rotateSize,
                                         wrapper.rotatedFilesMax))

    def writeLines(self, **rotation):
        """
        Open C{gw.log} in a new directory as the logging service would, with
        C{rotation} (C{rotateSize}, C{rotatedFilesMax}), and write 20 lines
        of 59 bytes to it.
        """
        previous = signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        self.addCleanup(signal.signal, signal.SIGUSR1, previous)
        directory = self.mktemp()
        os.makedirs(directory)
        logFile = _twistdLogFile(
            {"logfile": os.path.join(directory, "gw.log"), "nodaemon": False},
            **rotation)
        self.addCleanup(logFile.close)
        for i in range(20):
            logFile.write("line %02d %s\n" % (i, "x" * 50))
        return logFile

    def test_rotation(self):
        """
        The log file starts anew every C{rotateSize} bytes and keeps at most
        C{rotatedFilesMax} old ones: a rotation renames at most that many
        files (twistd's own file keeps them all, and each rotation renames
        every one).
        """
        logFile = self.writeLines(rotateSize=100, rotatedFilesMax=3)
        directory, path = logFile.directory, logFile.path
        self.assertEqual([1, 2, 3], logFile.listLogs())
        self.assertEqual(["gw.log", "gw.log.1", "gw.log.2", "gw.log.3"],
                         sorted(os.listdir(directory)))
        with open(path + ".1") as f:
            self.assertIn("line 17", f.read())

    def test_rotationOff(self):
        """
        C{rotateSize} 0: never rotated by size (logrotate and SIGUSR1 do it);
        C{rotatedFilesMax} 0 or L{None}: every old file is kept.
        """
        logFile = self.writeLines(rotateSize=0, rotatedFilesMax=0)
        self.assertEqual([], logFile.listLogs())
        self.assertIsNone(logFile.maxRotatedFiles)
        for i in range(5):
            logFile.rotate()
        self.assertEqual([1, 2, 3, 4, 5], logFile.listLogs())

    def test_buffered(self):
        """
        The log file holds its lines until it is flushed (Twisted's own
        L{LogFile<twisted.python.logfile.LogFile>} writes each one at
        once), and counts them for its rotation as they are written.
        """
        logFile = self.writeLines(rotateSize=0)
        self.assertIsInstance(logFile, BufferedLogFile)
        self.assertEqual(0, os.path.getsize(logFile.path))
        self.assertEqual(20 * 59, logFile.size)
        logFile.flush()
        with open(logFile.path) as f:
            lines = f.read().splitlines()
        self.assertEqual(20, len(lines))
        self.assertEqual("line 19 " + "x" * 50, lines[-1])

    def test_cLock(self):
        """
        The lock Twisted's synchronized C{write} and C{rotate} take is
        threading's C RLock, not Twisted's pure-Python C{XLock}; it is
        reentrant and free again after each call.
        """
        logFile = self.writeLines(rotateSize=0)
        lock = logFile.__dict__["_threadable_lock"]
        self.assertIs(type(threading.RLock()), type(lock))
        self.assertNotIsInstance(lock, threading._RLock)
        logFile.write("more\n")
        logFile.rotate()
        self.assertIs(lock, logFile._threadable_lock)
        # Free after the calls: another thread can take it.
        taken = []

        def take():
            taken.append(lock.acquire(blocking=False))
            if taken[0]:
                lock.release()

        thread = threading.Thread(target=take)
        thread.start()
        thread.join(10)
        self.assertEqual([True], taken)

    def test_bufferedRotation(self):
        """
        Lines waiting in the buffer when the file is rotated (by size, by
        SIGUSR1's L{rotate<BufferedLogFile.rotate>}) or reopened go to the
        file they were written to.
        """
        logFile = self.writeLines(rotateSize=0)
        logFile.rotate()
        logFile.write("after the rotation\n")
        logFile.reopen()
        with open(logFile.path + ".1") as f:
            self.assertEqual(20, len(f.read().splitlines()))
        with open(logFile.path) as f:
            self.assertEqual("after the rotation\n", f.read())
        # By size: the 2nd line starts a new file, the 1st is in gw.log.1.
        sized = self.writeLines(rotateSize=59)
        sized.flush()
        with open(sized.path + ".1") as f:
            self.assertEqual("line 18 " + "x" * 50 + "\n", f.read())
        with open(sized.path) as f:
            self.assertEqual("line 19 " + "x" * 50 + "\n", f.read())

    def test_bufferedService(self):
        """
        Through the text logging service, a daemon's line reaches its log
        file when the flush interval has passed, and at once after the
        service stopped.
        """
        previous = signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        self.addCleanup(signal.signal, signal.SIGUSR1, previous)
        self.patch(logs.atexit, "register", lambda f, *a: None)
        path = os.path.abspath(self.mktemp())
        clock = Clock()
        wrapper = TextLoggingService(
            service.MultiService(), {"logfile": path, "nodaemon": False},
            flushInterval=0.1, clock=clock)
        application = service.Application("xmppgw")
        wrapper.setServiceParent(application)
        observer = wrapper.observer
        self.addCleanup(observer.flusher.outFile.close)
        wrapper.startService()
        event = {"log_format": "{text}", "log_level": LogLevel.info,
                 "log_namespace": "n", "log_time": 1764160000.0}
        observer(dict(event, text="first"))
        self.assertEqual(0, os.path.getsize(path))
        clock.advance(0.1)
        with open(path) as f:
            self.assertTrue(f.read().endswith("] first\n"))
        wrapper.stopService()
        observer(dict(event, text="last"))
        with open(path) as f:
            self.assertTrue(f.read().endswith("] last\n"))


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
            self.link.comeUp()
        [event] = [e for e in events if e.get("direction")]
        self.assertEqual(LogLevel.info, event["log_level"])
        self.assertEqual(125.0, event["latencyMs"])
        record = json.loads(eventAsJSONLine(event))
        self.assertEqual(
            "SIP->XMPP <sip:bob@sip.example>;tag=ft1 -> "
            "sip:alice*xmpp.example@gw.example as bob*sip.example@gw.example "
            "-> alice@xmpp.example: 202 in 125.0 ms", record["text"])
        self.assertEqual(202, record["code"])

    def test_event(self):
        """
        The line is the event C{self._log.info} gives, from a logger bound
        once to the router (not rebuilt by the class attribute on each
        access), through the global publisher to whatever observes it,
        filtering included.
        """
        import dataclasses

        self.router.settings = dataclasses.replace(self.settings,
                                                   logMessages=True)
        logger = self.router._log
        self.assertIs(logger, self.router._log)
        self.assertEqual("xmppgw.router.MessageRouter", logger.namespace)
        self.assertIs(self.router, logger.source)
        self.assertIs(globalLogPublisher, logger.observer)
        passed = []
        filtering = FilteringLogObserver(
            passed.append,
            [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)])
        globalLogPublisher.addObserver(filtering)
        self.addCleanup(globalLogPublisher.removeObserver, filtering)
        with capturedLogs() as events:
            before = time.time()
            self.receive(sipMessage())
            after = time.time()
        [event] = [e for e in events if e.get("direction")]
        self.assertEqual([], [e for e in passed if e.get("direction")])
        # (Observers may add keys: trial's legacy one adds "format", ...)
        fields = {k: event[k] for k in _fields()}
        with capturedLogs() as reference:
            logger.info("{text}", **fields)
        [reference] = reference
        self.assertEqual(list(reference), list(event))
        self.assertTrue(before <= event["log_time"] <= after)
        reference["log_time"] = event["log_time"]
        emitted = list(_fields()) + [
            "log_logger", "log_level", "log_namespace", "log_source",
            "log_format", "log_time"]
        self.assertEqual({k: reference[k] for k in emitted},
                         {k: event[k] for k in emitted})
        self.assertIs(logger, event["log_logger"])

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
            dict(base, log_format="{text}", text="ends with a newline\n"),
            dict(base, log_format="{text}", text="\n\nthree",
                 log_namespace="name\nspace"),
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
        # gets its own; an instant that rounds to the next second, or an
        # earlier second, is not read from the cache.
        format = textLineFormatter()
        for when in (1764160000.1, 1764160000.9, 1764160000.9999996,
                     1764160000.999998, 1764160001.0, 1764160061.5,
                     1764160000.5, 1764160000):
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
