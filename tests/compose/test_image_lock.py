"""The services' image installs only what compose/requirements.lock pins, by hash: the lock
covers every package the project needs (pyproject.toml's dependencies and its [stack] extra,
and theirs), at the versions pyproject.toml pins, and the Dockerfile installs from it and
nothing else. Real pip refuses a file whose hash the lock does not hold."""

from __future__ import annotations

import importlib.metadata as md
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "compose" / "requirements.lock"
DOCKERFILE = ROOT / "compose" / "Dockerfile"
EXTRA = "stack"


def locked() -> dict[str, tuple[str, list[str]]]:
    """Canonical name -> (version, sha256 hashes) of every entry of the lock."""
    text = re.sub(r"\\\n\s*", " ", LOCK.read_text())
    found: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        pin, *options = line.split()
        name, _, version = pin.partition("==")
        assert name and version, f"not pinned: {line}"
        assert canonicalize_name(name) not in found, f"twice: {name}"
        assert all(o.startswith("--hash=sha256:") for o in options), line
        found[canonicalize_name(name)] = (version, [o.split(":", 1)[1] for o in options])
    return found


def project() -> dict[str, object]:
    return dict(tomllib.loads((ROOT / "pyproject.toml").read_text()))


def direct_requirements() -> list[Requirement]:
    meta = project()["project"]
    assert isinstance(meta, dict)
    return [Requirement(r) for r in [*meta["dependencies"], *meta["optional-dependencies"][EXTRA]]]


def image_environment(extra: str = "") -> dict[str, str]:
    """Markers as pip evaluates them in the image: Linux, CPython 3.11 (PYTHON_IMAGE)."""
    env = {key: str(value) for key, value in default_environment().items()}
    env.update(sys_platform="linux", platform_system="Linux", os_name="posix", extra=extra)
    env.update(python_version="3.11", implementation_name="cpython")
    env.update(platform_python_implementation="CPython")
    return env


def applies(requirement: Requirement, extras: set[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate(image_environment(e)) for e in extras | {""})


def test_every_entry_is_pinned_with_hashes() -> None:
    entries = locked()
    assert len(entries) > 40, "the lock went missing?"
    for name, (version, hashes) in entries.items():
        Version(version)  # an exact version, not a range
        assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), name


def test_the_lock_pins_what_pyproject_pins() -> None:
    """Each of pyproject.toml's pins (dependencies and [stack]) at the same version, and the
    build backend at a version its build-system accepts."""
    entries = locked()
    for requirement in direct_requirements():
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"pyproject.toml does not pin {requirement}"
        name = canonicalize_name(requirement.name)
        assert name in entries, f"{requirement.name} is not in the lock: run compose/lock.py"
        assert entries[name][0] == spec.version, (
            f"{requirement.name}: pyproject {spec.version}, lock {entries[name][0]}: "
            "run compose/lock.py"
        )
    build = project()["build-system"]
    assert isinstance(build, dict)
    for requirement in map(Requirement, build["requires"]):
        version = entries[canonicalize_name(requirement.name)][0]
        assert requirement.specifier.contains(version), requirement


def test_the_lock_holds_every_package_they_need_and_nothing_else() -> None:
    """The closure of the project's requirements, read from each locked version's own
    metadata (installed here at the same versions): every requirement that applies in the
    image is locked at a version that satisfies it, and every entry is needed (or is the
    build backend)."""
    entries = locked()
    build = project()["build-system"]
    assert isinstance(build, dict)
    # The build backend is checked above; it has no dependencies of its own to walk (nor is
    # it the one installed here).
    backend = {canonicalize_name(Requirement(r).name) for r in build["requires"]}
    pending = direct_requirements()
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        assert name in entries, f"{requirement} is not in the lock: run compose/lock.py"
        version = entries[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (requirement, version)
        if (name, frozenset(requirement.extras)) in seen:
            continue
        seen.add((name, frozenset(requirement.extras)))
        installed = md.version(requirement.name)
        assert installed == version, (
            f"{requirement.name}: {installed} here, {version} locked: run compose/lock.py"
        )
        pending += [
            child
            for child in map(Requirement, md.requires(requirement.name) or [])
            if applies(child, set(requirement.extras))
        ]
    needed = {name for name, _ in seen} | backend
    assert set(entries) == needed, f"locked but not needed: {set(entries) - needed}"


def _run_lines(dockerfile: str) -> list[str]:
    text = re.sub(r"\\\n\s*", " ", dockerfile)
    return [
        line.removeprefix("RUN ").strip() for line in text.splitlines() if line.startswith("RUN ")
    ]


def test_the_image_installs_from_the_lock_and_nothing_else() -> None:
    """pip runs twice: the lock with --require-hashes, then the project alone (no index, no
    dependencies, no build isolation: the backend is the locked one), checked by pip check."""
    dockerfile = DOCKERFILE.read_text()
    assert "COPY compose/requirements.lock ./" in dockerfile
    pips = [line for line in _run_lines(dockerfile) if "pip install" in line]
    assert pips == [
        "pip install --no-cache-dir --require-hashes --only-binary=:all: -r requirements.lock",
        "pip install --no-cache-dir --no-index --no-deps --no-build-isolation . && pip check",
    ]
    # The lock is installed before the sources are copied (its layer outlives code changes).
    assert dockerfile.index("requirements.lock\n") < dockerfile.index("COPY otel ./otel")


def _wheel(directory: Path, name: str, version: str) -> Path:
    """A well-formed wheel of `name`==`version` that is not the published one."""
    directory.mkdir()
    dist = f"{name.replace('-', '_')}-{version}"
    path = directory / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{name.replace('-', '_')}/__init__.py", "print('not the real one')\n")
        info = f"{dist}.dist-info"
        wheel.writestr(
            f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        )
        wheel.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        wheel.writestr(f"{info}/RECORD", "")
    return path


def test_pip_refuses_a_file_the_lock_does_not_hash(tmp_path: Path) -> None:
    """A substituted release (same name and version, other contents: a compromised index or
    mirror) is refused by the very pip options of the Dockerfile, and nothing is installed."""
    name, (version, _) = "sniffio", locked()["sniffio"]
    _wheel(tmp_path / "index", name, version)
    entry = re.search(
        rf"^{name}=={re.escape(version)}(?: \\\n\s+--hash=\S+)+$", LOCK.read_text(), re.M
    )
    assert entry, f"{name} is not an entry of the lock"
    (tmp_path / "lock.txt").write_text(entry.group(0) + "\n")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--require-hashes",
            "--only-binary=:all:",
            "--no-index",
            "--find-links",
            str(tmp_path / "index"),
            "--target",
            str(tmp_path / "target"),
            "-r",
            str(tmp_path / "lock.txt"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0, run.stdout
    assert "DO NOT MATCH THE HASHES" in run.stderr, run.stderr
    assert not (tmp_path / "target" / name).exists()


def test_the_lock_is_for_the_image_s_python() -> None:
    """pip resolved the lock for CPython 3.11 (markers, wheels): the image's Python."""
    env = dict(
        line.split("=", 1)
        for line in (ROOT / "compose" / ".env").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert re.fullmatch(r"python:3\.11\.\d+-slim", env["PYTHON_IMAGE"]), env["PYTHON_IMAGE"]
    assert "ARG PYTHON_IMAGE=python:3.11." in DOCKERFILE.read_text()
    header = [line for line in LOCK.read_text().splitlines() if line.startswith("#")]
    assert "CPython 3.11" in " ".join(header)
