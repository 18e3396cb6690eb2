"""The HTTP edge: the server, middleware, route class, auth, body and query parsing, delivery and
the routers; adapters over the data plane."""
