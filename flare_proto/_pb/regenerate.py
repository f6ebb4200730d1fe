"""Regenerate the committed ``*_pb2`` modules from the ``.proto`` files.

Run ``python -m flare_proto._pb.regenerate`` from the repository root. The generator is
the pinned ``grpcio-tools`` of the ``test`` extra, so the output is reproducible; a test
(``tests/test_schema.py``) checks that regenerating gives byte-identical files.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_FILES = ("commands.proto", "frame.proto")


def generate(out_dir: Path) -> None:
    """Write ``*_pb2.py`` and ``*_pb2.pyi`` for every schema file into ``out_dir``."""
    from grpc_tools import protoc  # imported lazily: a test-only dependency

    root = Path(__file__).resolve().parents[2]
    here = Path(__file__).resolve().parent
    for name in PROTO_FILES:
        source = (here / name).relative_to(root)
        args = [
            "protoc",
            f"-I{root}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            str(source),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {source}")


def main() -> int:
    root = Path(__file__).resolve().parents[2]
    generate(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
