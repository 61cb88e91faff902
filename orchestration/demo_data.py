"""Deterministic, messy sample files for the demo workflow (same seed, same bytes)."""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
from datetime import date, datetime, timedelta
from pathlib import Path

FIRST = ["james", "MARY", "Robert", "patricia", "John ", "jennifer", "Michael", "LINDA",
         "david", "Elizabeth", "william", "barbara", "Richard", "susan", "joseph", "Jessica"]
LAST = ["smith", "JOHNSON", "Williams", "brown", "Jones ", "garcia", "MILLER", "davis",
        "Rodriguez", "martinez", "hernandez", "LOPEZ", "gonzalez", "Wilson", "anderson"]
DOMAINS = ["example.com", "Mail.Example.ORG", "shop.example.net"]
CATEGORIES = ["Outerwear", "FOOTWEAR", "accessories", "Tops", "Bottoms"]


def _phone(rng: random.Random) -> str:
    a, b, c = rng.randint(201, 989), rng.randint(200, 999), rng.randint(0, 9999)
    return rng.choice([f"({a}) {b}-{c:04d}", f"{a}.{b}.{c:04d}", f"+1 {a} {b} {c:04d}",
                       f"{a}{b}{c:04d}", f"1-{a}-{b}-{c:04d}", f"{b}-{c:04d}", ""])


def _birth_date(rng: random.Random) -> str:
    day = date(1950, 1, 1) + timedelta(days=rng.randint(0, 365 * 50))
    return rng.choice([day.isoformat(), day.strftime("%m/%d/%Y"), day.strftime("%d.%m.%Y"),
                       "", "unknown"])


def _postal(rng: random.Random) -> str:
    zip5 = rng.randint(1001, 99950)
    return rng.choice([f"{zip5:05d}", str(zip5), f" {zip5:05d} ",
                       f"{zip5:05d}{rng.randint(0, 9999):04d}"])


def generate(landing: Path, days: list[date], customers: int = 2000, products: int = 150,
             orders_per_day: int = 400) -> dict[str, int]:
    """Write customers.csv, products.jsonl and orders/orders_YYYYMMDD.csv.gz under `landing`."""
    rng = random.Random(20261101)
    (landing / "orders").mkdir(parents=True, exist_ok=True)
    with open(landing / "customers.csv", "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["Customer ID", "E-mail", "Phone", "First Name", "Last Name",
                         "Birth Date", "ZIP", "Country", "Signup"])
        for n in range(1, customers + 1):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            email = f"{first.strip()}.{last.strip()}{n}@{rng.choice(DOMAINS)}"
            email = rng.choice([email, email.upper(), f"  {email} ", email.replace("@", " at ")
                                if n % 97 == 0 else email])
            signup = datetime(2020, 1, 1) + timedelta(minutes=rng.randint(0, 60 * 24 * 1800))
            writer.writerow([f"C{n:05d}", email, _phone(rng), f" {first}", last,
                             _birth_date(rng), _postal(rng), rng.choice(["us", "US", " us"]),
                             signup.strftime("%Y-%m-%d %H:%M:%S")])
    prices = {}
    with open(landing / "products.jsonl", "w", encoding="utf-8") as out:
        for n in range(1, products + 1):
            price = round(rng.uniform(9, 240), 2)
            prices[f"SKU-{n:04d}"] = price
            out.write(json.dumps({"sku": f"SKU-{n:04d}", "name": f"Item {n}",
                                  "category": rng.choice(CATEGORIES),
                                  "price": rng.choice([f"{price}", f"${price}"])}) + "\n")
    order_id = 0
    for day in days:
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter=";")
        writer.writerow(["order_id", "customer_id", "sku", "qty", "unit_price", "order_ts"])
        for _ in range(orders_per_day):
            order_id += 1
            sku = rng.choice(list(prices))
            # A loyal tenth of the customers place most orders: they make the segment.
            customer = rng.randint(1, customers // 10) if rng.random() < 0.6 else \
                rng.randint(1, customers)
            at = datetime.combine(day, datetime.min.time()) + timedelta(
                seconds=rng.randint(0, 86399))
            writer.writerow([f"O{order_id:07d}", f"C{customer:05d}", sku, rng.randint(1, 4),
                             f"{prices[sku]:.2f}", at.strftime("%Y-%m-%d %H:%M:%S")])
        with gzip.GzipFile(landing / "orders" / f"orders_{day:%Y%m%d}.csv.gz", "wb",
                           mtime=0) as out:
            out.write(buffer.getvalue().encode("utf-8"))
    return {"customers": customers, "products": products, "orders": order_id}
