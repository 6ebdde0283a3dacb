"""Generates the faultprint.v1 stubs from the .proto files before the package is built.

``pip install .`` (or ``pip install git+...``) of a clean clone thus works: the stubs are
build output, never committed. grpcio-tools is a build requirement (pyproject.toml).
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PROTOS = ROOT / "protos"


def generate_stubs() -> None:
    """Runs protoc on every faultprint .proto whose stubs are missing or older than it."""
    from grpc_tools import protoc

    sources = sorted((PROTOS / "faultprint" / "v1").glob("*.proto"))
    stale = [p for p in sources if _stale(p)]
    if not stale:
        return
    # grpc_tools ships the well-known types (timestamp.proto, duration.proto).
    well_known = Path(protoc.__file__).resolve().parent / "_proto"
    args = ["protoc", f"-I{PROTOS}", f"-I{well_known}", f"--python_out={PROTOS}",
            f"--grpc_python_out={PROTOS}", f"--pyi_out={PROTOS}", *map(str, sources)]  # fmt: skip
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {', '.join(p.name for p in sources)}")


def _stale(proto: Path) -> bool:
    stub = proto.with_name(proto.stem + "_pb2.py")
    return not stub.exists() or stub.stat().st_mtime < proto.stat().st_mtime


class BuildPyWithStubs(build_py):
    def run(self) -> None:
        generate_stubs()
        super().run()


if __name__ == "__main__":
    setup(cmdclass={"build_py": BuildPyWithStubs})
