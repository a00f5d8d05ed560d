"""The store contract: what every storage backend must do, run against each of them.

Each test takes `backend` (one per storage backend; SQLite now, see `backends.py`) or `store`
(a store opened on it). Only the storage interface is used, so a new backend joins by being
listed in `BACKENDS`; passing this suite is what makes it a backend.
"""
