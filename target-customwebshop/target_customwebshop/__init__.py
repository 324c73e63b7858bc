"""target-customwebshop: writes Chargebee records, mapped to the webshop's shape, into the
Customwebshop API through the link store."""
