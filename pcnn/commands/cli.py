"""The `pcnn` command line: one sub-command per job, each defined beside the code it drives."""

from __future__ import annotations

import argparse
import sys

from pcnn import __version__
from pcnn.commands.data_cli import add_data_parser
from pcnn.commands.evaluate_cli import add_evaluate_parser
from pcnn.commands.fid_cli import add_fid_parser
from pcnn.commands.sample_cli import add_sample_parser
from pcnn.commands.train_cli import add_train_parser
from pcnn.reporting.export import add_export_parser
from pcnn.workflow.pipeline import add_pipeline_parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pcnn",
        description=(
            "PixelCNN++G: a class-conditional PixelCNN++ that generates 32x32 images of a chosen class and "
            "classifies images by Bayes' rule. Data root: --data-dir, else $PCNN_DATA_DIR, else a generated "
            "synthetic four-class set."
        ),
    )
    parser.add_argument("--version", action="version", version=f"pcnn {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_data_parser(subparsers)
    add_train_parser(subparsers)
    add_evaluate_parser(subparsers)
    add_sample_parser(subparsers)
    add_fid_parser(subparsers)
    add_export_parser(subparsers)
    add_pipeline_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
