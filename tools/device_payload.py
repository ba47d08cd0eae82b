"""Build what a lent GPU machine needs to run the notebooks, in pieces that fit one device call.

The device image has Python 3.12 with torch, torchvision, numpy, pandas, matplotlib, seaborn,
scikit-learn, scipy and tqdm, but not the notebook stack (papermill, nbclient, ipykernel, ...).
Nothing can be downloaded there and one call carries at most 64 MiB (working tree included), so:

    python tools/device_payload.py build            # here: wheels, MNIST, CIFAR-10 in parts
    python tools/device_payload.py plan             # prints the device calls, in order
    python tools/device_payload.py assemble DIR OUT # there: verify parts, rebuild the archive

``build`` writes ``.payload/`` (git-ignored): ``whl/`` (pinned wheels for cp312 manylinux, from
``requirements-lock.txt``), ``mnist/`` (the four official files) and ``cifar-<k>/`` (the
CIFAR-10 archive cut into parts of ``--part-mib``, one folder per device call, each with a
``MANIFEST.json`` of sizes and sha256 digests of every part and of the whole archive).
docs/DEVICE.md is the runbook.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

from common.data import hash_file

REPO_ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = REPO_ROOT / ".payload"
MANIFEST = "MANIFEST.json"
DEVICE_PYTHON = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")
# What `make reproduce` needs beyond the device image (KINDS.md lists what the image holds).
DEVICE_MISSING = (
    "papermill", "nbclient", "nbformat", "nbconvert", "nbval", "ipykernel", "ipython",
    "jupyter_client", "jupyter_core", "traitlets", "pyzmq", "tornado", "comm", "debugpy",
    "matplotlib-inline", "nest-asyncio2", "jedi", "parso", "pexpect", "ptyprocess",
    "prompt_toolkit", "wcwidth", "stack-data", "executing", "asttokens", "pure_eval",
    "ipython_pygments_lexers", "decorator", "platformdirs", "fastjsonschema", "jsonschema",
    "jsonschema-specifications", "referencing", "rpds-py", "entrypoints", "tenacity",
    "ansicolors", "mistune", "bleach", "tinycss2", "pandocfilters", "defusedxml",
    "jupyterlab_pygments", "beautifulsoup4", "soupsieve", "webencodings",
)


def _norm(name: str) -> str:
    return name.lower().replace("_", "-")


def wheel_specs(lock: Path = REPO_ROOT / "requirements-lock.txt",
                names: tuple[str, ...] = DEVICE_MISSING) -> list[str]:
    """``name==version`` for each of ``names`` pinned in ``lock`` (names absent there are left
    out: they are not needed by this environment)."""
    pins = {}
    for line in lock.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[_norm(name)] = f"{name}=={version.strip()}"
    return [pins[_norm(n)] for n in names if _norm(n) in pins]


def sha256(path: Path) -> str:
    return hash_file(path, "sha256")


def split_file(src: Path, out_root: Path, part_bytes: int, stem: str = "cifar") -> list[Path]:
    """Cut ``src`` into parts of at most ``part_bytes``, one folder ``<stem>-<k>/`` per part
    (one folder per device call), each with a manifest of the whole set. The parts of an earlier
    split (of any size) are removed first: :func:`plan` lists every ``<stem>-<k>/``."""
    if part_bytes < 1:
        raise ValueError(f"part_bytes must be positive, got {part_bytes}")
    src, out_root = Path(src), Path(out_root)
    for stale in _part_folders(out_root, stem):
        shutil.rmtree(stale)
    folders: list[Path] = []
    parts: list[dict[str, object]] = []
    with open(src, "rb") as f:
        while block := f.read(part_bytes):
            folder = out_root / f"{stem}-{len(folders)}"
            folder.mkdir(parents=True)
            name = f"{src.name}.part{len(folders):02d}"
            (folder / name).write_bytes(block)
            parts.append({"name": name, "bytes": len(block),
                          "sha256": hashlib.sha256(block).hexdigest()})
            folders.append(folder)
    manifest = {"file": src.name, "bytes": src.stat().st_size, "sha256": sha256(src), "parts": parts}
    for folder in folders:
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return folders


def _part_folders(out_root: Path, stem: str = "cifar") -> list[Path]:
    """The ``<stem>-<k>/`` folders in ``out_root``, by ``k``."""
    found = [p for p in Path(out_root).glob(f"{stem}-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def check_payload(out: Path) -> list[Path]:
    """The CIFAR part folders of a built payload ``out``, after checking that it is complete:
    ``whl/`` and ``mnist/`` present, and part folders that are one set (the same manifest in
    each, which lists exactly their parts). Else a ``FileNotFoundError`` / ``ValueError``
    naming ``build``."""
    rebuild = "run `python tools/device_payload.py build` first"
    parts = _part_folders(out)
    missing = [f"{n}/" for n in ("whl", "mnist") if not (out / n).is_dir()]
    missing += [] if parts else ["cifar-<k>/"]
    if missing:
        raise FileNotFoundError(f"no complete payload in {out} (missing {', '.join(missing)}): {rebuild}")
    manifests = [json.loads((p / MANIFEST).read_text()) if (p / MANIFEST).is_file() else None
                 for p in parts]
    held = [sorted(f.name for f in p.iterdir() if f.name != MANIFEST) for p in parts]
    first = manifests[0]
    if first is None or any(m != first for m in manifests) or held != [[x["name"]] for x in first["parts"]]:
        raise ValueError(f"the CIFAR parts in {out} are not one set (a stale or partial build): {rebuild}")
    return parts


def assemble(parts_dir: Path, out: Path) -> Path:
    """Rebuild the file described by ``parts_dir/MANIFEST.json`` from the parts in
    ``parts_dir``; every part and the whole are checked against their sha256."""
    parts_dir, out = Path(parts_dir), Path(out)
    manifest = json.loads((parts_dir / MANIFEST).read_text())
    tmp = out.with_name(out.name + ".partial")
    with open(tmp, "wb") as w:
        for part in manifest["parts"]:
            path = parts_dir / part["name"]
            if not path.is_file():
                raise FileNotFoundError(f"part {part['name']} missing from {parts_dir}")
            data = path.read_bytes()
            if len(data) != part["bytes"] or hashlib.sha256(data).hexdigest() != part["sha256"]:
                raise ValueError(f"part {part['name']} is corrupt (size {len(data)}, expected "
                                 f"{part['bytes']}; sha256 differs)")
            w.write(data)
    if tmp.stat().st_size != manifest["bytes"] or sha256(tmp) != manifest["sha256"]:
        tmp.unlink()
        raise ValueError(f"reassembled {manifest['file']} does not match its manifest")
    tmp.replace(out)
    return out


def build(out: Path, mirror: Path, part_mib: float, download: bool = True) -> dict[str, object]:
    """Fill ``out`` (see the module docstring); returns a summary of sizes."""
    out.mkdir(parents=True, exist_ok=True)
    if download:
        whl = out / "whl"
        shutil.rmtree(whl, ignore_errors=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--python-version", DEVICE_PYTHON, "--implementation", "cp", "-d", str(whl),
               *[a for p in PLATFORMS for a in ("--platform", p)], *wheel_specs()]
        subprocess.run(cmd, check=True)
    mnist = out / "mnist"
    mnist.mkdir(exist_ok=True)
    for f in sorted((mirror / "mnist").glob("*-ubyte.gz")):
        shutil.copyfile(f, mnist / f.name)
    folders = split_file(mirror / "cifar10" / "cifar-10-python.tar.gz", out,
                         int(part_mib * 2 ** 20))
    sizes = {p.name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
             for p in sorted(out.iterdir()) if p.is_dir()}
    return {"folders_bytes": sizes, "cifar_parts": [f.name for f in folders]}


PLAN = """Device runbook: one GPU, commands of at most 10 minutes, 64 MiB carried per call (the
working tree, about {tree} MiB, included), the machine warm {warm} s after a call. Check `status`
first. /tmp on the device survives between calls only while the machine stays warm.

Call 1  carry [".payload/whl", ".payload/mnist"]  (about {c1} MiB with the tree):
  {install} && mkdir -p /tmp/mirror/mnist /tmp/parts && cp .payload/mnist/* /tmp/mirror/mnist/ && nvidia-smi -L
{cifar_calls}Then (same call as the last part):
  export PYTHONPATH=$PWD:/tmp/site; python3 tools/device_payload.py assemble /tmp/parts /tmp/mirror/cifar10/cifar-10-python.tar.gz
Run a notebook (one call each, timeout_s 595; repeat while it exits 3). The commit is this
checkout's HEAD: the device's .git can be the session's first one, not the files it runs.
  export PYTHONPATH=$PWD:/tmp/site REPRO_DATA_MIRROR=/tmp/mirror REPRO_DATA_ROOT=/tmp/data PYTHONUNBUFFERED=1 REPRO_COMMIT={head};
  timeout 560 python3 -m common.reproduce --nb NN --profile full --param SEGMENT_SECONDS=420; rc=$?;
  tar czf $OUT/results-NN.tgz results/NN_* checkpoints 2>/dev/null; exit $rc
  (`timeout` sends SIGTERM, which common.reproduce turns into a failed run kept in
  results/NN_*.failed/ with the cells that ran; exit 3: the time segment ran out and checkpoints
  are saved; checkpoints/ comes back too, so a fresh machine resumes after `tar xzf` of it into
  the tree, carried as "checkpoints". 01-03, 05 and 07 take SEGMENT_SECONDS (07: 300, it
  stops between whole runs); for 04 and 06 leave --param out; docs/DEVICE.md says what fits.)
Back here: tar xzf /work/.device/.../results-NN.tgz, check results/NN_*/metrics.json (device,
profile full, commit), commit results/ and regenerate the README table (make report).
"""


CARRY_MIB = 64          # one device call carries at most this, the working tree included


def tree_mib() -> float:
    """MiB of the files a device call sends besides the carried ones (git's tracked files)."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True,
                             check=True).stdout.split(b"\0")
    return sum((REPO_ROOT / f.decode()).stat().st_size for f in tracked
               if f and (REPO_ROOT / f.decode()).is_file()) / 2 ** 20


def plan(out: Path = PAYLOAD, warm_s: int = 30) -> str:
    """The device calls for the payload in ``out``, in order, with their carried sizes; an error
    naming ``build`` when there is no complete payload (:func:`check_payload`)."""
    mib = 2 ** 20
    tree = tree_mib()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                          text=True, check=True).stdout.strip()

    def size(folder: Path) -> float:
        return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / mib

    install = ("python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir "
               "--upgrade --target /tmp/site .payload/whl/*.whl")
    parts = check_payload(out)
    cifar = "".join(f"Call {k + 2}  carry [\".payload/{p.name}\"]  (about {tree + size(p):.0f} MiB):\n"
                    f"  cp .payload/{p.name}/* /tmp/parts/\n" for k, p in enumerate(parts))
    text = PLAN.format(tree=f"{tree:.0f}", warm=warm_s, install=install, cifar_calls=cifar,
                       c1=f"{tree + size(out / 'whl') + size(out / 'mnist'):.0f}", head=head)
    biggest = max([tree + size(out / "whl") + size(out / "mnist")] + [tree + size(p) for p in parts])
    if biggest > CARRY_MIB:
        text = (f"!! a call above carries {biggest:.0f} MiB, over the {CARRY_MIB} MiB limit: rebuild "
                f"with a smaller --part-mib (default: what fits beside the tree)\n\n" + text)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="wheels, MNIST and CIFAR-10 parts into .payload/")
    b.add_argument("--mirror", type=Path, default=REPO_ROOT.parent / "shared" / "datasets")
    b.add_argument("--out", type=Path, default=PAYLOAD)
    b.add_argument("--part-mib", type=float, default=None,
                   help="CIFAR part size (default: what fits beside the working tree in one "
                        "64 MiB call, less 3 MiB)")
    b.add_argument("--no-download", action="store_true", help="skip the wheels")
    a = sub.add_parser("assemble", help="verify parts and rebuild the archive")
    a.add_argument("parts_dir", type=Path)
    a.add_argument("out", type=Path)
    p = sub.add_parser("plan", help="print the device calls")
    p.add_argument("--out", type=Path, default=PAYLOAD)
    args = ap.parse_args(argv)
    if args.cmd == "build":
        part_mib = args.part_mib or max(4.0, CARRY_MIB - 3 - tree_mib())
        print(json.dumps(build(args.out, args.mirror, part_mib, not args.no_download), indent=1))
    elif args.cmd == "assemble":
        print(f"ok: {assemble(args.parts_dir, args.out)}")
    else:
        try:
            print(plan(args.out))
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(f"plan: {e}") from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
