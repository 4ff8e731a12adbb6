"""Create examples/manifests/data/app.db, the SQLite file cache.yml loads from."""

import sqlite3
from pathlib import Path

DB = Path(__file__).parent / "data" / "app.db"


def main() -> None:
    DB.parent.mkdir(exist_ok=True)
    with sqlite3.connect(DB) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS users"
            " (id INTEGER PRIMARY KEY, org_id INTEGER NOT NULL, name TEXT)"
        )
        conn.executemany(
            "INSERT OR REPLACE INTO users VALUES (?, ?, ?)",
            [(1, 10, "ada"), (2, 10, "grace"), (3, 20, "edsger")],
        )
    conn.close()
    print(f"wrote {DB}")


if __name__ == "__main__":
    main()
