# The two commands the README promises, and what they are made of.
#   make demo   set up a fresh Debian machine, then boot a guest on real Xen in the lab
#   make test   the whole test suite, lab tests included
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# Host packages: QEMU runs the lab; the Xen user tools and libraries are what dom0 (which shares
# this machine's root filesystem) runs and what the cffi bindings compile against; debootstrap and
# grub-common build the lab's Debian guest disk (xentool lab debian-image).
DEBIAN_PACKAGES := qemu-system-x86 qemu-utils qemu-system-xen xen-utils-4.17 xenstore-utils \
	libxen-dev busybox-static cpio kmod genisoimage isolinux syslinux-common syslinux-utils gcc acpica-tools e2fsprogs grub-xen-host \
	openssl openssh-client debootstrap grub-common

# QEMU, the device model of HVM guests, runs restricted as this user (libxl's dm_restrict name, so
# xl finds it too); xentool refuses to run QEMU as root unless a config says device_model.privileged.
DM_USER := xen-qemuuser-shared

# `make install`: xentool for a real Debian dom0.  An environment of its own in INSTALL_DIR (the
# Xen bindings and the native launcher built in it), its two programs linked into BIN_DIR, and
# the daemon's unit in SYSTEMD_DIR; enabled and started when systemd runs this host (and no
# DESTDIR-like relocation was asked for: set SYSTEMD_START=no to leave it off).
INSTALL_DIR ?= /opt/xentool
BIN_DIR ?= /usr/local/bin
SYSTEMD_DIR ?= /etc/systemd/system
SYSTEMD_START ?= yes

.PHONY: setup packages users venv bytecode test test-fast demo lab-down clean install

setup: packages users venv

users:
	@getent passwd $(DM_USER) >/dev/null || adduser --system --group --no-create-home --quiet $(DM_USER)

packages:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

venv: $(BIN)/xentool

$(BIN)/xentool: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/python -m hypercalls.xen.build || echo "note: Xen bindings not compiled (see above); the simulator works without them"
	$(BIN)/python -m xentool.cli.native_launcher || echo "note: the Python launcher stays (see above); it works, it starts slower"
	@touch $@

# The lab's dom0 runs this checkout's Python under QEMU TCG, where compiling a module costs ~50x
# what it does here: give it the bytecode (written even where PYTHONDONTWRITEBYTECODE is set).
bytecode: venv
	$(BIN)/python -m compileall -q xentool hypercalls pvdrivers

test: setup bytecode
	$(BIN)/pytest -q --durations=40

test-fast: venv
	$(BIN)/pytest -q -m "not lab"

demo: setup bytecode
	$(BIN)/xentool lab up
	$(BIN)/xentool lab exec -- cat /proc/xen/capabilities
	$(BIN)/xentool --lab create configs/examples/pv-hello.yaml --console

install: packages users
	$(PYTHON) -m venv $(INSTALL_DIR)
	$(INSTALL_DIR)/bin/pip install -q --upgrade pip
	$(INSTALL_DIR)/bin/pip install -q .
	cd / && $(INSTALL_DIR)/bin/python -m hypercalls.xen.build
	cd / && $(INSTALL_DIR)/bin/python -m xentool.cli.native_launcher
	cd / && $(INSTALL_DIR)/bin/python -m compileall -q $$($(INSTALL_DIR)/bin/python -c 'import xentool, pathlib; print(pathlib.Path(xentool.__file__).parent.parent)')
	mkdir -p $(BIN_DIR) $(SYSTEMD_DIR)
	ln -sf $(INSTALL_DIR)/bin/xentool $(BIN_DIR)/xentool
	ln -sf $(INSTALL_DIR)/bin/xentoold $(BIN_DIR)/xentoold
	sed 's|@BINDIR@|$(BIN_DIR)|g' contrib/systemd/xentoold.service > $(SYSTEMD_DIR)/xentoold.service
	@if [ "$(SYSTEMD_START)" = yes ] && [ -d /run/systemd/system ]; then \
		systemctl daemon-reload && systemctl enable --now xentoold.service; \
	else \
		echo "installed; start the daemon with: systemctl daemon-reload && systemctl enable --now xentoold"; \
	fi

lab-down:
	$(BIN)/xentool lab down

clean:
	rm -rf $(VENV) build *.egg-info
