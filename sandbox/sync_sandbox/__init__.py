"""Local stand-ins for the two systems this product syncs: a Customwebshop reference API and a
Chargebee API v2 emulator. Used by the demo, the tests and the benchmarks."""
