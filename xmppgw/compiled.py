# -*- test-case-name: tests.test_compiled -*-
"""
An optional compiled build of the gateway's hot path, for CPython.

The gateway is pure Python. On CPython its CPU per message is spread over
many small steps of interpreted code (docs/performance.rst); compiling the
same source files with Cython, unchanged, takes about a fifth to a third
off the time of benchmark 1 (round 20 in docs/performance.rst). This module builds
that, checks it, and removes it:

    xmppgw compile            # build (needs Cython, setuptools, gcc, Python.h)
    xmppgw compile --status   # which modules are compiled, and whether current
    xmppgw compile --remove   # back to the plain Python modules

The compiled modules are extension files beside the source files, inside
the installed package (the checkout for an editable install), named with
this interpreter's suffix (C{.cpython-311-x86_64-linux-gnu.so}): Python
imports an extension file in preference to the C{.py} file of the same
module, and any other interpreter (PyPy, another CPython version) ignores
it. Behaviour is the same; type annotations are not enforced
(C{annotation_typing=False}), so the compiled code accepts what the plain
code accepts.

The danger of a build beside the sources is a stale one: after an
upgrade (C{pip install} replaces the C{.py} files and leaves the extension
files it does not know) or an edit, Python would go on running the old
code. So the build writes a manifest (L{MANIFEST}) with the SHA-256 of
each source file it compiled, and L{checkCurrent} refuses any extension
file whose source no longer matches: C{twistd xmppgw} does not start then,
and says which module and what to run (L{staleModules}). PyPy never builds
(its JIT runs the plain modules three times faster than CPython; a
Cython module would go through its slow C-API emulation).
"""

import hashlib
import importlib.machinery
import json
import os
import platform
import shutil
import sys
import tempfile
from dataclasses import dataclass, field

from twisted.application import service
from twisted.logger import Logger

import xmppgw

#: The modules compiled: those on the path of a message (benchmark 1's
#: profile: SIP parsing, transactions, transport, router, mapping, XML,
#: logging, metrics) and the server-mode stream. Module names relative to
#: the package.
HOT_MODULES = (
    "addressing", "chatstates", "errors", "fastxml", "hashing", "logs",
    "memo", "messages", "metrics", "policy", "randomid", "receipts",
    "router", "safexml",
    "sip.message", "sip.transaction", "sip.transport", "sip.uas", "sip.uri",
    "xmpp.component", "xmpp.dialback", "xmpp.server",
)

#: The manifest's file name, in the package directory.
MANIFEST = "compiled.json"

#: Cython's compiler directives: Python 3 semantics, functions that behave
#: as Python functions (introspection, binding as methods), and no type
#: checks from annotations (a C{bytes} annotation would otherwise reject a
#: C{bytearray} that the plain module accepts).
DIRECTIVES = {
    "language_level": 3,
    "binding": True,
    "annotation_typing": False,
}

#: What to install for a build, as the error message says it.
REQUIREMENT = "pip install 'xmppgw[compiled]'"

_log = Logger()


class CompiledError(Exception):
    """
    The compiled build cannot be made, or what is installed is not current.
    """


@dataclass
class Status:
    """
    What L{status} found.

    @ivar compiled: modules with a current extension file.
    @ivar stale: C{(module, reason)} for extension files that do not match
        their source (or the manifest does not name).
    @ivar plain: hot modules without an extension file.
    """
    compiled: list = field(default_factory=list)
    stale: list = field(default_factory=list)
    plain: list = field(default_factory=list)


def packageDirectory():
    """
    The directory of the imported C{xmppgw} package.
    """
    return os.path.dirname(os.path.abspath(xmppgw.__file__))


def extensionSuffix():
    """
    This interpreter's file suffix for extension modules.
    """
    return importlib.machinery.EXTENSION_SUFFIXES[0]


def _relative(module):
    return module.replace(".", os.sep)


def _stem(base, module):
    """
    The path of C{module} in the package in C{base}, without a suffix:
    add C{".py"} or L{extensionSuffix}.
    """
    return os.path.join(base, _relative(module))


def sourceDigest(path):
    """
    The SHA-256 of a file, in hexadecimal.
    """
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def readManifest(base):
    """
    The manifest in C{base}: a dict, empty if there is none or it cannot
    be read.
    """
    try:
        with open(os.path.join(base, MANIFEST), encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _modulesWithSource(base):
    """
    Every module of the package in C{base} (relative dotted names), from
    its C{.py} files.
    """
    found = []
    for directory, subdirs, files in os.walk(base):
        subdirs[:] = sorted(d for d in subdirs if d != "__pycache__")
        rel = os.path.relpath(directory, base)
        prefix = "" if rel == "." else rel.replace(os.sep, ".") + "."
        found.extend(prefix + name[:-3] for name in sorted(files)
                     if name.endswith(".py"))
    return found


def status(base=None, suffix=None):
    """
    Which modules of the package in C{base} are compiled for the
    interpreter of C{suffix}, and whether each extension file is current.

    @rtype: L{Status}
    """
    base = base or packageDirectory()
    suffix = suffix or extensionSuffix()
    manifest = readManifest(base)
    digests = manifest.get("modules", {})
    if manifest.get("suffix") != suffix:
        digests = {}
    result = Status()
    for module in _modulesWithSource(base):
        stem = _stem(base, module)
        if not os.path.exists(stem + suffix):
            if module in HOT_MODULES:
                result.plain.append(module)
            continue
        recorded = digests.get(module)
        if recorded is None:
            result.stale.append((module, f"not in {MANIFEST}"))
        elif recorded != sourceDigest(stem + ".py"):
            result.stale.append(
                (module, f"{_relative(module)}.py changed since the build"))
        else:
            result.compiled.append(module)
    return result


def staleMessage(found, base):
    """
    The error for stale extension files: which, why, and what to run.
    """
    lines = [f"compiled modules in {base} do not match their source:"]
    lines.extend(f"  xmppgw.{module}: {reason}" for module, reason in found.stale)
    lines.append("run 'xmppgw compile' to build them again, or "
                 "'xmppgw compile --remove' to run the plain modules")
    return "\n".join(lines)


def checkCurrent(base=None, suffix=None):
    """
    Refuse stale extension files.

    @return: the L{Status} if nothing is stale.
    @raise CompiledError: naming each stale module and what to run.
    """
    base = base or packageDirectory()
    found = status(base, suffix)
    if found.stale:
        raise CompiledError(staleMessage(found, base))
    return found


def describe(found):
    """
    One line for the log and C{xmppgw version}: how many hot modules are
    compiled.
    """
    total = len(found.compiled) + len(found.plain)
    if not found.compiled:
        return "compiled modules: none (plain Python)"
    return f"compiled modules: {len(found.compiled)} of {total} (Cython)"


def remove(base=None, suffix=None):
    """
    Remove every extension file of the package in C{base} for this
    interpreter, and the manifest.

    @return: the removed modules' names.
    """
    base = base or packageDirectory()
    suffix = suffix or extensionSuffix()
    removed = []
    for module in _modulesWithSource(base):
        path = _stem(base, module) + suffix
        if os.path.exists(path):
            os.remove(path)
            removed.append(module)
    try:
        os.remove(os.path.join(base, MANIFEST))
    except FileNotFoundError:
        pass
    return removed


def _writeManifest(base, manifest):
    path = os.path.join(base, MANIFEST)
    fd, temporary = tempfile.mkstemp(dir=base, prefix=".compiled-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(temporary, path)


def cythonBuild(base, modules, workdir, jobs):
    """
    Compile C{modules} of the package in C{base} with Cython and the C
    compiler; the extension files go beside the sources, the C files and
    objects into C{workdir}.

    @return: the Cython version used.
    """
    try:
        import Cython
        from Cython.Build import cythonize
        from setuptools import Distribution, Extension
    except ImportError as e:
        raise CompiledError(
            f"the compiled build needs Cython and setuptools ({e}): "
            f"{REQUIREMENT}")
    package = os.path.basename(base)
    extensions = [
        Extension(f"{package}.{module}", [_stem(base, module) + ".py"])
        for module in modules]
    extensions = cythonize(
        extensions, build_dir=os.path.join(workdir, "c"),
        compiler_directives=DIRECTIVES, quiet=True, force=True)
    distribution = Distribution({"ext_modules": extensions})
    command = distribution.get_command_obj("build_ext")
    command.build_lib = os.path.dirname(base)
    command.build_temp = os.path.join(workdir, "obj")
    command.parallel = jobs
    command.ensure_finalized()
    command.run()
    return Cython.__version__


def build(base=None, modules=HOT_MODULES, jobs=None, compiler=cythonBuild,
          implementation=None):
    """
    Build the compiled modules of the package in C{base} and record their
    sources' digests in the manifest.

    @param compiler: C{compiler(base, modules, workdir, jobs)} builds the
        extension files and returns a version string (L{cythonBuild}).
    @raise CompiledError: on PyPy, without Cython, or if the build fails
        (the extension files of the failed build are removed).
    @return: the L{Status} after the build.
    """
    implementation = implementation or platform.python_implementation()
    if implementation != "CPython":
        raise CompiledError(
            f"the compiled build is for CPython; on {implementation} run the "
            f"plain modules (PyPy's JIT is faster than compiled code under "
            f"its C-API emulation)")
    base = base or packageDirectory()
    missing = [m for m in modules
               if not os.path.exists(_stem(base, m) + ".py")]
    if missing:
        raise CompiledError(f"no source for {', '.join(missing)} in {base}")
    remove(base)
    digests = {m: sourceDigest(_stem(base, m) + ".py") for m in modules}
    workdir = tempfile.mkdtemp(prefix="xmppgw-compile-")
    try:
        version = compiler(base, list(modules), workdir,
                           jobs or os.cpu_count() or 1)
    except CompiledError:
        remove(base)
        raise
    except Exception as e:
        remove(base)
        raise CompiledError(f"the build failed: {e}") from e
    except BaseException:
        remove(base)
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    _writeManifest(base, {
        "suffix": extensionSuffix(),
        "python": sys.version.split()[0],
        "compiler": version,
        "modules": digests,
    })
    return status(base)


class ReportService(service.Service):
    """
    Logs, when the gateway starts, how many of its hot modules run
    compiled (L{describe}).
    """

    name = "compiled-report"

    def __init__(self, found, log=_log):
        self.found = found
        self._log = log

    def startService(self):
        service.Service.startService(self)
        self._log.info("{description}", description=describe(self.found))
