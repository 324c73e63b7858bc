"""`customwebshop-sandbox`: serve the Customwebshop reference API at http://HOST:PORT/api/v1."""

from __future__ import annotations

import argparse

from sync_sandbox.customwebshop.app import create_app
from sync_sandbox.customwebshop.generate import generate, parse_counts
from sync_sandbox.customwebshop.shop import Shop
from sync_sandbox.customwebshop.store import RESOURCES, Store
from sync_sandbox.server import add_common_arguments, knobs_from_arguments, serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="customwebshop-sandbox", description=__doc__)
    add_common_arguments(parser, default_port=8765)
    parser.add_argument(
        "--generate",
        type=parse_counts,
        metavar="customers=N,products=N,orders=N",
        help="fill an empty database with realistic data first",
    )
    parser.add_argument("--generate-only", action="store_true", help="generate, then exit")
    args = parser.parse_args(argv)
    shop = Shop(Store(args.db))
    if args.generate and not any(shop.store.count(r) for r in RESOURCES):
        print(
            "generated",
            generate(shop, args.generate, 42 if args.seed is None else args.seed),
            flush=True,
        )
    if not args.generate_only:
        serve(create_app(shop, args.api_key, knobs_from_arguments(args)), args.host, args.port,
              "Customwebshop reference API")  # fmt: skip


if __name__ == "__main__":
    main()
