"""`chargebee-sandbox`: serve the Chargebee API emulator at http://HOST:PORT/api/v2."""

from __future__ import annotations

import argparse

from sync_sandbox.chargebee.responses import create_app
from sync_sandbox.chargebee.store import Store
from sync_sandbox.server import add_common_arguments, knobs_from_arguments, serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="chargebee-sandbox", description=__doc__)
    add_common_arguments(parser, default_port=8766)
    parser.add_argument("--site", default="sandbox-test", help="the emulated site's name")
    parser.add_argument(
        "--business-entities",
        default="default,eu,us",
        help="comma-separated business entity ids of the site; the first is its default",
    )
    args = parser.parse_args(argv)
    entities = [entity.strip() for entity in args.business_entities.split(",") if entity.strip()]
    app = create_app(Store(args.db), args.api_key, entities, knobs_from_arguments(args), args.site)
    serve(app, args.host, args.port, f"Chargebee emulator, site {args.site}")


if __name__ == "__main__":
    main()
