"""tap-chargebee: customers, items, item prices and orders of a Chargebee site (API v2)."""
