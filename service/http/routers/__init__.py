"""HTTP routers by topic. Each is a module with a `router`; `service.app.ROUTERS` lists them.

A router that needs the API key declares it once, as its route class
(`route_class=guarded_route(require_key)`), so a route added to it cannot forget it.
"""
