"""A noisy batch job (a red herring): runs one heavy query over and over, a few per second."""
from __future__ import annotations

import os
import random
import time

from demo.shoplib import name_process

name_process(os.environ.get("LAB_NAME", "batch-job"))

import psycopg  # noqa: E402

host, _, port = os.environ["LAB_PG"].rpartition(":")
with psycopg.connect(host=host, port=int(port), user="postgres", dbname=os.environ["LAB_DB"],
                     autocommit=True) as conn:
    while True:
        conn.execute(os.environ["LAB_SQL"]).fetchall()
        time.sleep(random.uniform(0.1, 0.5))
