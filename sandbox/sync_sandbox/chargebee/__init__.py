"""A local emulator of the Chargebee API v2 (Product Catalog 2.0) for what the sync uses."""
