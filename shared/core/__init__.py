"""The lowest layer: what every other part of smsgw may use and that uses nothing of smsgw.

`errors` (the exception hierarchy), `db` (pools, connections, migrations, schema checks),
`logging` (one JSON line per event), `aio` (the event loop choice), `embedded_pg` (a Postgres
cluster from the system's binaries for `smsgw up`, the tests and the benchmarks).
"""
