"""Vendor the age-encryption npm package (and the modules it imports) into the hub's static
folder, byte for byte as npm delivers them, with their licences and a checksum file.

Run by a developer when the pinned version changes (it needs npm, which the Pi never does):
    python3 tools/vendor_age.py
The hub serves these files as they are; only the bare import specifiers are pointed at the
vendored copies while serving (owner/hub/static.py), so no build step runs on the Pi.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

VERSION = "0.3.1"
REPO = Path(__file__).resolve().parents[1]
DEST = REPO / "owner" / "hub" / "static" / "vendor"
IMPORT = re.compile(r"""(?:import|export)\s*(?:[^"';]*?\sfrom\s*)?["']([^"']+)["']""")


def package_of(spec: str) -> tuple[str, str]:
    """"@noble/hashes/hkdf.js" -> ("@noble/hashes", "hkdf.js")."""
    parts = spec.split("/")
    n = 2 if spec.startswith("@") else 1
    return "/".join(parts[:n]), "/".join(parts[n:])


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subprocess.run(["npm", "init", "-y"], cwd=work, check=True, capture_output=True)
        subprocess.run(["npm", "install", "--ignore-scripts", f"age-encryption@{VERSION}"],
                       cwd=work, check=True)
        modules = work / "node_modules"
        lock = json.loads((work / "package-lock.json").read_text())
        todo = [modules / "age-encryption" / "dist" / "index.js"]
        seen: set[Path] = set()
        while todo:
            path = todo.pop()
            if path in seen:
                continue
            seen.add(path)
            for spec in IMPORT.findall(path.read_text()):
                if spec.startswith("."):
                    todo.append((path.parent / spec).resolve())
                else:
                    pkg, rest = package_of(spec)
                    todo.append(modules / pkg / (rest or main_of(modules / pkg)))
        if DEST.exists():
            shutil.rmtree(DEST)
        files = sorted(seen)
        packages = sorted({p.relative_to(modules).parts[0] if not
                           p.relative_to(modules).parts[0].startswith("@") else
                           "/".join(p.relative_to(modules).parts[:2]) for p in files})
        for pkg in packages:
            files += [modules / pkg / "LICENSE", modules / pkg / "package.json"]
        sums = []
        for src in sorted(files):
            rel = src.relative_to(modules)
            out = DEST / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, out)
            sums.append(f"{hashlib.sha256(src.read_bytes()).hexdigest()}  {rel}")
        (DEST / "SHA256SUMS").write_text("\n".join(sums) + "\n")
        pins = {f"node_modules/{p}": lock["packages"][f"node_modules/{p}"] for p in packages}
        (DEST / "PINNED.json").write_text(json.dumps(
            {p: {"version": v["version"], "integrity": v["integrity"]} for p, v in pins.items()},
            indent=2, sort_keys=True) + "\n")
    print(f"vendored {len(files)} files from {len(packages)} packages into {DEST}")
    return 0


def main_of(pkg: Path) -> str:
    meta = json.loads((pkg / "package.json").read_text())
    return str(meta.get("module") or meta.get("main") or "index.js")


if __name__ == "__main__":
    sys.exit(main())
