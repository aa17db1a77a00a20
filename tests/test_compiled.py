"""
Tests for L{xmppgw.compiled}: the optional compiled build's status, its
staleness check, removal, the build's bookkeeping (with a fake compiler:
a real build takes minutes; C{make test} builds one and runs the unit
tests on it), and the C{xmppgw compile} command.
"""

import io
import json
import os
import sys

from twisted.logger import Logger
from twisted.python import usage
from twisted.trial import unittest

from xmppgw import cli, compiled, tap

SUFFIX = compiled.extensionSuffix()


class FakePackage:
    """
    A package directory C{xmppgw} in a temporary directory with a few
    source files: two hot modules and one that is not hot.
    """

    SOURCES = {
        "router.py": b"ROUTER = 1\n",
        os.path.join("sip", "uri.py"): b"URI = 1\n",
        "cli.py": b"CLI = 1\n",
        "__init__.py": b"",
        os.path.join("sip", "__init__.py"): b"",
    }

    def __init__(self, testCase):
        self.base = os.path.join(testCase.mktemp(), "xmppgw")
        for name, content in self.SOURCES.items():
            path = os.path.join(self.base, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(content)

    def path(self, module, suffix=".py"):
        return os.path.join(self.base, module.replace(".", os.sep)) + suffix

    def compile(self, base, modules, workdir, jobs):
        """
        A fake compiler for L{compiled.build}: writes an extension file
        for each module.
        """
        self.calls = getattr(self, "calls", []) + [(base, modules, jobs)]
        self.workdir = workdir
        for module in modules:
            self.writeExtension(module)
        return "fake 1.0"

    def writeExtension(self, module):
        with open(self.path(module, SUFFIX), "wb") as f:
            f.write(b"\x7fELF fake")

    def writeManifest(self, modules, suffix=SUFFIX):
        manifest = {"suffix": suffix, "modules": {
            m: compiled.sourceDigest(self.path(m)) for m in modules}}
        with open(os.path.join(self.base, compiled.MANIFEST), "w") as f:
            json.dump(manifest, f)

    def edit(self, module):
        with open(self.path(module), "ab") as f:
            f.write(b"EDITED = True\n")


class StatusTests(unittest.TestCase):
    """
    L{compiled.status} and L{compiled.checkCurrent}.
    """

    def setUp(self):
        self.package = FakePackage(self)

    def test_plain(self):
        """
        Without extension files every hot module with a source is plain;
        modules that are not hot are not listed.
        """
        found = compiled.status(self.package.base)
        self.assertEqual(found.compiled, [])
        self.assertEqual(found.stale, [])
        self.assertEqual(found.plain, ["router", "sip.uri"])
        self.assertEqual(compiled.describe(found),
                         "compiled modules: none (plain Python)")

    def test_current(self):
        """
        An extension file whose source matches the manifest's digest is
        compiled and current.
        """
        self.package.writeExtension("router")
        self.package.writeManifest(["router"])
        found = compiled.checkCurrent(self.package.base)
        self.assertEqual(found.compiled, ["router"])
        self.assertEqual(found.plain, ["sip.uri"])
        self.assertEqual(compiled.describe(found),
                         "compiled modules: 1 of 2 (Cython)")

    def test_sourceChanged(self):
        """
        An extension file whose source changed after the build is stale,
        and L{compiled.checkCurrent} refuses it, naming the module and the
        commands.
        """
        self.package.writeExtension("sip.uri")
        self.package.writeManifest(["sip.uri"])
        self.package.edit("sip.uri")
        found = compiled.status(self.package.base)
        self.assertEqual(found.compiled, [])
        self.assertEqual(
            found.stale,
            [("sip.uri", os.path.join("sip", "uri") + ".py changed since "
              "the build")])
        e = self.assertRaises(compiled.CompiledError,
                              compiled.checkCurrent, self.package.base)
        self.assertIn("xmppgw.sip.uri: ", str(e))
        self.assertIn("'xmppgw compile'", str(e))
        self.assertIn("'xmppgw compile --remove'", str(e))

    def test_notInManifest(self):
        """
        An extension file the manifest does not name (left by an upgrade
        that replaced the manifest, or copied by hand) is stale, for a
        module that is not hot too.
        """
        self.package.writeExtension("router")
        self.package.writeExtension("cli")
        self.package.writeManifest(["router"])
        found = compiled.status(self.package.base)
        self.assertEqual(found.compiled, ["router"])
        self.assertEqual(found.stale, [("cli", "not in compiled.json")])

    def test_noManifest(self):
        """
        Extension files without a manifest, or with an unreadable one, are
        stale.
        """
        self.package.writeExtension("router")
        self.assertEqual(compiled.status(self.package.base).stale,
                         [("router", "not in compiled.json")])
        with open(os.path.join(self.package.base, compiled.MANIFEST), "w") as f:
            f.write("{not json")
        self.assertEqual(compiled.status(self.package.base).stale,
                         [("router", "not in compiled.json")])

    def test_otherInterpreter(self):
        """
        A manifest written for another interpreter's suffix does not vouch
        for this one's extension files.
        """
        self.package.writeExtension("router")
        self.package.writeManifest(["router"], suffix=".cpython-399-x.so")
        self.assertEqual(compiled.status(self.package.base).stale,
                         [("router", "not in compiled.json")])

    def test_otherSuffixIgnored(self):
        """
        Extension files of another interpreter are not this one's: its
        modules are plain.
        """
        with open(self.package.path("router", ".pypy39-pp73.so"), "wb"):
            pass
        found = compiled.status(self.package.base)
        self.assertEqual(found.stale, [])
        self.assertEqual(found.plain, ["router", "sip.uri"])

    def test_installedPackageCurrent(self):
        """
        The package these tests import has no stale compiled module (in
        C{make test}'s compiled tier every hot module is compiled).
        """
        found = compiled.checkCurrent()
        self.assertEqual(
            sorted(found.compiled + found.plain),
            sorted(m for m in compiled.HOT_MODULES))

    def test_hotModulesExist(self):
        """
        Every name in L{compiled.HOT_MODULES} is a module of the package.
        """
        base = compiled.packageDirectory()
        for module in compiled.HOT_MODULES:
            self.assertTrue(os.path.exists(
                os.path.join(base, module.replace(".", os.sep)) + ".py"),
                module)


class RemoveTests(unittest.TestCase):
    """
    L{compiled.remove}.
    """

    def test_remove(self):
        """
        Every extension file of this interpreter goes, and the manifest;
        sources and other interpreters' files stay.
        """
        package = FakePackage(self)
        package.writeExtension("router")
        package.writeExtension("cli")
        package.writeManifest(["router", "cli"])
        other = package.path("router", ".pypy39-pp73.so")
        open(other, "wb").close()
        self.assertEqual(compiled.remove(package.base), ["cli", "router"])
        self.assertFalse(os.path.exists(package.path("router", SUFFIX)))
        self.assertFalse(os.path.exists(
            os.path.join(package.base, compiled.MANIFEST)))
        self.assertTrue(os.path.exists(package.path("router")))
        self.assertTrue(os.path.exists(other))
        self.assertEqual(compiled.remove(package.base), [])


class BuildTests(unittest.TestCase):
    """
    L{compiled.build}'s bookkeeping, with a fake compiler.
    """

    def setUp(self):
        self.package = FakePackage(self)

    def test_build(self):
        """
        The compiler gets the modules, a work directory and the job count;
        the manifest records each source's digest, and every built module
        is then current. The work directory is gone afterwards.
        """
        found = compiled.build(self.package.base, ["router", "sip.uri"],
                               jobs=3, compiler=self.package.compile,
                               implementation="CPython")
        self.assertEqual(self.package.calls,
                         [(self.package.base, ["router", "sip.uri"], 3)])
        self.assertFalse(os.path.exists(self.package.workdir))
        self.assertEqual(found.compiled, ["router", "sip.uri"])
        manifest = compiled.readManifest(self.package.base)
        self.assertEqual(manifest["suffix"], SUFFIX)
        self.assertEqual(manifest["compiler"], "fake 1.0")
        self.assertEqual(manifest["modules"]["router"],
                         compiled.sourceDigest(self.package.path("router")))

    def test_rebuildAfterEdit(self):
        """
        Building again after an edit makes the module current again.
        """
        compiled.build(self.package.base, ["router"],
                       compiler=self.package.compile,
                       implementation="CPython")
        self.package.edit("router")
        self.assertEqual(len(compiled.status(self.package.base).stale), 1)
        found = compiled.build(self.package.base, ["router"],
                               compiler=self.package.compile,
                               implementation="CPython")
        self.assertEqual(found.stale, [])
        self.assertEqual(found.compiled, ["router"])

    def test_removesOldBuild(self):
        """
        A build first removes extension files of an earlier one, so that
        modules no longer built do not stay behind unchecked.
        """
        self.package.writeExtension("cli")
        compiled.build(self.package.base, ["router"],
                       compiler=self.package.compile,
                       implementation="CPython")
        self.assertFalse(os.path.exists(self.package.path("cli", SUFFIX)))

    def test_pypy(self):
        """
        PyPy does not build.
        """
        e = self.assertRaises(
            compiled.CompiledError, compiled.build, self.package.base,
            ["router"], compiler=self.package.compile,
            implementation="PyPy")
        self.assertIn("for CPython", str(e))
        self.assertFalse(hasattr(self.package, "calls"))

    def test_missingSource(self):
        """
        A module without a source file is refused before anything is
        built.
        """
        e = self.assertRaises(
            compiled.CompiledError, compiled.build, self.package.base,
            ["router", "nosuch"], compiler=self.package.compile,
            implementation="CPython")
        self.assertIn("nosuch", str(e))
        self.assertFalse(hasattr(self.package, "calls"))

    def test_failedBuild(self):
        """
        A compiler error becomes a L{compiled.CompiledError}; the extension
        files written before it are removed and no manifest is written.
        """
        def failing(base, modules, workdir, jobs):
            self.package.compile(base, modules[:1], workdir, jobs)
            raise RuntimeError("gcc: error")
        e = self.assertRaises(
            compiled.CompiledError, compiled.build, self.package.base,
            ["router", "sip.uri"], compiler=failing,
            implementation="CPython")
        self.assertIn("gcc: error", str(e))
        self.assertFalse(os.path.exists(self.package.path("router", SUFFIX)))
        self.assertEqual(compiled.readManifest(self.package.base), {})

    def test_noCython(self):
        """
        Without Cython the build says what to install.
        """
        self.patch(sys, "modules", dict(sys.modules, Cython=None))
        e = self.assertRaises(
            compiled.CompiledError, compiled.cythonBuild, self.package.base,
            ["router"], self.mktemp(), 1)
        self.assertIn(compiled.REQUIREMENT, str(e))


class ReportServiceTests(unittest.TestCase):
    """
    L{compiled.ReportService}.
    """

    def test_logsAtStart(self):
        """
        Started, it logs L{compiled.describe}'s line.
        """
        events = []
        found = compiled.Status(compiled=["router"], plain=["sip.uri"])
        report = compiled.ReportService(found, log=Logger(observer=events.append))
        self.assertEqual(events, [])
        report.startService()
        self.assertEqual(
            [e["description"] for e in events],
            ["compiled modules: 1 of 2 (Cython)"])


class TapTests(unittest.TestCase):
    """
    C{twistd xmppgw} refuses a stale compiled build.
    """

    def test_staleRefused(self):
        """
        L{tap.Options} raises a usage error naming the stale module.
        """
        package = FakePackage(self)
        package.writeExtension("router")
        self.patch(compiled, "packageDirectory", lambda: package.base)
        config = os.path.join(os.path.dirname(__file__), os.pardir, "etc",
                              "xmppgw.toml")
        options = tap.Options()
        e = self.assertRaises(usage.UsageError, options.parseOptions,
                              ["--config", config])
        self.assertIn("xmppgw.router: not in compiled.json", str(e))

    def test_currentAccepted(self):
        """
        With a current build the options carry its status, and the
        service built from them reports it when started.
        """
        package = FakePackage(self)
        package.writeExtension("router")
        package.writeManifest(["router"])
        self.patch(compiled, "packageDirectory", lambda: package.base)
        config = os.path.join(os.path.dirname(__file__), os.pardir, "etc",
                              "xmppgw.toml")
        options = tap.Options()
        options.parseOptions(["--config", config])
        self.assertEqual(options["compiled"].compiled, ["router"])


class CommandTests(unittest.TestCase):
    """
    C{xmppgw compile}.
    """

    def setUp(self):
        self.package = FakePackage(self)
        self.out = io.StringIO()
        self.err = io.StringIO()

    def runCommand(self, *argv, builder=None):
        args = cli.makeParser().parse_args(["compile", *argv])
        kwargs = {"base": self.package.base}
        if builder is not None:
            kwargs["builder"] = builder
        return cli.compileCommand(args, self.out, self.err, **kwargs)

    def fakeBuild(self, base, jobs=None):
        self.jobs = jobs
        return compiled.build(base, ["router", "sip.uri"], jobs=jobs,
                              compiler=self.package.compile,
                              implementation="CPython")

    def test_build(self):
        """
        Without options it builds, and prints the status line.
        """
        self.assertEqual(self.runCommand("-j", "2", builder=self.fakeBuild),
                         cli.EXIT_OK)
        self.assertEqual(self.jobs, 2)
        self.assertEqual(self.out.getvalue(),
                         "compiled modules: 2 of 2 (Cython)\n")

    def test_buildFails(self):
        """
        A failed build exits 1 with the error.
        """
        def failing(base, jobs=None):
            raise compiled.CompiledError("no compiler")
        self.assertEqual(self.runCommand(builder=failing), cli.EXIT_FAILURE)
        self.assertEqual(self.err.getvalue(),
                         "xmppgw compile: error: no compiler\n")

    def test_status(self):
        """
        C{--status} lists every hot module's state and exits 0, stale or
        not.
        """
        self.package.writeExtension("router")
        self.package.writeManifest(["router"])
        self.package.writeExtension("sip.uri")
        self.assertEqual(self.runCommand("--status"), cli.EXIT_OK)
        self.assertEqual(self.out.getvalue(), (
            "xmppgw.router: compiled\n"
            "xmppgw.sip.uri: STALE (not in compiled.json)\n"
            "compiled modules: 1 of 1 (Cython)\n"))

    def test_check(self):
        """
        C{--check} exits 1 unless every hot module is compiled and current.
        """
        self.assertEqual(self.runCommand("--check"), cli.EXIT_FAILURE)
        self.assertIn("not every hot module", self.err.getvalue())
        self.fakeBuild(self.package.base)
        self.err = io.StringIO()
        self.assertEqual(self.runCommand("--check"), cli.EXIT_OK)
        self.assertEqual(self.err.getvalue(), "")
        self.package.edit("router")
        self.assertEqual(self.runCommand("--check"), cli.EXIT_FAILURE)

    def test_remove(self):
        """
        C{--remove} removes the build.
        """
        self.fakeBuild(self.package.base)
        self.assertEqual(self.runCommand("--remove"), cli.EXIT_OK)
        self.assertEqual(self.out.getvalue().splitlines()[-1],
                         "removed 2 compiled modules")
        self.assertEqual(compiled.status(self.package.base).compiled, [])

    def test_jobsChecked(self):
        """
        C{--jobs} takes a positive number.
        """
        parser = cli.makeParser()
        self.patch(sys, "stderr", io.StringIO())
        self.assertRaises(SystemExit, parser.parse_args,
                          ["compile", "--jobs", "0"])

    def test_version(self):
        """
        C{xmppgw version} names the compiled state.
        """
        self.assertEqual(cli.main(["version"], out=self.out, err=self.err),
                         cli.EXIT_OK)
        self.assertIn("compiled modules: ", self.out.getvalue())
