"""`guardian demo`: a live shop system on loopback, fault injection, and Guardian explaining it."""
