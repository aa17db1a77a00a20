# -*- test-case-name: tests.test_policy -*-
"""
Process life: graceful shutdown (SIGTERM) and log reopening (SIGUSR1).

twistd handles SIGTERM (and SIGINT) by stopping the reactor, which first
calls the application's C{stopService} and waits for the L{Deferred} it
returns. L{GatewayService} is the top service of the gateway; its
C{stopService}:

  1. tells the router to shut down (L{MessageRouter.shutdown
     <xmppgw.router.MessageRouter.shutdown>}): new SIP MESSAGEs get 503 with
     C{Retry-After} and new XMPP messages C{<service-unavailable/>}, every
     held SIP MESSAGE is answered 503 now, XMPP messages queued behind an
     in-flight SIP transaction are bounced;
  2. waits for the SIP transactions in flight, at most C{drainTimeout}
     seconds; those still open then are abandoned, their XMPP senders get
     C{<remote-server-timeout/>};
  3. stops its children: the SIP listeners and connections close (answers
     already written are flushed), the XMPP stream is closed cleanly.

twistd then exits with status 0 (by default twistd re-raises the SIGTERM
it handled as it exits; after this clean stop the gateway clears that, so
the exit status says "stopped cleanly").

twistd with C{--logfile} installs a SIGUSR1 handler that I{rotates} the log
(renames it to C{.1} and opens a new one), but it does nothing when the file
was already moved away, which is what an external tool such as logrotate
does before it signals the process. L{LogReopener} replaces that handler
when the service starts: if the file at the log path is no longer the one
open (moved or deleted), it is reopened; otherwise twistd's rotation runs as
before.
"""

import os
import signal

from twisted.application import service
from twisted.logger import Logger
from twisted.python import logfile

__all__ = ["GatewayService", "LogReopener", "findLogFile"]

_log = Logger()


class GatewayService(service.MultiService):
    """
    The gateway's top service: drains the router before its children stop.

    @ivar router: the L{xmppgw.router.MessageRouter}, or L{None}.
    @ivar drainTimeout: the most seconds L{stopService} waits for SIP
        transactions in flight.
    @ivar logReopener: the L{LogReopener} installed while running, or
        L{None}.
    """

    drainTimeout = 5.0

    def __init__(self, reactor=None, router=None, drainTimeout=None,
                 handleSIGUSR1=True):
        service.MultiService.__init__(self)
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.router = router
        if drainTimeout is not None:
            self.drainTimeout = drainTimeout
        self.handleSIGUSR1 = handleSIGUSR1
        self.logReopener = None

    def startService(self):
        service.MultiService.startService(self)
        if self.handleSIGUSR1:
            self.logReopener = LogReopener.install(self.reactor)

    def stopService(self):
        """
        Drain the router (bounded by L{drainTimeout}), then stop the
        children.

        @return: a L{Deferred} firing when everything is stopped.
        """
        if self.logReopener is not None:
            self.logReopener.uninstall()
            self.logReopener = None
        router = self.router
        if router is None:
            return service.MultiService.stopService(self)
        _log.info("Shutting down: answering held messages, waiting up to "
                  "{timeout} s for SIP transactions in flight",
                  timeout=self.drainTimeout)
        d = router.shutdown()
        timer = self.reactor.callLater(self.drainTimeout, self._drainTimedOut)

        def drained(result):
            if timer.active():
                timer.cancel()
            return service.MultiService.stopService(self)

        d.addBoth(drained)
        d.addBoth(self._stopped)
        return d

    def _stopped(self, result):
        """
        Everything is answered and stopped: a SIGTERM ends in exit status 0
        (twistd would otherwise re-raise the signal when it exits, so the
        status would say "killed by SIGTERM").
        """
        if getattr(self.reactor, "_exitSignal", None) == signal.SIGTERM:
            self.reactor._exitSignal = None
        _log.info("Gateway stopped cleanly")
        return result

    def _drainTimedOut(self):
        count = self.router.abandonInFlight()
        if count:
            _log.warn("Shutdown: {count} SIP transaction(s) still in flight "
                      "after {timeout} s; their XMPP senders got an error",
                      count=count, timeout=self.drainTimeout)


def findLogFile(handler):
    """
    The L{logfile.LogFile} behind twistd's SIGUSR1 handler (a closure over
    it), or L{None}.
    """
    for cell in getattr(handler, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:
            continue
        if isinstance(value, logfile.LogFile):
            return value
    return None


class LogReopener:
    """
    The SIGUSR1 handler: reopen a log file moved away, else rotate it.
    """

    def __init__(self, logFile, reactor, previous=None):
        self.logFile = logFile
        self.reactor = reactor
        self.previous = previous
        self.reopened = 0
        self.rotated = 0

    @classmethod
    def install(cls, reactor, signum=signal.SIGUSR1):
        """
        Replace twistd's SIGUSR1 handler, if twistd installed one (only
        with C{--logfile}).

        @return: the L{LogReopener}, or L{None} when there is no log file.
        """
        try:
            previous = signal.getsignal(signum)
        except (ValueError, OSError):
            return None
        logFile = findLogFile(previous)
        if logFile is None:
            return None
        reopener = cls(logFile, reactor, previous)
        reopener.signum = signum
        try:
            signal.signal(signum, reopener._signalled)
        except (ValueError, OSError):  # not in the main thread
            return None
        return reopener

    def uninstall(self):
        """
        Put the previous handler back.
        """
        try:
            if signal.getsignal(self.signum) == self._signalled:
                signal.signal(self.signum, self.previous)
        except (ValueError, OSError, AttributeError):
            pass

    def _signalled(self, signum, frame):
        self.reactor.callFromThread(self.handle)

    def moved(self):
        """
        Whether the file at the log path is not the one open (moved away
        or deleted).
        """
        logFile = self.logFile
        try:
            current = os.stat(logFile.path)
        except OSError:
            return True
        try:
            opened = os.fstat(logFile._file.fileno())
        except (OSError, AttributeError, ValueError):
            return True
        return (current.st_dev, current.st_ino) != (opened.st_dev, opened.st_ino)

    def handle(self):
        """
        Reopen the log if it was moved away, else rotate it (twistd's
        behaviour).
        """
        if self.moved():
            self.logFile.reopen()
            self.reopened += 1
            _log.info("Log file {path} reopened (SIGUSR1)", path=self.logFile.path)
        else:
            self.logFile.rotate()
            self.rotated += 1
