"""
The deployment samples in C{etc/} and the documentation in C{docs/} are
checked against the code they describe.
"""

import glob
import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys

from twisted.trial import unittest

from xmppgw.config import Config, loadConfig
from xmppgw.gctune import RECOMMENDED_NURSERY
from xmppgw.localpeers import PrivateProsody
from xmppgw.metrics import METRIC_NAMES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ETC = os.path.join(ROOT, "etc")
DOCS = os.path.join(ROOT, "docs")
DEFAULTS = Config.defaults()


def read(*parts):
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as f:
        return f.read()


def withoutComments(text, marker):
    return [line for line in text.splitlines()
            if line.strip() and not line.strip().startswith(marker)]


class TOMLSampleTests(unittest.TestCase):
    """
    Every TOML file in C{etc/} loads.
    """

    def test_load(self):
        """
        Each C{etc/*.toml} passes the configuration check.
        """
        files = sorted(glob.glob(os.path.join(ETC, "*.toml")))
        self.assertIn(os.path.join(ETC, "xmppgw.toml"), files)
        for path in files:
            loadConfig(path)


class ProsodySampleTests(unittest.TestCase):
    """
    C{etc/prosody-component.cfg.lua} has the lines the interop tests' Prosody
    runs with (L{xmppgw.localpeers.PrivateProsody}), for the sample's
    domain, secret and port, which are the gateway's defaults.
    """

    def test_sameLines(self):
        """
        Every non-comment line of the sample is a line of the configuration
        L{PrivateProsody} writes for the same component.
        """
        sample = withoutComments(read("etc", "prosody-component.cfg.lua"), "--")
        prosody = PrivateProsody(
            self.mktemp(), componentDomain=DEFAULTS.xmpp.xmpp_domain,
            componentSecret=DEFAULTS.xmpp.xmpp_password,
            componentPort=DEFAULTS.xmpp.xmpp_port)
        written = prosody.configText().splitlines()
        for line in sample:
            self.assertIn(line, written)
        self.assertIn('Component "sip-xmpp.example.org"', sample)
        self.assertIn("component_ports = { 5347 }", sample)

    def test_gcRecommendation(self):
        """
        The sample's commented C{gc} line is, uncommented, the line
        L{PrivateProsody} writes for the benchmark's C{--prosody-gc
        generational}.
        """
        lines = read("etc", "prosody-component.cfg.lua").splitlines()
        [gc] = [line[len("-- "):] for line in lines
                if line.startswith("-- gc = ")]
        written = PrivateProsody(
            self.mktemp(), gcMode="generational").configText().splitlines()
        self.assertIn(gc, written)

    def test_nagleRecommendation(self):
        """
        The sample's commented C{network_settings} line is, uncommented, the
        line L{PrivateProsody} writes for the benchmark's C{--prosody-nagle
        off}.
        """
        lines = read("etc", "prosody-component.cfg.lua").splitlines()
        [setting] = [line[len("-- "):] for line in lines
                     if line.startswith("-- network_settings = ")]
        written = PrivateProsody(
            self.mktemp(), nagle=False).configText().splitlines()
        self.assertIn(setting, written)


def parseYAML(text):
    """
    Parse YAML with PyYAML when installed; else L{None}.
    """
    try:
        import yaml
    except ImportError:
        return None
    return yaml.safe_load(text)


class EjabberdSampleTests(unittest.TestCase):
    """
    C{etc/ejabberd-component.yml} describes the gateway's default component.
    """

    def test_values(self):
        """
        The listener is an C{ejabberd_service} on the default port and
        host, for the default domain and secret.
        """
        text = read("etc", "ejabberd-component.yml")
        self.assertNotIn("\t", text)
        lines = withoutComments(text, "#")
        self.assertIn("    port: 5347", lines)
        self.assertIn('    ip: "127.0.0.1"', lines)
        self.assertIn("    module: ejabberd_service", lines)
        self.assertIn(f'      "{DEFAULTS.xmpp.xmpp_domain}":', lines)
        self.assertIn(f'        password: "{DEFAULTS.xmpp.xmpp_password}"',
                      lines)
        data = parseYAML(text)
        if data is not None:
            [listener] = data["listen"]
            self.assertEqual(DEFAULTS.xmpp.xmpp_port, listener["port"])
            self.assertEqual(
                {"password": DEFAULTS.xmpp.xmpp_password},
                listener["hosts"][DEFAULTS.xmpp.xmpp_domain])


class KamailioSampleTests(unittest.TestCase):
    """
    C{etc/kamailio-route.cfg} forwards MESSAGEs for the default gateway
    domain to the default SIP socket.
    """

    def test_values(self):
        """
        The defines match the defaults and the route relays MESSAGEs only;
        braces balance.
        """
        text = read("etc", "kamailio-route.cfg")
        domain = re.search(r'#!define XMPPGW_DOMAIN "([^"]+)"', text).group(1)
        target = re.search(r'#!define XMPPGW_DST "([^"]+)"', text).group(1)
        self.assertEqual(DEFAULTS.xmpp.gateway_domain, domain)
        listen = DEFAULTS.sip.listen[0]
        self.assertEqual(
            f"sip:{listen.host}:{listen.port};transport={listen.proto}", target)
        self.assertIn('is_method("MESSAGE")', text)
        self.assertIn("t_relay_to(XMPPGW_DST)", text)
        self.assertEqual(text.count("{"), text.count("}"))


class SystemdSampleTests(unittest.TestCase):
    """
    C{etc/xmppgw.service} runs C{twistd -n xmppgw} and reloads with SIGHUP.
    """

    def unit(self):
        sections, current = {}, None
        for line in read("etc", "xmppgw.service").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("["):
                current = sections.setdefault(line.strip("[]"), {})
                continue
            key, _, value = line.partition("=")
            current.setdefault(key, []).append(value)
        return sections

    def test_keys(self):
        """
        The unit has the sections and commands an operator expects.
        """
        unit = self.unit()
        self.assertEqual({"Unit", "Service", "Install"}, set(unit))
        [start] = unit["Service"]["ExecStart"]
        argv = start.split()
        self.assertTrue(argv[0].endswith("/twistd"))
        self.assertIn("-n", argv[:argv.index("xmppgw")])
        self.assertEqual(["xmppgw", "--config", "/etc/xmppgw/xmppgw.toml"],
                         argv[argv.index("xmppgw"):])
        self.assertEqual(["/bin/kill -HUP $MAINPID"],
                         unit["Service"]["ExecReload"])
        self.assertEqual(["simple"], unit["Service"]["Type"])
        self.assertEqual(["multi-user.target"], unit["Install"]["WantedBy"])

    def test_pypyEnvironment(self):
        """
        The unit sets the recommended PyPy collector settings (which CPython
        ignores), the nursery being the one the gateway's start-up report
        recommends; the optional major-collection factor stays commented.
        """
        environment = self.unit()["Service"]["Environment"]
        self.assertEqual(
            [f"PYPY_GC_NURSERY={RECOMMENDED_NURSERY}",
             "PYPY_GC_INCREMENT_STEP=1MB"], environment)

    def test_verify(self):
        """
        C{systemd-analyze verify} accepts the unit (with C{ExecStart}
        pointing at this venv's twistd, which exists here).
        """
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            raise unittest.SkipTest("systemd-analyze is not installed")
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "xmppgw.service")
        with open(path, "w") as f:
            f.write(read("etc", "xmppgw.service").replace(
                "/usr/bin/twistd", twistd))
        result = subprocess.run(
            [analyze, "verify", path], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, timeout=60)
        output = result.stdout.decode("utf-8", "replace")
        if result.returncode != 0 and ("System has not been booted" in output
                                       or "Failed to" in output
                                       and "xmppgw.service" not in output):
            raise unittest.SkipTest(f"systemd-analyze cannot run here: {output}")
        self.assertEqual(0, result.returncode, output)
        self.assertNotIn("xmppgw.service:", output)


class AlertSampleTests(unittest.TestCase):
    """
    C{etc/prometheus-alerts.yml} is a rule file using metrics that exist.
    """

    def rules(self):
        """
        A minimal parse of the rule file's shape: C{[{alert, expr, ...}]}.
        """
        text = read("etc", "prometheus-alerts.yml")
        self.assertNotIn("\t", text)
        rules, current = [], None
        for line in text.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            match = re.match(r"(\s*)(- )?([a-z_]+):\s*(.*)$", line)
            self.assertIsNotNone(match, line)
            indent, dash, key, value = match.groups()
            if key == "alert":
                self.assertTrue(dash, line)
                current = {"alert": value}
                rules.append(current)
            elif current is not None and key in ("expr", "for"):
                current[key] = value
            elif current is not None and key in ("labels", "annotations"):
                current[key] = True
        return text, rules

    def test_rules(self):
        """
        Every rule has a name, an expression, labels and annotations; the
        names are unique; the file starts with C{groups}.
        """
        text, rules = self.rules()
        self.assertIn("\ngroups:\n", text)
        self.assertGreaterEqual(len(rules), 2)
        self.assertEqual(len(rules), len({r["alert"] for r in rules}))
        for rule in rules:
            self.assertTrue(rule.get("expr"), rule)
            self.assertTrue(rule.get("labels"), rule)
            self.assertTrue(rule.get("annotations"), rule)
        data = parseYAML(text)
        if data is not None:
            self.assertEqual([r["alert"] for r in rules],
                             [r["alert"] for r in data["groups"][0]["rules"]])

    def test_metricNames(self):
        """
        Every C{xmppgw_} metric in an expression is one the gateway exposes,
        and the link-down and error-rate alerts are there.
        """
        _, rules = self.rules()
        used = set()
        for rule in rules:
            for name in re.findall(r"\bxmppgw_[a-z0-9_]+", rule["expr"]):
                used.add(re.sub(r"_(bucket|sum|count)$", "", name))
        self.assertTrue(used)
        self.assertEqual(set(), used - set(METRIC_NAMES))
        self.assertIn("xmppgw_xmpp_link_up", used)
        self.assertIn("xmppgw_messages_total", used)


def _loadGenerator():
    spec = importlib.util.spec_from_file_location(
        "gen_configuration", os.path.join(DOCS, "gen_configuration.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class DocsTests(unittest.TestCase):
    """
    The documentation follows the code.
    """

    def test_configurationReference(self):
        """
        C{docs/configuration.rst} is what C{docs/gen_configuration.py}
        writes from the schema now (run C{make docs} after changing a key).
        """
        self.assertEqual(_loadGenerator().render(),
                         read("docs", "configuration.rst"),
                         "docs/configuration.rst is out of date: run make docs")

    def test_everyKeyDocumented(self):
        """
        The reference names every key of every table.
        """
        from xmppgw.config import SCHEMA, TABLES

        text = read("docs", "configuration.rst")
        for table, _ in TABLES:
            self.assertIn(f"[{table}]", text)
        for key in SCHEMA:
            self.assertIn(f"``{key.name}``", text)

    def test_metricsDocumented(self):
        """
        C{docs/operations.rst} names every metric.
        """
        text = read("docs", "operations.rst")
        for name in METRIC_NAMES:
            self.assertIn(f"``{name}``", text)

    def test_pagesRender(self):
        """
        The pages of this part render with docutils without warnings (when
        docutils is installed: C{make docs} installs it).
        """
        try:
            import docutils.core
        except ImportError:
            raise unittest.SkipTest("docutils is not installed")
        for name in ("index", "install", "configuration", "addresses",
                     "deployment", "operations"):
            path = os.path.join(DOCS, name + ".rst")
            warnings = io.StringIO()
            docutils.core.publish_string(
                read("docs", name + ".rst"), source_path=path,
                writer_name="html",
                settings_overrides={"warning_stream": warnings,
                                    "report_level": 2, "halt_level": 5})
            self.assertEqual("", warnings.getvalue(), name)

    def test_links(self):
        """
        Links between pages point at pages that exist or are being written
        (performance and security belong to other parts).
        """
        pages = {os.path.basename(p)[:-4]
                 for p in glob.glob(os.path.join(DOCS, "*.rst"))}
        pages |= {"performance", "security"}
        for name in ("index", "install", "addresses", "deployment",
                     "operations"):
            for target in re.findall(r"<([a-z_]+)\.html>`_",
                                     read("docs", name + ".rst")):
                self.assertIn(target, pages, f"{name}.rst links {target}")


