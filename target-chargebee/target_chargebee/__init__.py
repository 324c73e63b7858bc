"""Singer target that upserts webshop records, already in Chargebee shape, into Chargebee."""
