"""Singer tap for the Customwebshop API: customers, products, orders, incremental by updated_at."""
