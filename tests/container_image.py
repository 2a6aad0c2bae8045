"""The container suite's image, built once per machine and rebuilt when its recipe changes.

No image registry is needed: the base is a Debian rootfs made by ``debootstrap`` from
Debian's own packages (Python 3.13 in trixie, enough for llama-stack 0.7 and OGX 1.5),
imported into the engine; ``Containerfile`` then pip-installs both stacks with host
networking. The tag is a hash of the recipe (this file's constants and the
Containerfile), so an edit to either builds a new image and a stale one is never used.

``python tests/container_image.py`` (``make test-image``) builds it and prints its name;
the suite calls :func:`ensure_image`. ``LLAMASTATE_TEST_BASE_IMAGE`` names a base image to
use instead of debootstrap (for example ``python:3.12-slim`` where a registry answers).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from filelock import FileLock

from pytest_llamastate.stack.engine import Engine, EngineError, find_engine

HERE = Path(__file__).parent / "image"
#: What the image serves: the releases the suite's venvs run.
VERSIONS = {"LLAMA_STACK": "0.7.3", "OGX": "1.5.0"}
SUITE = "trixie"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = "python3,python3-venv,ca-certificates"
#: The rootfs and the build lock; one per user (each has its own images, and root's
#: folder is not another user's to lock in).
_USER = "" if os.getuid() == 0 else f"-{os.getuid()}"
CACHE = Path(os.environ.get("LLAMASTATE_IMAGE_CACHE", f"/var/tmp/llamastate-image{_USER}"))
REPOSITORY = "localhost/llamastate-test"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
CONTAINERS_CONF = Path(__file__).parents[1] / ".ci" / "containers.conf"


def recipe_hash() -> str:
    recipe = [
        (HERE / "Containerfile").read_text(),
        repr(sorted(VERSIONS.items())),
        SUITE,
        PACKAGES,
        os.environ.get("LLAMASTATE_TEST_BASE_IMAGE", ""),
    ]
    return hashlib.sha256("\n".join(recipe).encode()).hexdigest()[:12]


def image_name() -> str:
    return f"{REPOSITORY}:{recipe_hash()}"


def _run(command: list[str], **kwargs: object) -> None:
    print("+", " ".join(command), file=sys.stderr, flush=True)
    subprocess.run(command, check=True, **kwargs)  # type: ignore[call-overload]


def _base(engine: Engine, tag: str) -> str:
    """The base image: the one named, or a debootstrap rootfs imported as ``-base``."""
    if named := os.environ.get("LLAMASTATE_TEST_BASE_IMAGE"):
        return named
    base = f"{REPOSITORY}-base:{tag}"
    if engine.has_image(base):
        return base
    if shutil.which("debootstrap") is None or os.getuid() != 0:
        raise SystemExit(
            "building the test image needs debootstrap run as root (apt-get install "
            "debootstrap), or LLAMASTATE_TEST_BASE_IMAGE=<an image with python3 >= 3.12>, "
            f"or load root's build: sudo {engine.name} save {image_name()} | {engine.name} load"
        )
    rootfs = CACHE / f"rootfs-{SUITE}"
    if not (rootfs / ".complete").exists():
        shutil.rmtree(rootfs, ignore_errors=True)
        packages = f"--include={PACKAGES}"
        _run(["debootstrap", "--variant=minbase", packages, SUITE, str(rootfs), MIRROR])
        (rootfs / ".complete").touch()
    tar = subprocess.Popen(
        ["tar", "-C", str(rootfs), "--exclude=./.complete", "-c", "."], stdout=subprocess.PIPE
    )
    _run([engine.exe, "import", "-", base], stdin=tar.stdout)
    if tar.wait() != 0:
        raise SystemExit(f"tar of {rootfs} failed")
    return base


def engine_problem(engine: Engine, image: str) -> str | None:
    """Why ``engine`` cannot run a container of ``image`` here; ``None`` when it can.

    Where it cannot as configured and ``CONTAINERS_CONF`` is unset, the repository's
    ``.ci/containers.conf`` (runc, cgroupfs, no default ulimits: root on a host with
    hybrid cgroups) is tried and, when it works, set for the rest of the run.
    """
    probe = ("run", "--rm", "--pull=never", "--network=host", "--entrypoint=true", image)
    done = engine.call(*probe)
    if done.returncode != 0 and engine.name == "podman" and "CONTAINERS_CONF" not in os.environ:
        os.environ["CONTAINERS_CONF"] = str(CONTAINERS_CONF)
        if (done := engine.call(*probe)).returncode != 0:
            del os.environ["CONTAINERS_CONF"]
    if done.returncode == 0:
        return None
    said = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
    return f"{engine.name} cannot run a container here: {said}"


def build(engine: Engine) -> str:
    name, tag = image_name(), recipe_hash()
    base = _base(engine, tag)
    if problem := engine_problem(engine, base):
        raise SystemExit(problem)
    with tempfile.TemporaryDirectory() as context:
        shutil.copy(HERE / "Containerfile", context)
        ca = Path(context, "host-ca.crt")
        ca.write_bytes(HOST_CA.read_bytes() if HOST_CA.exists() else b"")
        args = [f"--build-arg=BASE={base}"]
        args += [f"--build-arg={key}={value}" for key, value in VERSIONS.items()]
        recipe = ["-f", str(Path(context, "Containerfile"))]  # docker looks for a Dockerfile
        _run([engine.exe, "build", "--network=host", *recipe, *args, "-t", name, context])
    _remove_stale(engine, name)
    return name


def _remove_stale(engine: Engine, keep: str) -> None:
    """Older builds of the recipe (other tags of the repository) are dead weight; removing
    them is housekeeping (a minute or more for a 1.2 GB image on a busy machine), never a
    reason to have no image."""
    for repository in (REPOSITORY, f"{REPOSITORY}-base"):
        listed = engine.call("images", "--format", "{{.Repository}}:{{.Tag}}", repository)
        stale = [
            line
            for line in listed.stdout.split()
            if line.rpartition(":")[2] not in (keep.rpartition(":")[2], "<none>")
        ]
        if stale:
            with contextlib.suppress(EngineError):
                engine.call("rmi", *stale, timeout=600)


def ensure_image(engine: Engine) -> str:
    """The image's name, built first if this machine has no build of this recipe."""
    name = image_name()
    if engine.has_image(name):
        return name
    CACHE.mkdir(parents=True, exist_ok=True)
    with FileLock(str(CACHE / "build.lock")):
        return name if engine.has_image(name) else build(engine)


def usable() -> tuple[Engine, str] | str:
    """The engine and the suite's image where containers run here, else why not."""
    try:
        engine = find_engine(os.environ.get("LLAMASTATE_TEST_ENGINE", "auto"))
        image = ensure_image(engine)
    except (EngineError, SystemExit, subprocess.CalledProcessError, OSError) as exc:
        return f"no test image: {exc}"
    problem = engine_problem(engine, image)
    return problem if problem else (engine, image)


if __name__ == "__main__":
    found = usable()
    if isinstance(found, str):
        raise SystemExit(found)
    print(found[1])
