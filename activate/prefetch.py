"""``model-repo prefetch`` and ``model-repo ls``: placeholder until implemented."""

from __future__ import annotations

import argparse
from collections.abc import Mapping


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register the ``prefetch`` and ``ls`` subcommands."""


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run ``prefetch`` or ``ls``; returns the exit status."""
    raise NotImplementedError
