# -*- test-case-name: tests.test_logs -*-
"""
Log output: text lines as twistd writes them (faster), or JSON lines for log
shippers.

In the default C{[log] format = "text"}, L{makeService<xmppgw.tap.makeService>}
wraps the gateway in a L{TextLoggingService}, which gives twistd's application
the same text observer twistd would have built (same file, opened with a
write buffer: L{BufferedLogFile}; same SIGUSR1 rotation; byte-identical
lines: L{textLineFormatter}; but rotated by size
per C{[log] rotate_size} and C{rotated_files_max}, where twistd rotates
every 1 MB and keeps, and renames at each rotation, every old file),
except that an event
whose format is C{"{text}"} (the router's one line per relayed message
preformats its text) is written without Twisted's format-string machinery
and with the time stamp formatted once per second: that machinery cost
about a third of the CPU of a relayed message with C{[log] messages} on.

The gateway logs through L{twisted.logger}. twistd writes text lines to its
C{--logfile} (or stdout with C{-n}). For JSON instead, either:

 - set C{[log] format = "json"}: L{makeService<xmppgw.tap.makeService>}
   wraps the gateway in a L{JSONLoggingService}, which gives twistd's
   application a L{JSONLineObserver} writing where twistd would have written
   (C{--logfile FILE}, rotated on SIGUSR1 like twistd's own; stdout with
   C{-n} and no C{--logfile}, or C{--logfile -});
 - or run C{twistd --logger xmppgw.logs.jsonObserver ...}: JSON lines on
   stdout whatever the configuration says (twistd then ignores
   C{--logfile}), convenient under systemd, which sends stdout to the
   journal.

Each line is one JSON object: C{time} (ISO 8601, UTC), C{level}, C{namespace},
C{text} (the formatted message, as in the text log), the event's own fields
(for a relayed message: C{direction}, C{sender}, C{target}, C{mapped}, C{code},
C{reason}, C{latencyMs}) and, for errors with a traceback, C{failure}.
Values that are not JSON types are written as their C{repr}.

Both observers flush their file at most C{[log] flush_interval} seconds (0.1)
after a line, not after every line as twistd's own does: at a thousand
messages a second that is ten writes to the file a second, not a thousand,
and the buffered lines are bounded by the file's buffer (8 KB; a full one
is written at once). Lines written since the last flush are lost if the
process is killed outright (SIGKILL, a crash of the interpreter); on a
normal stop the file is flushed and the shutdown's own lines are written at
once (L{LineFlusher.flushEveryLine}). C{flush_interval = 0} flushes every
line, as twistd does.

The one line per relayed message is switched by C{[log] messages}; full
traffic dumps per side by C{[log] traffic_sip} and C{traffic_xmpp}. The
router emits it with L{emitEvent}: the event L{Logger.emit
<twisted.logger.Logger.emit>} would have built, to the same observer,
without C{emit}'s per-call costs.
"""

import atexit
import io
import json
import sys
from datetime import datetime, timezone
from threading import RLock, get_ident
from time import time

from twisted.application import service
from twisted.logger import (
    ILogObserver, LogLevel, formatEvent, formatEventAsClassicLogText,
    formatTime, timeFormatRFC3339)
from twisted.python import logfile
from twisted.python.compat import ioType
from zope.interface import implementer

__all__ = ["BufferedLogFile", "FLUSH_INTERVAL", "JSONLineObserver",
           "JSONLoggingService", "LineFlusher", "TextLineObserver",
           "TextLoggingService", "emitEvent", "eventAsJSONLine",
           "jsonObserver", "textLineFormatter", "textObserver"]

#: C{[log] flush_interval}'s default: seconds a written line may wait in
#: the file's buffer.
FLUSH_INTERVAL = 0.1

_PLAIN = (str, int, float, bool, type(None))

#: The valid levels, for a cheap check (L{Logger.emit
#: <twisted.logger.Logger.emit>} sorts L{LogLevel}'s constants on every call).
_LEVELS = frozenset(LogLevel.iterconstants())


def emitEvent(logger, level, format, event, now=time):
    """
    Emit C{event} through C{logger} as C{logger.emit(level, format,
    **event)} would, for a hot path (the router's line per message).

    The event gets the same keys, in the same order, and goes to the same
    observer (C{logger.observer}: the global log publisher, hence whatever
    observers twistd, L{capturedLogs<twisted.logger.capturedLogs>} or a test
    put there, with their own level filtering). Saved: C{emit}'s check of
    C{level} against a freshly sorted list of L{LogLevel}'s constants (a set
    here), the C{info -> emit} call and the copies of the keyword
    arguments. Call it with a L{Logger} bound once (an instance attribute),
    not one a class attribute makes anew on every access.

    C{log_time} is wall-clock time, as Twisted's own, taken here in the
    logging glue: the router's clock may be a fake (tests, benchmarks), and
    time stamps of log lines are not the core's business.

    @param logger: the L{twisted.logger.Logger}.
    @param level: a L{LogLevel} constant; anything else goes to
        C{logger.emit}, which reports it as Twisted does.
    @param format: the event's format (C{log_format}).
    @param event: the event's own fields, a new L{dict} that becomes the
        event (as C{emit} does with its keyword arguments).
    @param now: for tests: the wall clock.
    """
    if level not in _LEVELS:
        logger.emit(level, format, **event)
        return
    observer = logger.observer
    # One key at a time: update() with keywords builds a second dict first
    # (about 0.1 us more on PyPy, 0.3 us on CPython).
    event["log_logger"] = logger
    event["log_level"] = level
    event["log_namespace"] = logger.namespace
    event["log_source"] = logger.source
    event["log_format"] = format
    event["log_time"] = now()
    if "log_trace" in event:
        event["log_trace"].append((logger, observer))
    observer(event)


def _plain(value, depth=0):
    """
    C{value} as JSON types: containers kept (bounded depth), anything else
    as its C{repr}.
    """
    if isinstance(value, _PLAIN):
        return value
    if depth < 3:
        if isinstance(value, (list, tuple)):
            return [_plain(v, depth + 1) for v in value]
        if isinstance(value, dict):
            return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"


def eventAsJSONLine(event):
    """
    One log event as one line of JSON (no newline).

    @param event: a L{twisted.logger} event dictionary.
    @rtype: L{str}
    """
    record = {}
    when = event.get("log_time")
    if when is not None:
        record["time"] = datetime.fromtimestamp(when, timezone.utc).isoformat(
            timespec="milliseconds").replace("+00:00", "Z")
    level = event.get("log_level")
    record["level"] = level.name if level is not None else "info"
    record["namespace"] = event.get("log_namespace", "")
    try:
        text = formatEvent(event)
    except Exception as e:  # formatEvent already guards; be sure
        text = f"unformattable event: {e!r}"
    failure = event.get("log_failure")
    if failure is not None:
        try:
            record["failure"] = failure.getTraceback()
        except Exception:
            record["failure"] = repr(failure)
    record["text"] = text
    for key, value in event.items():
        if key.startswith("log_") or key in record or key == "format":
            continue
        record[key] = _plain(value)
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


class LineFlusher:
    """
    Flushes a log file at most C{interval} seconds after a line was
    written to it, instead of after every line (a C{write} system call per
    line: 0.6-1.3 us of CPU a line on the test VM, more than the rest of
    writing it).

    A line logged from another thread than the one that made the flusher
    (the reactor's, under twistd: a worker of a thread pool, say) is
    flushed at once, as twistd's observer does: the timer can only be
    armed from the reactor's thread.

    @ivar interval: the longest a written line waits in the file's buffer,
        in seconds; 0 (or no clock): flushed after every line.
    """

    def __init__(self, outFile, interval=0, clock=None):
        """
        @param outFile: the file the lines are written to (C{flush()}).
        @param interval: seconds; 0: every line.
        @param clock: an L{IReactorTime<twisted.internet.interfaces.IReactorTime>}
            for the timer; L{None}: every line.
        """
        self.outFile = outFile
        self.interval = interval if clock is not None else 0
        self.clock = clock
        self._call = None
        self._failed = False
        self._thread = get_ident()

    def written(self):
        """
        A line was written: flush now, or arm the timer if it is not armed.
        """
        if self.interval <= 0 or self._failed or get_ident() != self._thread:
            # After a failed timed flush: at once, until one succeeds.
            self.outFile.flush()
            self._failed = False
        elif self._call is None:
            self._call = self.clock.callLater(self.interval, self._timedFlush)

    def _timedFlush(self):
        self._call = None
        try:
            self.outFile.flush()
        except Exception:
            # Nobody to tell from a timer: the next line is flushed at once
            # and its error reaches the log publisher, as a failed flush of
            # twistd's own observer would.
            self._failed = True

    def flush(self):
        """
        Flush now (and disarm the timer).
        """
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None
        self.outFile.flush()

    def flushEveryLine(self):
        """
        Flush now, and after every line from now on (for the lines of a
        shutdown).
        """
        self.interval = 0
        self.flush()


@implementer(ILogObserver)
class TextLineObserver:
    """
    A log observer writing the lines C{formatEvent} makes to a file, as
    L{FileLogObserver<twisted.logger.FileLogObserver>} does (UTF-8 to a
    file of bytes), flushed by a L{LineFlusher}.

    @ivar flusher: the L{LineFlusher}.
    """

    def __init__(self, outFile, formatEvent, flushInterval=0, clock=None):
        """
        @param outFile: a text or binary file.
        @param formatEvent: makes an event's text (with its newline), or
            L{None} for no line.
        @param flushInterval: see L{LineFlusher}.
        @param clock: see L{LineFlusher}.
        """
        self._write = outFile.write
        self._encoding = None if ioType(outFile) is str else "utf-8"
        self.formatEvent = formatEvent
        self.flusher = LineFlusher(outFile, flushInterval, clock)

    def __call__(self, event):
        text = self.formatEvent(event)
        if text:
            if self._encoding is None:
                self._write(text)
            else:
                self._write(text.encode(self._encoding))
            self.flusher.written()


@implementer(ILogObserver)
class JSONLineObserver:
    """
    A log observer writing one JSON object per line to a text file.

    @ivar flusher: the L{LineFlusher}.
    """

    def __init__(self, outFile, flushInterval=0, clock=None):
        """
        @param outFile: a text file (C{write(str)}, C{flush()}).
        @param flushInterval: see L{LineFlusher}.
        @param clock: see L{LineFlusher}.
        """
        self.outFile = outFile
        self.flusher = LineFlusher(outFile, flushInterval, clock)

    def __call__(self, event):
        self.outFile.write(eventAsJSONLine(event) + "\n")
        self.flusher.written()


def jsonObserver():
    """
    A JSON log observer on stdout: C{twistd --logger xmppgw.logs.jsonObserver}.
    """
    return JSONLineObserver(sys.stdout)


def textLineFormatter(timeFormat=timeFormatRFC3339):
    """
    A formatter giving exactly the lines of twistd's text log
    (L{formatEventAsClassicLogText} with C{timeFormat}), faster for the
    common event: a C{"{text}"} format, no failure, no C{log_system}.
    The time stamp is formatted once per second, so C{timeFormat} must not
    show fractions of a second.

    @return: a callable taking an event and returning its text line (with
        the newline) or L{None}, for L{FileLogObserver}.
    """
    # The instants read as the second formatted last, from its start to a
    # microsecond before the next one, and its text: (start, end, stamp).
    cached = (0.0, 0.0, None)

    def slowTime(when):
        return formatTime(when, timeFormat)

    def format(event):
        nonlocal cached
        text = event.get("text")
        when = event.get("log_time")
        if (event.get("log_format") == "{text}" and text
                and isinstance(text, str) and when is not None
                and timeFormat is not None and "log_failure" not in event
                and "log_system" not in event):
            start, end, stamp = cached
            if not start <= when < end:
                second = int(when)
                # datetime rounds to the microsecond: within a microsecond
                # of the next second, let formatTime decide which second
                # it is.
                if not 0 <= when - second < 0.999999:
                    return formatEventAsClassicLogText(event,
                                                       formatTime=slowTime)
                stamp = formatTime(when, timeFormat)
                cached = (second, second + 0.999999, stamp)
            level = event.get("log_level")
            namespace = event.get("log_namespace", "-")
            levelName = level.name if level is not None else "-"
            line = f"{stamp} [{namespace}#{levelName}] {text}\n"
            if line.find("\n") < len(line) - 1:
                # As twistd: the lines after the first one indented.
                line = line[:-1].replace("\n", "\n\t") + "\n"
            return line
        return formatEventAsClassicLogText(event, formatTime=slowTime)

    return format


def textObserver(outFile, flushInterval=0, clock=None):
    """
    twistd's text log observer on C{outFile}, with L{textLineFormatter},
    flushed as L{LineFlusher} says (by default after every line, as
    twistd's).
    """
    return TextLineObserver(outFile, textLineFormatter(), flushInterval,
                            clock)


#: twistd's own log file size before rotation (L{logfile.LogFile}'s
#: default), which the logging services keep unless given another.
TWISTD_ROTATE_SIZE = 1000000


def _twistdLogFile(twistdOptions, rotateSize=TWISTD_ROTATE_SIZE,
                   rotatedFilesMax=None):
    """
    Where twistd would write its log, given its options (C{--logfile},
    C{-n}), opened like twistd does, except for the rotation: a new file
    every C{rotateSize} bytes (twistd: L{TWISTD_ROTATE_SIZE}; 0: never by size), at
    most C{rotatedFilesMax} old ones kept (twistd: all, and a rotation
    renames every one of them; L{None} or 0: all).
    """
    name = twistdOptions.get("logfile") if twistdOptions else None
    nodaemon = bool(twistdOptions.get("nodaemon")) if twistdOptions else True
    if name == "-" and not nodaemon:
        # twistd itself refuses this ("Daemons cannot log to stdout"):
        # leave the log set-up to it.
        return None
    if name == "-" or (not name and nodaemon):
        return sys.stdout
    logFile = BufferedLogFile.fromFullPath(
        name or "twistd.log", rotateLength=rotateSize,
        maxRotatedFiles=rotatedFilesMax or None)
    import signal

    if not signal.getsignal(signal.SIGUSR1):
        def rotate(signum, frame):
            from twisted.internet import reactor

            reactor.callFromThread(logFile.rotate)

        signal.signal(signal.SIGUSR1, rotate)
    return logFile


class BufferedLogFile(logfile.LogFile):
    """
    twistd's log file (L{LogFile<twisted.python.logfile.LogFile>}: rotated
    by size and on SIGUSR1) with a write buffer. Twisted opens the file
    unbuffered, so every line was a C{write} system call whatever the
    L{LineFlusher} said; here lines reach the file when C{flush} is called
    (by the L{LineFlusher}), when the buffer is full, and when the file is
    rotated or closed (the lines written before a rotation stay in the old
    file).
    """

    #: Bytes held before they are written without a flush.
    bufferSize = 65536

    def __init__(self, *args, **kwargs):
        # The lock Twisted's synchronized write and rotate take
        # (twisted.python.threadable.synchronize), which would otherwise be
        # made on first use as an XLock, threading's pure-Python RLock:
        # its acquire and release cost more on CPython than writing the
        # line (docs/performance.rst, round 31). threading.RLock is the C
        # one, as reentrant. Set before anything can take it; twistd
        # never pickles the file (a plugin's run is always --no_save),
        # which is what XLock is for.
        self.__dict__["_threadable_lock"] = RLock()
        logfile.LogFile.__init__(self, *args, **kwargs)

    def _openFile(self):
        logfile.LogFile._openFile(self)
        self._file = io.BufferedWriter(self._file, self.bufferSize)


def _flushAtExit(flusher):
    try:
        flusher.flushEveryLine()
    except Exception:  # closed already, or the disk is full: nothing to do
        pass


class JSONLoggingService(service.MultiService):
    """
    A wrapper around the gateway's service that, when twistd attaches it to
    its application, gives the application an L{ILogObserver} writing JSON
    lines. twistd uses that observer instead of its text one (unless
    C{--logger} is given, which wins).
    """

    def __init__(self, gateway, twistdOptions=None, observerFactory=None,
                 rotateSize=TWISTD_ROTATE_SIZE, rotatedFilesMax=None,
                 flushInterval=0, clock=None):
        """
        @param gateway: the gateway's service, made a child of this one.
        @param twistdOptions: twistd's own options (the plugin options'
            C{parent}), for C{logfile} and C{nodaemon}; L{None}: stdout.
        @param observerFactory: for tests: makes the observer instead.
        @param rotateSize: with C{--logfile}: bytes per file before a new
            one (C{[log] rotate_size}; 0: never by size).
        @param rotatedFilesMax: with C{--logfile}: most old files kept
            (C{[log] rotated_files_max}; L{None} or 0: all).
        @param flushInterval: C{[log] flush_interval} (L{LineFlusher}).
        @param clock: the reactor, for L{LineFlusher}'s timer; L{None}:
            every line is flushed.
        """
        service.MultiService.__init__(self)
        gateway.setServiceParent(self)
        self.gateway = gateway
        self.twistdOptions = twistdOptions
        self.observerFactory = observerFactory
        self.rotateSize = rotateSize
        self.rotatedFilesMax = rotatedFilesMax
        self.flushInterval = flushInterval
        self.clock = clock
        #: The observer this service gave twistd's application, if any.
        self.observer = None

    def setServiceParent(self, parent):
        service.MultiService.setServiceParent(self, parent)
        getComponent = getattr(parent, "getComponent", None)
        if getComponent is None or getComponent(ILogObserver, None) is not None:
            return
        if self.twistdOptions and self.twistdOptions.get("syslog"):
            return
        if self.observerFactory is not None:
            observer = self.observerFactory()
        else:
            logFile = _twistdLogFile(self.twistdOptions, self.rotateSize,
                                     self.rotatedFilesMax)
            if logFile is None:
                return
            observer = self.makeObserver(logFile, self.flushInterval,
                                         self.clock)
            # A process that ends without stopping the service (twistd
            # giving up at start-up) still writes its buffered lines.
            atexit.register(_flushAtExit, observer.flusher)
        self.observer = observer
        parent.setComponent(ILogObserver, observer)

    def stopService(self):
        """
        Flush the log, and every line from now on (the shutdown's), then
        stop the gateway.
        """
        flusher = getattr(self.observer, "flusher", None)
        if flusher is not None:
            flusher.flushEveryLine()
        return service.MultiService.stopService(self)

    #: Makes the observer for the file twistd would write to, from the
    #: file, the flush interval and the clock.
    makeObserver = staticmethod(JSONLineObserver)

    def getServiceNamed(self, name):
        """
        The gateway's named services (C{sip}, C{xmpp}, ...), as if this
        wrapper were not there.
        """
        return self.gateway.getServiceNamed(name)


class TextLoggingService(JSONLoggingService):
    """
    Like L{JSONLoggingService}, with twistd's text lines
    (L{textObserver}) instead of JSON.
    """

    makeObserver = staticmethod(textObserver)
