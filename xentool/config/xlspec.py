"""xl's compact spellings, which xentool accepts too: disk and vif spec strings, cpu lists, boot orders.

The disk syntax is docs/man/xl-disk-configuration.5 (positional ``target,format,vdev,access`` or
``key=value``, and the deprecated ``phy:``/``file:``/``tap:`` target prefixes); the vif syntax is
docs/man/xl-network-configuration.5.  Each parser returns the plain dict the model validates, or
raises ValueError with a message that says what is accepted.
"""

from __future__ import annotations

from typing import Any

DISK_FORMATS = ("raw", "qcow", "qcow2", "vhd", "qed", "empty")
DISK_KEYS = ("target", "format", "vdev", "access", "devtype", "backendtype", "backend")
VIF_KEYS = ("mac", "bridge", "model", "type", "backend", "ip", "vifname", "script", "gatewaydev")
# xl's script= names the hotplug script; xentool does those two scripts' work itself.
VIF_SCRIPTS = {"vif-bridge": "bridge", "/etc/xen/scripts/vif-bridge": "bridge",
               "vif-route": "route", "/etc/xen/scripts/vif-route": "route"}
# Keys xl knows that xentool does not implement: named, so the message is not "unknown".
_DISK_UNSUPPORTED = ("script", "direct-io-safe", "discard", "no-discard", "colo", "trusted", "specification")
_VIF_UNSUPPORTED = ("rate", "accel", "powerto", "devid", "mtu")

_ACCESS = {"r": "ro", "ro": "ro", "w": "rw", "rw": "rw", "w!": "rw", "rw!": "rw"}
# Deprecated target prefixes: what each says about the backend and the format.
_PREFIXES: dict[str, dict[str, str]] = {
    "phy:": {"backendtype": "phy", "format": "raw"},
    "file:": {"format": "raw"},
    "tap:aio:": {"backendtype": "tap", "format": "raw"},
    "tap:qcow2:": {"backendtype": "tap", "format": "qcow2"},
    "tap:qcow:": {"backendtype": "tap", "format": "qcow"},
    "tap:vhd:": {"backendtype": "tap", "format": "vhd"},
    "tap2:aio:": {"backendtype": "tap", "format": "raw"},
    "aio:": {"format": "raw"},
    "raw:": {"format": "raw"},
    "qcow2:": {"format": "qcow2"},
    "qcow:": {"format": "qcow"},
    "vhd:": {"format": "vhd"},
}
BOOT_LETTERS = {"c": "disk", "d": "cdrom", "n": "network"}
MAX_CPU_ID = 4095


def _quoted(text: str) -> str:
    return '"' + (text if len(text) <= 60 else text[:57] + "...") + '"'


def _vdev_part(text: str, out: dict[str, Any]) -> None:
    vdev, sep, kind = text.partition(":")
    if sep:
        if kind not in ("cdrom", "disk"):
            raise ValueError(f"{_quoted(text)}: after the vdev's ':' comes cdrom or disk, not {_quoted(kind)}")
        out["devtype"] = kind
    out["vdev"] = vdev


def _access(text: str) -> str:
    try:
        return _ACCESS[text.lower()]
    except KeyError:
        raise ValueError(f"{_quoted(text)} is not a disk access mode; use rw (or w) or ro (or r)") from None


def _target(text: str, out: dict[str, Any]) -> None:
    for prefix, implied in _PREFIXES.items():
        if text.startswith(prefix):
            for key, value in implied.items():
                out.setdefault(key, value)
            text = text[len(prefix) :]
            break
    out["target"] = text


def parse_disk_spec(spec: str) -> dict[str, Any]:
    """An xl disk spec string (``/img/a.raw,raw,xvda,rw`` or ``vdev=hdc,devtype=cdrom,target=/x.iso``)."""
    out: dict[str, Any] = {}
    positional: list[str] = []
    rest = spec.strip()
    while rest:
        # As xl: target= must come last because everything after it, commas included, is the path.
        if rest.startswith("target="):
            _target(rest[len("target=") :], out)
            break
        item, _, rest = rest.partition(",")
        item = item.strip()
        if "=" in item:
            key, _, value = item.partition("=")
            key = key.strip()
            if key in _DISK_UNSUPPORTED:
                raise ValueError(f"disk option {_quoted(key)} is one xentool does not support")
            if key not in DISK_KEYS:
                raise ValueError(f"{_quoted(key)} is not a disk option; use {', '.join(DISK_KEYS)}")
            if key == "vdev":
                _vdev_part(value, out)
            elif key == "access":
                out["access"] = _access(value)
            else:
                out[key] = value
        elif item in ("cdrom", "devtype=cdrom"):
            out["devtype"] = "cdrom"
        elif item in _DISK_UNSUPPORTED:
            raise ValueError(f"disk option {_quoted(item)} is one xentool does not support")
        else:
            positional.append(item)
    if positional:
        _positional_disk(positional, out, spec)
    if "vdev" not in out:
        raise ValueError(f"{_quoted(spec)} names no vdev; an xl disk spec is TARGET,FORMAT,VDEV,ACCESS or key=value pairs")
    return out


def _positional_disk(items: list[str], out: dict[str, Any], spec: str) -> None:
    if len(items) > 4:
        raise ValueError(
            f"{_quoted(spec)} has {len(items)} positional parts; an xl disk spec has at most TARGET,FORMAT,VDEV,ACCESS"
        )
    # xl's positional order is target, format, vdev, access; the older three-part form
    # "phy:/dev/vg/lv,xvda,w" leaves out the format, which is told apart by its value.
    if len(items) == 4:
        names = ["target", "format", "vdev", "access"]
    elif len(items) == 3 and items[1] not in DISK_FORMATS:
        names = ["target", "vdev", "access"]
    else:
        names = ["target", "format", "vdev"][: len(items)]
    for name, value in zip(names, items, strict=True):
        if name == "target":
            _target(value, out)
        elif name == "format":
            if value:
                out["format"] = value
        elif name == "vdev":
            _vdev_part(value, out)
        elif value:
            out["access"] = _access(value)


def parse_vif_spec(spec: str) -> dict[str, Any]:
    """An xl vif spec string: ``bridge=xenbr0,mac=00:16:3e:00:00:01,model=e1000`` (may be empty)."""
    out: dict[str, Any] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"{_quoted(item)} is not KEY=VALUE; an xl vif spec is like bridge=xenbr0,mac=00:16:3e:00:00:01")
        if key in _VIF_UNSUPPORTED:
            raise ValueError(f"vif option {_quoted(key)} is one xentool does not support")
        if key not in VIF_KEYS:
            raise ValueError(f"{_quoted(key)} is not a vif option; use {', '.join(VIF_KEYS)}")
        if key == "script":
            if value.strip() not in VIF_SCRIPTS:
                raise ValueError(f"vif script {_quoted(value.strip())} is not one xentool does; use vif-bridge or vif-route")
            out["mode"] = VIF_SCRIPTS[value.strip()]
            continue
        out[key] = value.strip()
    return out


def parse_cpu_list(spec: str) -> list[int]:
    """``"0-3,5"`` -> [0, 1, 2, 3, 5], as xl's cpus=; "all" is every cpu, written as no pinning."""
    cpus: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        first, dash, last = part.partition("-")
        try:
            low = int(first.strip())
            high = int(last.strip()) if dash else low
        except ValueError:
            raise ValueError(f"{_quoted(spec)} is not a cpu list; write cpu ids and ranges like 0-3,5") from None
        if low < 0 or high < low:
            raise ValueError(f"{_quoted(part)} is not a cpu range; write LOW-HIGH with LOW <= HIGH, like 0-3")
        if high > MAX_CPU_ID:
            raise ValueError(f"cpu {high} is beyond the highest cpu id Xen has ({MAX_CPU_ID})")
        cpus += [c for c in range(low, high + 1) if c not in cpus]
    return cpus


def parse_boot_letters(spec: str) -> list[str]:
    """xl's boot="dc" (d = cdrom, c = disk, n = network) as a list of device names."""
    order: list[str] = []
    for letter in spec.strip():
        if letter not in BOOT_LETTERS:
            raise ValueError(
                f"{_quoted(spec)} is not a boot order; use a list of cdrom, disk, network"
                " or xl's letters (c disk, d cdrom, n network)"
            )
        order.append(BOOT_LETTERS[letter])
    return order
