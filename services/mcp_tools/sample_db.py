"""The sample database behind `database_query`: a small shop (products, customers, orders)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA = """
CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT NOT NULL, category TEXT NOT NULL,
                       price REAL NOT NULL);
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, country TEXT NOT NULL);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers,
                     product_id INTEGER NOT NULL REFERENCES products, quantity INTEGER NOT NULL,
                     ordered_on TEXT NOT NULL);
"""

PRODUCTS = [
    (1, "Trace Lens", "observability", 49.0),
    (2, "Span Counter", "observability", 19.5),
    (3, "Socket Sleeve", "networking", 12.0),
    (4, "Gateway Badge", "networking", 7.25),
    (5, "Token Jar", "llm", 3.99),
    (6, "Prompt Pad", "llm", 8.5),
]
CUSTOMERS = [(1, "Ada", "UK"), (2, "Linus", "FI"), (3, "Grace", "US"), (4, "Ken", "US")]
ORDERS = [
    (1, 1, 1, 2, "2026-01-05"),
    (2, 2, 3, 5, "2026-01-06"),
    (3, 3, 5, 10, "2026-01-07"),
    (4, 4, 2, 1, "2026-01-09"),
    (5, 1, 6, 3, "2026-02-01"),
    (6, 3, 1, 1, "2026-02-03"),
]


def ensure_sample_db(path: Path) -> Path:
    """Create the sample database at `path` unless it exists."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    with sqlite3.connect(tmp) as conn:
        conn.executescript(SCHEMA)
        conn.executemany("INSERT INTO products VALUES (?, ?, ?, ?)", PRODUCTS)
        conn.executemany("INSERT INTO customers VALUES (?, ?, ?)", CUSTOMERS)
        conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?)", ORDERS)
    conn.close()
    tmp.replace(path)
    return path
