"""Realistic, varied webshop data, the same for the same seed: customers from several
countries (names with ü, é, ø, å), products in several currencies, orders in every status."""

from __future__ import annotations

import datetime
import random
from typing import Any

from faker import Faker

from sync_sandbox.customwebshop.shop import Shop

LOCALES = {"de_DE": "EUR", "fr_FR": "EUR", "sv_SE": "SEK", "da_DK": "DKK", "en_GB": "GBP",
           "en_US": "USD", "de_CH": "CHF"}  # fmt: skip
CURRENCY_WEIGHTS = {"EUR": 6, "USD": 2, "GBP": 1, "SEK": 1, "DKK": 1, "CHF": 1}
STATUS_WEIGHTS = {
    "paid": 3,
    "shipped": 3,
    "delivered": 5,
    "pending": 1,
    "cancelled": 1,
    "refunded": 1,
}
CARRIERS = ("DHL", "UPS", "PostNord", "La Poste", "Royal Mail", "USPS")
PRODUCT_WORDS = ("Mug", "Notebook", "Backpack", "Lamp", "Scarf", "Poster", "Kettle", "Candle",
                 "Tote Bag", "Bottle", "Desk Mat", "Teapot", "Blanket", "Pen Set")  # fmt: skip


def parse_counts(text: str) -> dict[str, int]:
    """`customers=200,products=60,orders=400` -> counts by resource."""
    counts = {}
    for part in text.split(","):
        name, _, number = part.partition("=")
        if name.strip() not in ("customers", "products", "orders") or not number.strip().isdigit():
            raise ValueError(f"--generate expects customers=N,products=N,orders=N, not {text!r}")
        counts[name.strip()] = int(number)
    return counts


def generate(shop: Shop, counts: dict[str, int], seed: int) -> dict[str, int]:
    """Add the records, with timestamps spread over the past year in creation order."""
    rng = random.Random(seed)
    fakers = {locale: Faker(locale) for locale in LOCALES}
    for n, faker in enumerate(fakers.values()):
        faker.seed_instance(seed * 100 + n)
    total = sum(counts.values()) or 1
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=365)
    step = datetime.timedelta(days=360) / total  # ends days ago: shipped/delivered are past
    clock = iter(start + step * i for i in range(total + 1))
    made: dict[str, list[dict]] = {"customers": [], "products": [], "orders": []}
    with shop.store.transaction():
        for _ in range(counts.get("customers", 0)):
            locale = rng.choice(list(LOCALES))
            made["customers"].append(
                shop.create("customers", _customer(rng, fakers[locale], locale), next(clock))
            )
        for n in range(counts.get("products", 0)):
            made["products"].append(
                shop.create("products", _product(rng, n, fakers["en_GB"]), next(clock))
            )
        customers, products = made["customers"], made["products"]
        for _ in range(counts.get("orders", 0) if customers and products else 0):
            at = next(clock)
            made["orders"].append(shop.create("orders", _order(rng, customers, products, at), at))
        # ~3% soft deletes, so deletions have something to propagate; only customers without
        # orders, so every order still points at a live customer
        ordering = {order["customer_id"] for order in made["orders"]}
        idle = [c for c in customers if c["id"] not in ordering]
        for customer in rng.sample(idle, min(len(idle), -(-len(customers) // 30))):
            shop.delete("customers", customer["id"])
    return {resource: len(rows) for resource, rows in made.items()}


def _customer(rng: random.Random, faker: Faker, locale: str) -> dict:
    first, last = faker.first_name(), faker.last_name()
    local_part = f"{_ascii(first)}.{_ascii(last)}.{rng.randrange(10**6)}"
    customer: dict[str, Any] = {
        "email": f"{local_part}@{faker.free_email_domain()}",
        "first_name": first,
        "last_name": last if rng.random() > 0.05 else None,
        "company": faker.company() if rng.random() > 0.2 else None,
        "phone": faker.phone_number()[:50] if rng.random() > 0.3 else None,
    }
    if rng.random() > 0.1:
        customer["billing_address"] = {
            "line1": faker.street_address()[:150],
            "line2": f"Apt {rng.randrange(1, 60)}" if rng.random() < 0.15 else None,
            "city": faker.city()[:50],
            "state": faker.state()[:50]
            if locale in ("en_US", "de_DE") and hasattr(faker, "state")
            else None,
            "postal_code": faker.postcode(),
            "country": locale[-2:],
        }
    return customer


def _product(rng: random.Random, n: int, faker: Faker) -> dict:
    word = rng.choice(PRODUCT_WORDS)
    return {
        "sku": f"SKU-{n + 1:05d}",
        "name": f"{faker.color_name()} {word} {n + 1}",
        "description": faker.sentence(nb_words=10) if rng.random() > 0.2 else None,
        "price": rng.randrange(199, 49900, 10),
        "currency": rng.choices(list(CURRENCY_WEIGHTS), weights=list(CURRENCY_WEIGHTS.values()))[0],
        "active": rng.random() > 0.1,
        "shippable": rng.random() > 0.15,
        "weight_grams": rng.randrange(50, 5000) if rng.random() > 0.3 else None,
    }


def _order(
    rng: random.Random, customers: list[dict], products: list[dict], at: datetime.datetime
) -> dict:
    currency = rng.choice(sorted({p["currency"] for p in products}))
    offer = [p for p in products if p["currency"] == currency]
    lines = [{"product_id": p["id"], "quantity": rng.randint(1, 3)}
             for p in rng.sample(offer, min(len(offer), rng.randint(1, 4)))]  # fmt: skip
    customer = rng.choice(customers)
    status = rng.choices(list(STATUS_WEIGHTS), weights=list(STATUS_WEIGHTS.values()))[0]
    stamp = lambda hours: (at + datetime.timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # noqa: E731
    shippable = any(p["shippable"] for p in products if p["id"] in {x["product_id"] for x in lines})
    address = customer["billing_address"]
    order = {
        "customer_id": customer["id"],
        "status": status,
        "currency": currency,
        "line_items": lines,
        "shipping_total": rng.choice((0, 490, 590, 990)) if shippable else 0,
        "tax_total": rng.randrange(0, 2000),
        "placed_at": stamp(0),
        "note": "Please ring twice" if rng.random() < 0.05 else None,
    }
    if shippable and address:
        order["shipping_address"] = {"first_name": customer["first_name"],
                                     "last_name": customer["last_name"], **address}  # fmt: skip
    if status != "pending":
        order["paid_at"] = stamp(1)
    if status in ("shipped", "delivered", "refunded"):
        order.update(shipped_at=stamp(30), carrier=rng.choice(CARRIERS),
                     tracking_number=f"TRK{rng.randrange(10**9):09d}")  # fmt: skip
        order["tracking_url"] = f"https://track.example.com/{order['tracking_number']}"
    if status in ("delivered", "refunded"):
        order["delivered_at"] = stamp(70)
    if status == "cancelled":
        order["cancelled_at"] = stamp(5)
    return order


def _ascii(name: str) -> str:
    return "".join(c for c in name.lower() if c.isascii() and c.isalnum()) or "x"
