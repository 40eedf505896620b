"""The doorbell's Python: the Debian packages Raspberry Pi OS builds against its own numpy
(apt), and a venv over the system interpreter that sees them (--system-site-packages), into
which Doorstep is pip-installed under shipped constraints, so that pip never installs a second
numpy (or av) over the one picamera2 and its compiled helpers were built against.

Also the import probe `doorstep install` and `doorstep doctor` both use: each module imported
by the venv's own interpreter, in a process of its own, with its version and path.
"""

from __future__ import annotations

import importlib.resources
import json
import re
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from doorstep.core.errors import Permanent

# The interpreter apt's python3-* packages are built for. Never a pyenv or /usr/local one:
# its site-packages would not be /usr/lib/python3/dist-packages.
SYSTEM_PYTHON = "/usr/bin/python3"
APT_DIST_PACKAGES = "/usr/lib/python3/dist-packages"

# Debian packages every doorbell needs, and those only Raspberry Pi OS's archive has.
APT_BASE = ("python3-venv", "python3-numpy")
APT_PI = ("python3-picamera2", "python3-lgpio")

# Distributions Doorstep requires that apt may already provide. numpy is always held at apt's
# version (every apt extension links against it); av only where picamera2 is installed, since
# picamera2's Pi 5 encoder imports it and needs Raspberry Pi's build of it.
HOLD_ALWAYS = ("numpy",)
HOLD_WITH_PICAMERA2 = ("av",)

# What the probe imports, and the distribution each comes from when the module has no
# __version__ of its own.
MODULES = {"numpy": "numpy", "cv2": "opencv-python-headless", "av": "av",
           "picamera2": "picamera2", "simplejpeg": "simplejpeg"}

Run = Callable[..., "subprocess.CompletedProcess[str]"]


def _run(argv: Sequence[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          check=False)


@dataclass(frozen=True)
class Module:
    """One module as an interpreter sees it: imported (version, path) or not (error)."""

    name: str
    version: str | None = None
    path: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def from_apt(self) -> bool:
        return bool(self.path) and str(self.path).startswith(APT_DIST_PACKAGES + "/")

    def describe(self) -> str:
        if self.error:
            return f"{self.name}: does not import: {self.error}"
        where = "apt" if self.from_apt else "pip"
        return f"{self.name} {self.version} ({where}: {self.path})"


_PROBE = """
import importlib, importlib.metadata as md, json, sys
name, dist = sys.argv[1], sys.argv[2]
try:
    m = importlib.import_module(name)
    v = getattr(m, "__version__", None)
    if not isinstance(v, str):
        try:
            v = md.version(dist)
        except md.PackageNotFoundError:
            v = None
    path = getattr(m, "__file__", None)
    print(json.dumps({"version": v, "path": path and str(path)}))
except BaseException as e:
    print(json.dumps({"error": (type(e).__name__ + ": " + str(e)).strip()[:300]}))
"""


def probe(python: str | Path, names: Iterable[str] = MODULES, run: Run = _run) -> list[Module]:
    """Import each module with ``python``, each in a fresh process (an import that crashes
    the interpreter, as an ABI mismatch can, then costs only its own line)."""
    found = []
    for name in names:
        try:
            done = run([str(python), "-I", "-c", _PROBE, name, MODULES.get(name, name)],
                       timeout=60)
        except (OSError, subprocess.SubprocessError) as exc:
            found.append(Module(name, error=f"cannot run {python}: {exc}"))
            continue
        try:
            answer = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
            found.append(Module(name, error=f"the interpreter died importing it "
                                            f"(exit {done.returncode}): {tail[0][:200]}"))
            continue
        found.append(Module(name, version=answer.get("version"), path=answer.get("path"),
                            error=answer.get("error")))
    return found


_DISTS = """
import importlib.metadata as md, importlib.util, json, sys
out = {}
for name in sys.argv[1:]:
    try:
        out[name] = md.version(name)
    except md.PackageNotFoundError:
        pass
out["picamera2?"] = importlib.util.find_spec("picamera2") is not None
print(json.dumps(out))
"""


@dataclass(frozen=True)
class SystemPython:
    """What apt installed for the system interpreter: versions of the distributions we may
    hold, and whether picamera2 is there."""

    versions: dict[str, str]
    picamera2: bool

    def pins(self) -> list[str]:
        """``name==version`` for each distribution the venv must take from apt."""
        held = HOLD_ALWAYS + (HOLD_WITH_PICAMERA2 if self.picamera2 else ())
        return [f"{name}=={self.versions[name]}" for name in held if name in self.versions]


def system_python(python: str = SYSTEM_PYTHON, run: Run = _run) -> SystemPython:
    names = sorted(set(HOLD_ALWAYS + HOLD_WITH_PICAMERA2))
    try:
        done = run([python, "-I", "-c", _DISTS, *names], timeout=60)
        answer = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        raise Permanent(f"cannot ask {python} what apt installed: {exc}") from exc
    picamera2 = bool(answer.pop("picamera2?"))
    return SystemPython(versions={k: str(v) for k, v in answer.items()}, picamera2=picamera2)


def sees_apt(python: str | Path, run: Run = _run) -> bool:
    """Whether ``python`` has apt's dist-packages on its path (the system interpreter, or a
    venv over it made with --system-site-packages): only then can its modules shadow apt's."""
    try:
        done = run([str(python), "-I", "-c", "import sys; print('\\n'.join(sys.path))"],
                   timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return APT_DIST_PACKAGES in done.stdout.splitlines()


def os_codename(root: Path = Path("/")) -> str:
    """VERSION_CODENAME from <root>/etc/os-release ("bookworm", "trixie"), or ""."""
    for rel in ("etc/os-release", "usr/lib/os-release"):
        try:
            text = (root / rel).read_text(encoding="utf-8")
        except OSError:
            continue
        found = re.search(r"^VERSION_CODENAME=\"?([A-Za-z0-9_-]*)\"?$", text, re.MULTILINE)
        if found:
            return found.group(1)
    return ""


def shipped_constraints(codename: str) -> str:
    """The constraints file shipped for this release of Debian / Raspberry Pi OS."""
    ref = importlib.resources.files("doorstep.provision") / "constraints" / f"{codename}.txt"
    try:
        return ref.read_text(encoding="utf-8")
    except (OSError, FileNotFoundError) as exc:
        known = sorted(p.name.removesuffix(".txt") for p in
                       (importlib.resources.files("doorstep.provision") / "constraints").iterdir()
                       if p.name.endswith(".txt"))
        raise Permanent(f"no constraints for {codename or 'this system'} (Doorstep knows "
                        f"{', '.join(known)}); pass --constraints FILE") from exc


def constraints_text(shipped: str, system: SystemPython) -> str:
    """The shipped constraints, then apt's exact versions of what the venv must not replace."""
    pins = system.pins()
    held = ("\n# Held at the versions apt installed (doorstep install found them):\n"
            + "".join(f"{p}\n" for p in pins)) if pins else ""
    return shipped.rstrip("\n") + "\n" + held


def create_venv(target: Path, *, python: str = SYSTEM_PYTHON, run: Run = _run) -> None:
    """``python -m venv --system-site-packages target``: apt's packages stay visible."""
    _check(run([python, "-m", "venv", "--system-site-packages", str(target)], timeout=300),
           f"creating the venv {target}")


def pip_install(venv: Path, requirements: Sequence[str], *, constraints: Path,
                find_links: Sequence[Path] = (), no_index: bool = False,
                run: Run = _run) -> None:
    argv = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
            "--no-input", "--constraint", str(constraints)]
    for link in find_links:
        argv += ["--find-links", str(link)]
    if no_index:
        argv.append("--no-index")
    _check(run([*argv, *requirements], timeout=1800), f"pip install into {venv}")


def installed_version(venv: Path, dist: str = "doorstep", run: Run = _run) -> str | None:
    """The version of ``dist`` installed in ``venv``, or None (no venv, or not in it)."""
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    code = ("import importlib.metadata as m, sys\n"
            "try: print(m.version(sys.argv[1]))\n"
            "except m.PackageNotFoundError: pass\n")
    try:
        done = run([str(python), "-I", "-c", code, dist], timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


@dataclass(frozen=True)
class Problem:
    """What is wrong with one module of a venv, and what to do about it."""

    module: str
    what: str
    fix: str

    def __str__(self) -> str:
        return f"{self.what}: {self.fix}"


def problems(found: Sequence[Module], system: SystemPython, *,
             need_picamera2: bool) -> list[Problem]:
    """What is wrong with the modules a venv imports, each with its fix."""
    by = {m.name: m for m in found}
    out = []
    for m in found:
        if m.name == "picamera2" and not need_picamera2:
            continue
        if m.name == "simplejpeg" and not system.picamera2:
            continue
        if not m.ok:
            fix = ("install python3-picamera2 from apt; the venv must be made with "
                   "--system-site-packages" if m.name in ("picamera2", "simplejpeg")
                   else "rebuild the venv with `doorstep install`")
            out.append(Problem(m.name, m.describe(), fix))
    numpy = by.get("numpy")
    if numpy is not None and numpy.ok and "numpy" in system.versions and not numpy.from_apt:
        out.append(Problem("numpy", f"numpy {numpy.version} from {numpy.path} shadows apt's "
                           f"numpy {system.versions['numpy']}, which apt's extensions were "
                           f"built against", "rebuild the venv with `doorstep install` (it "
                           "holds numpy at apt's version)"))
    av = by.get("av")
    if (av is not None and av.ok and system.picamera2 and "av" in system.versions
            and not av.from_apt):
        out.append(Problem("av", f"av {av.version} from {av.path} shadows apt's python3-av "
                           f"{system.versions['av']}, which picamera2's encoder needs",
                           "rebuild the venv with `doorstep install` (it holds av at apt's "
                           "version where picamera2 is installed)"))
    return out


def _check(done: subprocess.CompletedProcess[str], what: str) -> None:
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout or "").strip().splitlines()[-12:])
        raise Permanent(f"{what} failed (exit {done.returncode}):\n{tail}")
