# xmppgw developer targets.
#
#   make test    Debian peers (prosody, sipp) if missing, the venv, Kamailio's
#                xmpp module for the benchmark's reference (build/), then every
#                test: unit and interop (python -m twisted.trial tests), then
#                the unit tier again on PyPy (.venv-pypy, make test-pypy),
#                then on the compiled build (make test-compiled)
#   make compiled    the optional compiled hot path for CPython, built into
#                this checkout (xmppgw compile; docs/deployment.rst)
#   make check   pyflakes over xmppgw, tests and twisted
#   make clean   remove test and build leftovers (keeps .venv)
#   make distclean   clean, and remove .venv too
#
# CI runs `bash .ci/run` (i.e. `make test`) as root on a fresh Debian 12.
# Every target is idempotent and quick when nothing needs doing: the Debian
# check asks dpkg, the venv is rebuilt only when setup.cfg or pyproject.toml
# change (stamp file in .venv).
#
# Other targets (make run, make bench) build on the same pieces: depend on
# `peers` for the Debian packages and on `venv` for .venv, and use $(VPY).

SHELL := /bin/bash
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
TRIAL := $(VPY) -m twisted.trial
TESTS ?= tests
# Kamailio's xmpp module with its one fix (see DEBS below; bench/kamailio-xmpp.sh).
KAMAILIO_XMPP := build/kamailio-xmpp/xmpp.so
STAMP := $(VENV)/.stamp-install

# Debian packages the tests need: the real peers, and the venv module of the
# system Python (python3-venv pulls python3 in on a bare system). Server mode
# interop (tests/interop/test_s2s.py): lua-sec gives Prosody TLS (already a
# dependency of Debian's prosody, listed to make it explicit) and openssl
# makes the test CA. Scale-out interop (tests/interop/test_scaling.py):
# ejabberd and kamailio (dispatcher), about 20 s to install. Shared
# presence store (tests/interop/test_store_postgresql.py): postgresql, whose
# binaries the test runs on a private cluster and a free port.
# The reference of benchmark 2 (bench.endtoend --reference, and its interop
# smoke test): Kamailio's xmpp module, the C implementation of issue 4,
# built from the Debian source of the installed kamailio with its one fix
# (bench/kamailio-xmpp.sh); libexpat1-dev is what it is built against, with
# gcc (which also builds bench.instructions' marker library in its tests).
DEBS := prosody sip-tester python3-venv lua-sec openssl ejabberd kamailio postgresql \
  libexpat1-dev gcc

.PHONY: test check clean distclean peers venv

test: peers venv pypy-venv $(KAMAILIO_XMPP)
	$(TRIAL) $(TESTS)
	$(PYPY_TRIAL) $(UNIT_TESTS)
	@$(MAKE) --no-print-directory test-compiled

check: venv
	$(VPY) -m pyflakes xmppgw tests twisted

# --- Debian packages ---------------------------------------------------------
# Installed only when missing, and only as root (apt-get update once, then
# a non-interactive install without recommends). Debian's postinst starts the
# system Prosody: it is stopped at once, the tests run private instances
# with their own configs and never touch the system one.
peers:
	@missing=""; \
	if command -v dpkg-query >/dev/null 2>&1; then \
	  for p in $(DEBS); do \
	    dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q 'install ok installed' \
	      || missing="$$missing $$p"; \
	  done; \
	else \
	  command -v prosody >/dev/null 2>&1 && command -v prosodyctl >/dev/null 2>&1 \
	    || missing="$$missing prosody"; \
	  command -v sipp >/dev/null 2>&1 || missing="$$missing sip-tester"; \
	fi; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "make: missing Debian packages:$$missing" >&2; \
	  echo "make: install them with:" >&2; \
	  echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends$$missing" >&2; \
	  exit 1; \
	fi; \
	echo "make: installing Debian packages:$$missing"; \
	apt-get update && \
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing || exit 1; \
	$(MAKE) --no-print-directory stop-system-prosody stop-system-cluster-peers stop-system-postgresql

# Likewise for the system ejabberd and Kamailio (their postinst may start
# them where services run); the scale-out tests run private instances.
.PHONY: stop-system-cluster-peers
stop-system-cluster-peers:
	@for s in ejabberd kamailio; do \
	  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet $$s 2>/dev/null; then \
	    echo "make: stopping the system $$s started by the package"; systemctl stop $$s || true; \
	  elif [ -x /etc/init.d/$$s ] && command -v service >/dev/null 2>&1 \
	      && [ -s /run/$$s/$$s.pid ]; then \
	    echo "make: stopping the system $$s started by the package"; service $$s stop >/dev/null 2>&1 || true; \
	  fi; \
	done

# Debian's postgresql postinst creates the cluster VERSION/main on port 5432
# and may start it; the store tests run their own (initdb in a temporary
# directory, a free port), so stop the system one.
.PHONY: stop-system-postgresql
stop-system-postgresql:
	@if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet postgresql 2>/dev/null; then \
	  echo "make: stopping the system PostgreSQL started by the package (systemctl)"; \
	  systemctl stop postgresql || true; \
	fi; \
	if command -v pg_lsclusters >/dev/null 2>&1; then \
	  pg_lsclusters -h 2>/dev/null | while read ver name port status rest; do \
	    case "$$status" in online*) \
	      echo "make: stopping the system PostgreSQL cluster $$ver/$$name started by the package"; \
	      pg_ctlcluster "$$ver" "$$name" stop || true;; \
	    esac; \
	  done; \
	fi

# Stop a Prosody started by Debian's postinst (systemd or sysvinit), so that
# nothing but our private instances runs. Only called right after installing.
.PHONY: stop-system-prosody
stop-system-prosody:
	@if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prosody 2>/dev/null; then \
	  echo "make: stopping the system Prosody started by the package (systemctl)"; \
	  systemctl stop prosody || true; \
	fi; \
	if [ -x /etc/init.d/prosody ] && command -v service >/dev/null 2>&1 \
	    && service prosody status >/dev/null 2>&1; then \
	  echo "make: stopping the system Prosody started by the package (service)"; \
	  service prosody stop >/dev/null 2>&1 || true; \
	fi; \
	for pidfile in /run/prosody/prosody.pid /var/run/prosody/prosody.pid; do \
	  if [ -f "$$pidfile" ]; then \
	    pid="$$(cat "$$pidfile" 2>/dev/null)"; \
	    if [ -n "$$pid" ] && grep -qs prosody "/proc/$$pid/cmdline"; then \
	      echo "make: killing the system Prosody (pid $$pid)"; \
	      kill "$$pid" 2>/dev/null || true; \
	      for i in 1 2 3 4 5 6 7 8 9 10; do \
	        kill -0 "$$pid" 2>/dev/null || break; sleep 0.5; \
	      done; \
	      kill -9 "$$pid" 2>/dev/null || true; \
	    fi; \
	  fi; \
	done

# --- the virtualenv ------------------------------------------------------------
# Editable install in "compat" mode: a .pth pointing at the tree, so that
# twistd finds twisted/plugins/xmppgw_plugin.py.
venv: $(STAMP)

$(VPY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(VPY) setup.cfg pyproject.toml
	$(VPY) -m pip install --disable-pip-version-check -q -e '.[test]' \
	  --config-settings editable_mode=compat
	@touch $@

# --- PyPy: a supported deployment (docs/performance.rst, "PyPy") ---------------
# Debian 12's pypy3 (PyPy 7.3.11, Python 3.9) in .venv-pypy, with the same
# editable install; setup.cfg's markers pick the dependencies that have PyPy
# 3.9 builds. `make test` runs the unit tier on it too (the interop tier
# runs on CPython; tests/interop/test_pypy.py runs the gateway itself on
# PyPy's twistd against the real peers).
PYPY ?= pypy3
PYPY_VENV ?= .venv-pypy
PYPY_VPY := $(PYPY_VENV)/bin/python
PYPY_STAMP := $(PYPY_VENV)/.stamp-install
PYPY_TRIAL := $(PYPY_VPY) -m twisted.trial --temp-directory=_trial_temp-pypy
UNIT_TESTS := $(patsubst %.py,%,$(subst /,.,$(wildcard tests/test_*.py)))

.PHONY: pypy-venv test-pypy
pypy-venv: $(PYPY_STAMP)

$(PYPY_VPY):
	@$(MAKE) --no-print-directory peers DEBS="pypy3 pypy3-venv"
	$(PYPY) -m venv $(PYPY_VENV)

$(PYPY_STAMP): $(PYPY_VPY) setup.cfg pyproject.toml
	$(PYPY_VPY) -m pip install --disable-pip-version-check -q -e '.[test]' \
	  --config-settings editable_mode=compat
	@touch $@

test-pypy: pypy-venv
	$(PYPY_TRIAL) $(UNIT_TESTS)

# --- the optional compiled hot path (xmppgw/compiled.py) -----------------------
# `make compiled` builds it into this checkout: Cython and setuptools (the
# `compiled` extra) into .venv, gcc and Python's headers from Debian if
# missing, then `xmppgw compile` (about 2 minutes on 2 cores).
# `make compiled-tree` builds it in a copy of the tree (build/compiled, so
# the checkout stays plain Python) and checks every hot module is compiled;
# `make test-compiled` then runs the unit tier there and the gateway's
# interop tests against Prosody and sipp (the gateway's twistd gets the copy
# through PYTHONPATH and logs that it runs compiled), and `make bench` its
# benchmarks (COMPILED_PY runs Python with the copy first on the path).
COMPILED_DIR := build/compiled
COMPILED_PY := cd $(COMPILED_DIR) && PYTHONPATH=$(abspath $(COMPILED_DIR)) $(abspath $(VPY))

.PHONY: compiled compiled-deps compiled-tree test-compiled
compiled-deps: venv
	@inc=$$($(VPY) -c 'import sysconfig; print(sysconfig.get_paths()["include"])'); \
	if ! command -v gcc >/dev/null 2>&1 || [ ! -f "$$inc/Python.h" ]; then \
	  $(MAKE) --no-print-directory peers DEBS="gcc python3-dev"; \
	fi
	@$(VPY) -c 'import Cython, setuptools' 2>/dev/null || \
	  $(VPY) -m pip install --disable-pip-version-check -q -e '.[test,compiled]' \
	    --config-settings editable_mode=compat

compiled: compiled-deps
	$(VENV)/bin/xmppgw compile

compiled-tree: compiled-deps
	rm -rf $(COMPILED_DIR) && mkdir -p $(COMPILED_DIR)
	tar -cf - --exclude=./.git --exclude=./build --exclude='./.venv*' \
	  --exclude=./twisted --exclude='*.so' --exclude=./xmppgw/compiled.json \
	  --exclude='_trial_temp*' --exclude=__pycache__ --exclude=./run . | tar -xf - -C $(COMPILED_DIR)
	cd $(COMPILED_DIR) && $(abspath $(VPY)) -m xmppgw.cli compile
	cd $(COMPILED_DIR) && $(abspath $(VPY)) -m xmppgw.cli compile --check

test-compiled: peers compiled-tree
	$(COMPILED_PY) -m twisted.trial --temp-directory=_trial_temp-compiled \
	  $(UNIT_TESTS) tests.interop.test_gateway

# --- cleaning ----------------------------------------------------------------

clean:
	rm -rf _trial_temp _trial_temp-* _trial_temp.lock .hypothesis build dist
	rm -f twisted/plugins/dropin.cache
	find xmppgw tests twisted -name __pycache__ -type d -prune -exec rm -rf {} +
	find xmppgw -name '*.so' -delete
	rm -f xmppgw/compiled.json

distclean: clean
	rm -rf $(VENV) $(PYPY_VENV) xmppgw.egg-info

# --- make run: the self-contained demo ------------------------------------------
# A private Prosody and the gateway on 127.0.0.1 (xmppgw demo, files in
# run/demo/), until Ctrl-C. Needs only Prosody of the Debian peers. Options go
# through DEMO_ARGS, e.g.  make run DEMO_ARGS="--sip-port 25060".
.PHONY: run
run:
	@$(MAKE) --no-print-directory peers DEBS="prosody python3-venv"
	@$(MAKE) --no-print-directory venv
	$(VENV)/bin/xmppgw demo $(DEMO_ARGS)

# --- make docs: the reST documentation as HTML ----------------------------------
# Regenerates docs/configuration.rst from the config schema (a test checks it
# is up to date), then renders every docs/*.rst to docs/_build/*.html with
# docutils (installed into the venv if missing). reST errors are reported;
# tests/test_samples.py checks the pages have none.
.PHONY: docs
docs: venv
	$(VPY) docs/gen_configuration.py
	@$(VPY) -c "import docutils" 2>/dev/null \
	  || $(VPY) -m pip install --disable-pip-version-check -q docutils
	@mkdir -p docs/_build
	@for f in docs/*.rst; do \
	  out="docs/_build/$$(basename "$${f%.rst}").html"; \
	  $(VPY) -m docutils --halt=severe --report=error "$$f" "$$out" || exit 1; \
	  echo "docs: $$out"; \
	done

# --- The C module of issue 4 ---------------------------------------------------
# Kamailio's xmpp module from the Debian source of the installed kamailio, with
# the one fix that makes it run (about 5 s and 13 MB of source, fetched with
# apt-get into build/; the system's apt setup is not changed).
$(KAMAILIO_XMPP): bench/kamailio-xmpp.sh | peers
	sh bench/kamailio-xmpp.sh $(dir $(KAMAILIO_XMPP))

# --- make bench: the benchmarks (not part of make test) --------------------------
# In-process cost per message, end to end through a private Prosody on
# loopback, scale and memory; results in bench/results/*.json and on stdout.
# See docs/performance.rst. Arguments go through BENCH_ARGS (for the end to
# end run), e.g.  make bench BENCH_ARGS="--rates 1000,2000 --duration 2", and
# SOAK_ARGS (for the soak; empty: 600 s at 500/s), e.g. SOAK_ARGS="--duration 120",
# and CRASH_ARGS (for the SIGKILL windows of each [xmpp] confirm_delivery mode,
# bench/crash.py; empty: kernel,none,tcp, 5 kills each at 1,000/s), e.g.
# CRASH_ARGS="--kills 20". Then benchmarks 1-3 and the soak again on PyPy
# (.venv-pypy) and the UDP sweep on both interpreters, for the comparison.
SOAK_ARGS ?=
CRASH_ARGS ?=
# PyPy's collector as deployed: the Environment=PYPY_GC_... lines of
# etc/xmppgw.service (docs/deployment.rst), read from there so that the
# benchmarks measure what the unit runs.
PYPY_GC_DEPLOYED := $(shell sed -n \
  's/^Environment=\(PYPY_GC_[A-Z_]*=[^[:space:]]*\)$$/\1/p' etc/xmppgw.service)
.PHONY: bench
bench: peers venv pypy-venv $(KAMAILIO_XMPP)
	@test -n "$(PYPY_GC_DEPLOYED)" || { echo "make bench: no" \
	  "Environment=PYPY_GC_... line in etc/xmppgw.service" >&2; exit 1; }
	@$(MAKE) --no-print-directory peers DEBS="valgrind gcc"
	@$(VPY) -c "import pyinstrument" 2>/dev/null \
	  || $(VPY) -m pip install --disable-pip-version-check -q -e '.[test,bench]' \
	       --config-settings editable_mode=compat
	@mkdir -p bench/results
	$(VPY) -m bench.inprocess --json bench/results/inprocess.json
	$(VPY) -m bench.inprocess --metrics both --no-memory \
	  --json bench/results/inprocess-metrics.json
	$(VPY) -m bench.scale --json bench/results/scale.json
	# What the address mapper's memos hold in memory with 16,384 and
	# 50,000 active addresses (docs/deployment.rst, "Memory").
	$(VPY) -m bench.memos --json bench/results/memos.json
	$(VPY) -m bench.gcpause
	$(VPY) -m bench.instructions --json bench/results/instructions.json
	# The same with 10,000 distinct addresses: the cold path (the bounded
	# parse and mapping memos miss on every message).
	$(VPY) -m bench.instructions --distinct 10000 \
	  --json bench/results/instructions-cold.json
	$(VPY) -m bench.s2s --json bench/results/s2s.json
	$(VPY) -m bench.endtoend --json bench/results/endtoend.json $(BENCH_ARGS)
	# Benchmark 2 counted in instructions: the gateway under callgrind at
	# 50 MESSAGEs/s, each message alone, the reactor, the sockets and the
	# log file included (about 8 minutes; docs/performance.rst, round 31).
	$(VPY) -m bench.endtoend --callgrind --directions udp,xmpp \
	  --rates 50,50,50,50 --duration 40 \
	  --json bench/results/endtoend-instructions.json
	$(VPY) -m bench.soak --json bench/results/soak.json $(SOAK_ARGS)
	$(VPY) -m bench.crash --json bench/results/crash.json $(CRASH_ARGS)
	# Both interpreters (docs/performance.rst, "PyPy"); PyPy as deployed
	# and, for comparison with the rounds before 23, with the nursery PyPy
	# chooses by itself (150 MB on the Intel Xeon VM).
	$(PYPY_GC_DEPLOYED) $(PYPY_VPY) -m bench.inprocess \
	  --json bench/results/inprocess-pypy.json
	$(PYPY_VPY) -m bench.inprocess \
	  --json bench/results/inprocess-pypy-own-nursery.json
	$(VPY) -m bench.inprocess --no-memory --confirm none \
	  --json bench/results/inprocess-none.json
	$(PYPY_GC_DEPLOYED) $(PYPY_VPY) -m bench.inprocess --confirm none \
	  --json bench/results/inprocess-pypy-none.json
	# Memory on PyPy as deployed (etc/xmppgw.service's collector settings):
	# with the nursery PyPy may choose by itself from a large CPU cache it
	# grew to 1.4 GB (docs/performance.rst, round 16); and the soak with
	# the gateway on PyPy.
	$(PYPY_GC_DEPLOYED) \
	  $(PYPY_VPY) -m bench.scale --json bench/results/scale-pypy.json
	$(PYPY_GC_DEPLOYED) \
	  $(PYPY_VPY) -m bench.memos --json bench/results/memos-pypy.json
	# Server mode with 1, 100 and 1,000 peer domains on PyPy as deployed.
	$(PYPY_GC_DEPLOYED) \
	  $(PYPY_VPY) -m bench.s2s --json bench/results/s2s-pypy.json
	$(PYPY_GC_DEPLOYED) \
	  $(VPY) -m bench.soak --twistd $(PYPY_VENV)/bin/twistd \
	  --json bench/results/soak-pypy.json $(SOAK_ARGS)
	# Benchmark 1 in instructions on PyPy (JIT warmed up, three processes per
	# case, about 9 minutes each on the EPYC VM), with 1 and 10,000 addresses.
	$(PYPY_VPY) -m bench.instructions --json bench/results/instructions-pypy.json
	$(PYPY_VPY) -m bench.instructions --distinct 10000 \
	  --json bench/results/instructions-pypy-cold.json
	$(VPY) -m bench.endtoend --directions udp \
	  --rates 1000,1000,1000,2000,4000,6000,8000 --duration 5 --keep-going \
	  --json bench/results/endtoend-udp-cpython.json
	$(VPY) -m bench.endtoend --twistd $(PYPY_VENV)/bin/twistd --directions udp \
	  --rates 1000,1000,1000,2000,4000,6000,8000,10000,12000 --duration 5 \
	  --keep-going --json bench/results/endtoend-udp-pypy.json
	$(VPY) -m bench.endtoend --directions xmpp --rates 1000,1000,2000,4000 \
	  --duration 5 --keep-going --json bench/results/endtoend-xmpp-cpython.json
	$(VPY) -m bench.endtoend --directions tcp \
	  --rates 1000,1000,2000,4000,6000,8000 --duration 5 --keep-going \
	  --json bench/results/endtoend-tcp-cpython.json
	# Prosody alone, the floor under benchmark 2 (--directions floor), with
	# Nagle's algorithm on (Prosody's default) and off (docs/deployment.rst).
	$(VPY) -m bench.endtoend --directions floor \
	  --rates 1000,2000,4000,8000,12000 --duration 5 --keep-going \
	  --json bench/results/endtoend-floor.json
	$(VPY) -m bench.endtoend --directions floor --prosody-nagle off \
	  --rates 1000,2000,4000,8000,12000 --duration 5 --keep-going \
	  --json bench/results/endtoend-floor-nonagle.json
	$(VPY) -m bench.endtoend --directions xmpp --prosody-nagle off \
	  --rates 1000,1000,2000,4000,6000 --duration 5 --keep-going \
	  --json bench/results/endtoend-xmpp-cpython-nonagle.json
	# The tuned deployment (docs/deployment.rst): Prosody with Lua 5.4's
	# generational collector; on PyPy also a 4 MB nursery, 1 MB major
	# collection steps, Prosody's Nagle off and a JIT warm-up.
	$(VPY) -m bench.endtoend --directions udp --prosody-gc generational \
	  --rates 1000,1000,1000,2000,4000,6000,8000 --duration 5 --keep-going \
	  --json bench/results/endtoend-udp-cpython-prosodygen.json
	$(PYPY_GC_DEPLOYED) $(VPY) -m bench.endtoend \
	  --twistd $(PYPY_VENV)/bin/twistd --directions udp \
	  --prosody-gc generational --prosody-nagle off --warmup 20 \
	  --rates 2000,4000,6000,8000,10000,10000,10000,12000 --duration 5 \
	  --keep-going --json bench/results/endtoend-udp-pypy-tuned.json
	# The same with PyPy's major collections started later (the optional
	# PYPY_GC_MAJOR_COLLECT=3 of docs/deployment.rst: a shorter tail for
	# more memory).
	PYPY_GC_MAJOR_COLLECT=3 $(PYPY_GC_DEPLOYED) \
	  $(VPY) -m bench.endtoend \
	  --twistd $(PYPY_VENV)/bin/twistd --directions udp \
	  --prosody-gc generational --prosody-nagle off --warmup 20 \
	  --rates 2000,4000,6000,8000,10000,10000,10000,12000 --duration 5 \
	  --keep-going --json bench/results/endtoend-udp-pypy-tuned-major3.json
	# The latency target at its own rate, in steady state: five steps at
	# 4,000/s after 20 s of warm-up at that rate (a sweep's 4,000/s step
	# comes right after 2,000/s, where PyPy's JIT has not yet compiled the
	# code a faster rate runs), tuned PyPy and CPython.
	$(PYPY_GC_DEPLOYED) $(VPY) -m bench.endtoend \
	  --twistd $(PYPY_VENV)/bin/twistd --directions udp \
	  --prosody-gc generational --prosody-nagle off --warmup 20 \
	  --rates 4000,4000,4000,4000,4000 --duration 5 --keep-going \
	  --json bench/results/endtoend-udp-pypy-tuned-4000.json
	$(VPY) -m bench.endtoend --directions udp \
	  --prosody-gc generational --prosody-nagle off --warmup 20 \
	  --rates 4000,4000,4000,4000,4000 --duration 5 --keep-going \
	  --json bench/results/endtoend-udp-cpython-tuned-4000.json
	# The C module of issue 4 (Kamailio's xmpp module with its one fix,
	# bench/kamailio-xmpp.sh) beside the gateway, step by step through the
	# same Prosody: the gateway's CPU per message against the C module's
	# measured on this machine in the same minutes (docs/performance.rst,
	# round 26). CPython, and PyPy as deployed with the tuned Prosody.
	$(VPY) -m bench.endtoend --reference $(KAMAILIO_XMPP) \
	  --directions udp,xmpp --rates 1000,2000,4000,8000 --duration 5 \
	  --keep-going --json bench/results/endtoend-reference-cpython.json
	$(PYPY_GC_DEPLOYED) $(VPY) -m bench.endtoend \
	  --twistd $(PYPY_VENV)/bin/twistd --reference $(KAMAILIO_XMPP) \
	  --prosody-gc generational --prosody-nagle off --warmup 20 \
	  --directions udp,xmpp --rates 2000,4000,6000,8000,10000 --duration 5 \
	  --keep-going --json bench/results/endtoend-reference-pypy.json
	# The same with the gateway answering once the stanza is written, as
	# the C module does ([xmpp] confirm_delivery = "none").
	$(PYPY_GC_DEPLOYED) $(VPY) -m bench.endtoend \
	  --twistd $(PYPY_VENV)/bin/twistd --reference $(KAMAILIO_XMPP) \
	  --confirm-delivery none \
	  --prosody-gc generational --prosody-nagle off --warmup 20 \
	  --directions udp,xmpp --rates 2000,4000,6000,8000,10000 --duration 5 \
	  --keep-going --json bench/results/endtoend-reference-pypy-none.json
	# The optional compiled build (xmppgw compile; docs/deployment.rst) on
	# CPython: benchmark 1, its instructions and benchmark 2.
	@$(MAKE) --no-print-directory compiled-tree
	$(COMPILED_PY) -m bench.inprocess --no-memory \
	  --json $(CURDIR)/bench/results/inprocess-compiled.json
	$(COMPILED_PY) -m bench.instructions \
	  --json $(CURDIR)/bench/results/instructions-compiled.json
	$(COMPILED_PY) -m bench.endtoend --directions udp,xmpp \
	  --rates 1000,1000,2000,4000,6000,8000 --duration 5 --keep-going \
	  --json $(CURDIR)/bench/results/endtoend-compiled.json
	# Issue 4's targets against everything in bench/results (met, not met,
	# not measured, per file; docs/performance.rst).
	$(VPY) -m bench.targets bench/results \
	  --output bench/results/targets.txt
