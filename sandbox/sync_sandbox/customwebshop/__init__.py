"""A reference implementation of the Customwebshop API (the contract the sync expects)."""
