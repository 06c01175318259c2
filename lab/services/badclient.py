"""A misbehaving client (a calm window's red herring): asks an entry service for a route it
does not have, a few times a second, and gets 4xx answers. Not an incident."""
from __future__ import annotations

import http.client
import os
import random
import time

from demo.shoplib import name_process

name_process(os.environ.get("LAB_NAME", "bad-client"))

port, path, rate = int(os.environ["LAB_PORT"]), os.environ.get("LAB_PATH", "/v0/legacy"), float(os.environ.get("LAB_RATE", "2"))
conn = None
while True:
    time.sleep(random.expovariate(rate))
    try:
        conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", path)
        conn.getresponse().read()
    except (OSError, http.client.HTTPException):
        if conn:
            conn.close()
        conn = None
