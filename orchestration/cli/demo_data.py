"""Deterministic, messy sample files for the demo workflow (same seed, same bytes)."""

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


NICKNAMES = {"james": "Jim", "robert": "Bob", "john": "Jack", "michael": "Mike",
             "william": "Bill", "richard": "Rick", "joseph": "Joe", "david": "Dave",
             "elizabeth": "Liz", "patricia": "Trish", "jennifer": "Jenny", "susan": "Sue",
             "barbara": "Barb", "jessica": "Jess", "mary": "Molly", "linda": "Lindy"}
STORE_FIRST = ["Olivia", "Noah", "Emma", "Liam", "Ava", "Ethan", "Mia", "Lucas", "Zoe", "Owen"]


def _digits(phone: str) -> str:
    digits = "".join(c for c in phone if c.isdigit())
    return digits[-10:] if len(digits) >= 10 else ""


def _typo(rng: random.Random, word: str) -> str:
    """One adjacent transposition, as a cashier's keyboard makes them."""
    if len(word) < 4:
        return word
    i = rng.randint(1, len(word) - 3)
    return word[:i] + word[i + 1] + word[i] + word[i + 2:]


def _loyalty(landing: Path, people: list[dict[str, str]], store_only: int = 400,
             households: int = 60) -> int:
    """loyalty_members.csv: the stores' loyalty export. About 45% of the web shop's customers
    are members too, written the way a store till writes them: nicknames, typos, a given name
    and surname swapped, another or no e-mail, the phone in another format, a new address.
    Others are store-only members, some of them sharing a web customer's household phone and
    surname (a different person, who must stay apart)."""
    rng = random.Random(20261102)
    rows = []
    for person in people:
        if rng.random() >= 0.45:
            continue
        first, last = person["first"].strip(), person["last"].strip()
        roll = rng.random()
        if roll < 0.25 and first.lower() in NICKNAMES:
            first = NICKNAMES[first.lower()]
        elif roll < 0.35:
            first = _typo(rng, first)
        elif roll < 0.38:
            first, last = last, first
        if rng.random() < 0.05:
            last = _typo(rng, last)
        roll = rng.random()
        email = (person["email"] if roll < 0.6 else "" if roll < 0.8 else
                 f"{first.lower()}.{last.lower()}.{rng.randint(10000, 99999)}@mail.example.net")
        digits, roll = _digits(person["phone"]), rng.random()
        phone = ("" if not digits or roll < 0.15 else
                 f"({digits[:3]}) {digits[3:6]}-{digits[6:]}" if roll < 0.85 else
                 f"{rng.randint(201, 989)}{rng.randint(200, 999)}{rng.randint(0, 9999):04d}")
        born = person["born"] if person["born"] not in ("", "unknown") else ""
        postal = person["postal"] if rng.random() < 0.7 else f"{rng.randint(1001, 99950):05d}"
        rows.append([first, last, email, phone, born, postal])
    for _ in range(store_only):
        first, last = rng.choice(STORE_FIRST), rng.choice(LAST).strip()
        rows.append([first, last, rng.choice(["", f"{first.lower()}.{last.lower()}"
                                                  f"{rng.randint(100, 999)}@example.org"]),
                     _phone(rng), _birth_date(rng), _postal(rng)])
    with_phone = [p for p in people if _digits(p["phone"])]
    rows.extend([rng.choice(STORE_FIRST), person["last"].strip(), "", person["phone"],
                 (date(1950, 1, 1) + timedelta(days=rng.randint(0, 365 * 50))).isoformat(),
                 person["postal"]]
                for person in rng.sample(with_phone, households))  # a partner or child at home
    rng.shuffle(rows)
    with open(landing / "loyalty_members.csv", "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["Member", "Given Name", "Family Name", "Email", "Mobile", "DOB",
                         "Postcode", "Enrolled", "Store Spend"])
        for n, (first, last, email, phone, born, postal) in enumerate(rows, start=1):
            enrolled = datetime(2021, 1, 1) + timedelta(minutes=rng.randint(0, 60 * 24 * 1500))
            spend = round(rng.expovariate(1 / 120), 2)
            writer.writerow([f"L{n:06d}", first, last, email, phone, born, postal,
                             enrolled.strftime("%Y-%m-%d %H:%M:%S"), f"{spend:.2f}"])
    return len(rows)


def generate(landing: Path, days: list[date], customers: int = 2000, products: int = 150,
             orders_per_day: int = 400) -> dict[str, int]:
    """Write customers.csv, loyalty_members.csv, products.jsonl and
    orders/orders_YYYYMMDD.csv.gz under `landing`."""
    rng = random.Random(20261101)
    people: list[dict[str, str]] = []
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
            phone, born, postal = _phone(rng), _birth_date(rng), _postal(rng)
            people.append({"first": first, "last": last, "email": email, "phone": phone,
                           "born": born, "postal": postal})
            writer.writerow([f"C{n:05d}", email, phone, f" {first}", last, born, postal,
                             rng.choice(["us", "US", " us"]),
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
    members = _loyalty(landing, people)
    return {"customers": customers, "loyalty_members": members, "products": products,
            "orders": order_id}
