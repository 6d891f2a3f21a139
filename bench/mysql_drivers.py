"""asyncmy against aiomysql: the same statements through each driver, on one MariaDB server.

    python bench/mysql_drivers.py [--rounds 2000] [--concurrency 16] [--json out.json]

Why: the operator uses aiomysql (the design's driver); asyncmy, its default before, is only
worth a second driver if it is faster. asyncmy is not a dependency, and Tortoise takes it
whenever it is installed, so run this in an environment of its own::

    python3 -m venv .venv-drivers && .venv-drivers/bin/pip install -c requirements.lock -e . asyncmy
    .venv-drivers/bin/python bench/mysql_drivers.py

Each driver runs, against the same throwaway server:

* ``watermark``: the sync's idle tick, one aggregate ``SELECT`` (``sync_reads``), sequentially;
* ``deploy-tx``: a deploy's transaction shape, ``BEGIN; SELECT … FOR UPDATE; UPDATE; COMMIT``,
  sequentially;
* ``concurrent``: the watermark from ``--concurrency`` tasks at once over a pool of that size.

It prints microseconds per operation and the ratio aiomysql / asyncmy (above 1: asyncmy is
faster). A shared machine makes single figures noisy; the ratio, measured in the same run,
is the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomysql
import asyncmy

from mlserve.operator.dev.mariadb import start_mariadb

WATERMARK = "SELECT (SELECT COUNT(*) FROM t) AS n, (SELECT MAX(id) FROM t) AS top, (SELECT SUM(v) FROM t) AS total"


async def _pool(driver: Any, server: Any, database: str, size: int) -> Any:
    return await driver.create_pool(
        host=server.host,
        port=server.port,
        user=server.user,
        password=server.password,
        db=database,
        minsize=size,
        maxsize=size,
        autocommit=True,
    )


async def _watermark(conn: Any) -> None:
    async with conn.cursor() as cursor:
        await cursor.execute(WATERMARK)
        await cursor.fetchall()


async def _deploy_tx(conn: Any, row: int) -> None:
    async with conn.cursor() as cursor:
        await cursor.execute("BEGIN")
        await cursor.execute("SELECT id, v FROM t WHERE id = %s FOR UPDATE", (row,))
        await cursor.fetchall()
        await cursor.execute("UPDATE t SET v = v + 1 WHERE id = %s", (row,))
        await cursor.execute("COMMIT")


async def measure(driver: Any, server: Any, database: str, rounds: int, concurrency: int) -> dict[str, float]:
    pool = await _pool(driver, server, database, concurrency)
    try:
        figures: dict[str, float] = {}
        async with pool.acquire() as conn:
            for name, work in (
                ("watermark", lambda i: _watermark(conn)),
                ("deploy-tx", lambda i: _deploy_tx(conn, i % 50 + 1)),
            ):
                started = time.perf_counter()
                for i in range(rounds):
                    await work(i)
                figures[name] = (time.perf_counter() - started) / rounds * 1e6

        async def one() -> None:
            async with pool.acquire() as conn:
                await _watermark(conn)

        started = time.perf_counter()
        for _ in range(rounds // concurrency):
            await asyncio.gather(*(one() for _ in range(concurrency)))
        figures["concurrent"] = (time.perf_counter() - started) / (rounds // concurrency * concurrency) * 1e6
        return figures
    finally:
        pool.close()
        await pool.wait_closed()


async def main(rounds: int, concurrency: int) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="mlserve-drivers-") as folder:
        server = start_mariadb(Path(folder))
        try:
            database = await server.create_database("drivers")
            conn = await asyncmy.connect(
                host=server.host,
                port=server.port,
                user=server.user,
                password=server.password,
                db=database,
                autocommit=True,
            )
            async with conn.cursor() as cursor:
                await cursor.execute("CREATE TABLE t (id INT PRIMARY KEY AUTO_INCREMENT, v INT NOT NULL) ENGINE=InnoDB")
                await cursor.executemany("INSERT INTO t (v) VALUES (%s)", [(i,) for i in range(1000)])
            conn.close()
            results = {}
            for name, driver in (("asyncmy", asyncmy), ("aiomysql", aiomysql)):
                await measure(driver, server, database, max(1, rounds // 10), concurrency)  # warm up
                results[name] = await measure(driver, server, database, rounds, concurrency)
            return results
        finally:
            server.stop()


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results = asyncio.run(main(args.rounds, args.concurrency))
    print(f"{'operation':<12} {'asyncmy µs':>11} {'aiomysql µs':>12} {'aiomysql/asyncmy':>17}")
    for operation in ("watermark", "deploy-tx", "concurrent"):
        fast, slow = results["asyncmy"][operation], results["aiomysql"][operation]
        print(f"{operation:<12} {fast:>11.0f} {slow:>12.0f} {slow / fast:>17.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(run())
