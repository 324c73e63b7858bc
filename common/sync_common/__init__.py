"""Pieces the four plugins share: HTTP client with retries, throttle, link store, dead-letter."""
