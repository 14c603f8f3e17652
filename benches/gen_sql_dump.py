"""Write SIZE bytes of an SQL dump (mysqldump-style INSERTs) to PATH.

Usage: python3 gen_sql_dump.py PATH SIZE

For benches/mount.sh: text that zstd compresses 3-4x, like a hosting
account's database dump. Rows are drawn at random from a pool and numbered,
so no two chunks repeat (the backup would otherwise deduplicate them and
the read would measure the cache, not decompression).
"""

import random
import sys

WORDS = ["alpha", "beta", "gamma", "delta", "hosting", "account", "mail", "order", "invoice",
         "customer", "product", "paid", "pending", "shipped", "berlin", "paris", "london", "madrid"]


def make_row(rnd):
    word = lambda: rnd.choice(WORDS)  # noqa: E731
    return "'%s %s','%s%d@example.%s',%d.%02d,'2026-%02d-%02d %02d:%02d:%02d','%s')" % (
        word().title(), word().title(), word(), rnd.randint(1, 9999), rnd.choice(["com", "org", "net"]),
        rnd.randint(1, 99999), rnd.randint(0, 99), rnd.randint(1, 12), rnd.randint(1, 28),
        rnd.randint(0, 23), rnd.randint(0, 59), rnd.randint(0, 59), word())


def main(path, size):
    rnd = random.Random(1)
    pool = [make_row(rnd) for _ in range(100_000)]
    written, next_id = 0, 1
    with open(path, "w") as out:
        while written < size:
            rows = rnd.choices(pool, k=200)
            values = ",".join("(%d,%s" % (next_id + i, row) for i, row in enumerate(rows))
            line = "INSERT INTO `orders` VALUES " + values + ";\n"
            next_id += len(rows)
            line = line[: size - written]
            out.write(line)
            written += len(line)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
