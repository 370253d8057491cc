"""Reads a local archive's `posts` dataset with two third-party readers and
prints what each sees, as JSON, for tests/third_party_readers.rs to compare.

usage: read_archive.py ARCHIVE_DIR
"""
import json
import sys

import duckdb
import pyarrow.dataset as ds

root = sys.argv[1] + "/posts"

# pyarrow: Hive partitioning from the directory names.
table = ds.dataset(root, format="parquet", partitioning="hive").to_table()
types = {f.name: str(f.type) for f in table.schema}
rows = table.sort_by([("log_partition", "ascending"), ("log_offset", "ascending")]).to_pylist()
pa_rows = [
    {
        "offset": r["log_offset"],
        "key": r["key"],
        "kind": r["kind"],
        "tags": r["tags"],
        "mentions": [m["acct"] for m in (r["mentions"] or [])],
        "created_at": r["created_at"].isoformat() if r["created_at"] else None,
        "date": str(r["date"]),
        "hour": r["hour"],
    }
    for r in rows
]

# DuckDB: its own Parquet reader, Hive partitioning, SQL over the nested columns.
# `hour=08` keeps its leading zero (directories sort by name), which DuckDB's
# type inference leaves as text: hive_types names it an integer.
con = duckdb.connect()
q = f"""
SELECT log_offset, key, kind, len(tags) AS n_tags, hour, typeof(created_at) AS created_type,
       typeof(tags) AS tags_type, typeof(date) AS date_type
FROM read_parquet('{root}/**/*.parquet', hive_partitioning = true, hive_types = {{'hour': INTEGER}})
ORDER BY log_partition, log_offset
"""
duck_rows = [
    {"offset": r[0], "key": r[1], "kind": r[2], "n_tags": r[3], "hour": r[4], "created_type": r[5], "tags_type": r[6], "date_type": r[7]}
    for r in con.execute(q).fetchall()
]
posts_per_hour = con.execute(
    f"SELECT hour, count(*) FROM read_parquet('{root}/**/*.parquet', hive_partitioning = true, hive_types = {{'hour': INTEGER}}) "
    "WHERE kind <> 'deleted' GROUP BY hour ORDER BY hour"
).fetchall()
print(json.dumps({"pyarrow": pa_rows, "pyarrow_types": types, "duckdb": duck_rows, "posts_per_hour": posts_per_hour}))
