"""The pi-gen stage's own steps, run as pi-gen runs them, in a Debian 12 (bookworm) and a
Debian 13 (trixie) root made with debootstrap: 00-apt's packages with apt-get in the chroot,
02-doorstep/00-run.sh on the host with ROOTFS_DIR set, and 01-run-chroot.sh inside the chroot.
01-rpi-apt is skipped (its packages are only in Raspberry Pi's archive) and
DOORSTEP_TARGET=generic says so to the installer. python3-bottleneck stands in for the apt
extensions built against apt's numpy (simplejpeg is Raspberry Pi's): it must still import in
the venv, on numpy 1.24 (bookworm) and 2.2 (trixie).

A whole image needs ARM emulation, which this machine lacks: these are amd64 Debian roots, not
arm64 Raspberry Pi OS images, and nothing here boots. Each debootstrapped root is cached (keyed
by release and package list) so later runs skip the download."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STAGE = REPO / "image" / "pi-gen" / "stage-doorstep"
BASE = ["python3", "ca-certificates", "systemd", "openssh-server", "python3-bottleneck"]
RELEASES = ("bookworm", "trixie")
MIRROR = "http://deb.debian.org/debian"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "doorstep-tests"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="debootstrap and chroot need root"),
    pytest.mark.skipif(shutil.which("debootstrap") is None,
                       reason="debootstrap (Debian package) is not installed"),
]


def packages(substage: str) -> list[str]:
    return (STAGE / substage / "00-packages-nr").read_text().split()


def _run(argv: Sequence[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False,
                          **kw)  # type: ignore[call-overload]


def _debian(release: str, tmp: Path) -> Path:
    """A cached tarball of `debootstrap --variant=minbase <release>` with BASE and 00-apt's
    packages; made on first use, skipped with the reason if the mirror cannot be reached."""
    include = sorted(set(BASE + packages("00-apt")))
    key = hashlib.sha256(" ".join(include).encode()).hexdigest()[:12]
    tarball = CACHE / f"debian-{release}-minbase-{key}.tar"
    if tarball.exists():
        return tarball
    root = tmp / "bootstrap"
    done = _run(["debootstrap", "--variant=minbase", f"--include={','.join(include)}",
                 release, str(root), MIRROR], timeout=1800)
    if done.returncode != 0:
        pytest.skip(f"debootstrap could not make a Debian {release} root (no mirror?): "
                    + (done.stderr or done.stdout).strip()[-400:])
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_suffix(".partial")
    made = _run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(partial), "."])
    assert made.returncode == 0, made.stderr
    partial.rename(tarball)
    shutil.rmtree(root, ignore_errors=True)
    return tarball


class Chroot:
    """pi-gen's on_chroot: /proc, /dev and /sys from the host, /run a tmpfs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mounted: list[Path] = []

    def __enter__(self) -> Chroot:
        for args, where in ((["-t", "proc", "proc"], "proc"), (["--bind", "/dev"], "dev"),
                            (["--bind", "/sys"], "sys"), (["-t", "tmpfs", "tmpfs"], "run")):
            target = self.root / where
            target.mkdir(exist_ok=True)
            done = _run(["mount", *args, str(target)])
            if done.returncode != 0:
                self.__exit__()
                pytest.skip(f"cannot mount {where} into the chroot: {done.stderr.strip()}")
            self.mounted.append(target)
        shutil.copy("/etc/resolv.conf", self.root / "etc/resolv.conf")
        return self

    def pip_env(self) -> dict[str, str]:
        """The host's own pip setting for reaching PyPI: where this machine's network puts
        PyPI behind a TLS-inspecting proxy, the host's pip trusts it through PIP_CERT (a CA
        bundle, public), and pip in the chroot is given the same bundle."""
        cert = os.environ.get("PIP_CERT")
        if not cert or not Path(cert).is_file():
            return {}
        inside = self.root / "tmp/host-ca-bundle.crt"
        if not inside.exists():
            shutil.copy(cert, inside)
        return {"PIP_CERT": "/tmp/host-ca-bundle.crt"}

    def __exit__(self, *exc: object) -> None:
        for target in reversed(self.mounted):
            _run(["umount", "-l", str(target)])
        self.mounted.clear()

    def run(self, argv: Sequence[str], *, stdin: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        clean = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
                 **self.pip_env(), **(env or {})}
        return _run(["chroot", str(self.root), *argv], input=stdin, env=clean, timeout=1800)


@pytest.fixture(scope="module", params=RELEASES)
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          doorstep_wheel: Path) -> Iterator[tuple[Chroot, dict[str, str]]]:
    release = request.param
    tmp = tmp_path_factory.mktemp(f"image-{release}")
    tarball = _debian(release, tmp)
    root = tmp / "rootfs"
    root.mkdir()
    unpacked = _run(["tar", "-C", str(root), "--numeric-owner", "-xf", str(tarball)])
    assert unpacked.returncode == 0, unpacked.stderr
    # what a booted card would carry into an image: its machine-id and host keys
    (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    _run(["chroot", str(root), "ssh-keygen", "-A"])
    stage = tmp / "stage-doorstep"
    shutil.copytree(STAGE, stage, symlinks=True)
    shutil.copy(doorstep_wheel, stage / "02-doorstep/files/")
    log: dict[str, str] = {"release": release}
    with Chroot(root) as chroot:
        # 00-apt: pi-gen's 00-packages-nr
        done = chroot.run(["apt-get", "install", "-y", "-q", "--no-install-recommends",
                           *packages("00-apt")], env={"DEBIAN_FRONTEND": "noninteractive"})
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        # 01-rpi-apt: skipped, see the module's docstring
        # 02-doorstep/00-run.sh: on the host, in the substage's directory
        done = _run(["bash", "-e", "00-run.sh"], cwd=stage / "02-doorstep",
                    env={**os.environ, "ROOTFS_DIR": str(root)})
        assert done.returncode == 0, done.stderr
        # 02-doorstep/01-run-chroot.sh: on_chroot < script
        script = (stage / "02-doorstep/01-run-chroot.sh").read_text()
        done = chroot.run(["/bin/bash", "-e", "-s"], stdin=script,
                          env={"DOORSTEP_TARGET": "generic"})
        log["install"] = done.stdout + done.stderr
        assert done.returncode == 0, log["install"][-4000:]
        yield chroot, log


def test_the_stage_installs_doorstep_into_the_image(
        built: tuple[Chroot, dict[str, str]], doorstep_wheel: Path) -> None:
    chroot, log = built
    root = chroot.root
    version = doorstep_wheel.name.split("-")[1]
    assert os.readlink(root / "opt/doorstep/current") == f"releases/{version}"
    done = chroot.run(["/opt/doorstep/current/bin/doorstep", "--version"])
    assert done.stdout.strip() == f"doorstep {version}", done.stderr
    # the venv sees apt's numpy, as on a Pi, and the apt extension built against it works
    probe = chroot.run(["/opt/doorstep/current/bin/python", "-I", "-c",
                        "import numpy, bottleneck, cv2, av\n"
                        "assert bottleneck.nanmean(numpy.arange(12.0)) == 5.5\n"
                        "print(numpy.__file__, numpy.__version__)"])
    assert probe.stdout.startswith("/usr/lib/python3/dist-packages/numpy/"), probe.stderr
    apt_numpy = chroot.run(["/usr/bin/python3", "-c", "import numpy; print(numpy.__version__)"])
    assert probe.stdout.split()[1] == apt_numpy.stdout.strip()
    wanted = "numpy<2" if log["release"] == "bookworm" else "numpy>=2,<3"
    constraints = (root / "opt/doorstep/current/doorstep-constraints.txt").read_text()
    assert wanted in constraints and f"numpy=={apt_numpy.stdout.strip()}" in constraints
    assert "doorstep:" in (root / "etc/passwd").read_text()
    wants = root / "etc/systemd/system/multi-user.target.wants"
    for unit in ("doorstep-agent.service", "doorstep-firstboot.service",
                 "doorstep-identity.service"):
        assert (wants / unit).is_symlink(), log["install"][-2000:]
    assert not (root / "tmp/doorstep-install").exists()


def test_the_image_carries_no_machines_identity(built: tuple[Chroot, dict[str, str]]) -> None:
    chroot, _ = built
    root = chroot.root
    assert (root / "etc/machine-id").read_text() == "uninitialized\n"
    assert not list((root / "etc/ssh").glob("ssh_host_*"))
    # and at a card's first boot the identity unit's command makes its own host keys
    done = chroot.run(["/opt/doorstep/current/bin/doorstep", "identity", "--state",
                       "/var/lib/doorstep-identity"])
    assert done.returncode == 0, done.stderr
    assert "ED25519 SHA256:" in done.stdout
    assert (root / "etc/ssh/ssh_host_ed25519_key").exists()


def test_the_units_verify_inside_the_image(built: tuple[Chroot, dict[str, str]]) -> None:
    chroot, _ = built
    for unit in ("doorstep-agent.service", "doorstep-firstboot.service",
                 "doorstep-identity.service"):
        done = chroot.run(["systemd-analyze", "verify", f"/etc/systemd/system/{unit}"])
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_doctor_runs_in_the_image_and_fails_cleanly(
        built: tuple[Chroot, dict[str, str]]) -> None:
    chroot, _ = built
    done = chroot.run(["/opt/doorstep/current/bin/doorstep", "doctor", "--no-button",
                       "--json"])
    assert done.returncode == 1 and "Traceback" not in done.stderr
    report = json.loads(done.stdout)
    checks = {c["name"]: c["status"] for c in report["checks"]}
    # the example config is installed until first boot replaces it: the doctor says so
    assert checks["config"] in ("PASS", "FAIL")
    assert checks["module numpy"] == "PASS"
