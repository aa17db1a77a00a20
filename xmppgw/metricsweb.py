# -*- test-case-name: tests.test_metrics -*-
"""
The HTTP site of C{[metrics] listen}: C{/metrics} (Prometheus text format),
C{/healthz} and C{/readyz}.

Kept apart from L{xmppgw.metrics} so that C{twisted.web} is imported only
by a gateway that serves metrics (L{xmppgw.metrics.buildOperations} imports
this module when C{listen} is set).

The pages are plain L{twisted.web.resource.Resource}s rendered in the
reactor thread, not C{prometheus_client.twisted.MetricsResource}: that one
runs the exposition in the reactor's thread pool (the scrape-time collectors
read router state that only the reactor thread may touch) and imports the
global reactor when imported.
"""

from twisted.web.resource import Resource
from twisted.web.server import Site

__all__ = ["makeSite", "HealthPage", "ReadyPage", "MetricsPage"]


class _TextPage(Resource):
    isLeaf = True

    def _text(self, request, code, text):
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return text.encode("utf-8")


class HealthPage(_TextPage):
    """
    C{/healthz}: 200 while the process runs and the reactor answers.
    """

    def render_GET(self, request):
        return self._text(request, 200, "ok\n")


class ReadyPage(_TextPage):
    """
    C{/readyz}: 200 when every L{Readiness} check passes, 503 otherwise,
    with one line per check.
    """

    def __init__(self, readiness):
        Resource.__init__(self)
        self.readiness = readiness

    def render_GET(self, request):
        ready, lines = self.readiness.status()
        head = "ready" if ready else "not ready"
        return self._text(request, 200 if ready else 503,
                          "\n".join([head] + lines) + "\n")


class MetricsPage(Resource):
    """
    C{/metrics}: the recorder's metrics in the Prometheus text format.
    """

    isLeaf = True

    def __init__(self, recorder):
        Resource.__init__(self)
        self.recorder = recorder

    def render_GET(self, request):
        from prometheus_client import CONTENT_TYPE_LATEST

        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        return self.recorder.exposition()


class _Root(Resource):
    def getChild(self, name, request):
        return _NotFound()

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"xmppgw: /metrics /healthz /readyz\n"


class _NotFound(_TextPage):
    def render_GET(self, request):
        return self._text(request, 404, "not found: try /metrics, /healthz "
                          "or /readyz\n")


class _QuietSite(Site):
    """
    A L{Site} that does not log every request (scrapes come every few
    seconds) and never shows tracebacks.
    """

    displayTracebacks = False

    def log(self, request):
        pass


def makeSite(recorder, readiness, timeout=30):
    """
    The HTTP site: C{/metrics}, C{/healthz} and C{/readyz}.

    @param recorder: a L{xmppgw.metrics.MetricsRecorder}.
    @param readiness: a L{xmppgw.metrics.Readiness}.
    @param timeout: seconds an idle HTTP connection is kept.
    @rtype: L{twisted.web.server.Site}
    """
    root = _Root()
    root.putChild(b"metrics", MetricsPage(recorder))
    root.putChild(b"healthz", HealthPage())
    root.putChild(b"readyz", ReadyPage(readiness))
    return _QuietSite(root, timeout=timeout)
