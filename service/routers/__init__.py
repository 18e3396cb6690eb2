"""HTTP routers by topic. Each is a module with a `router`; `service.app.ROUTERS` lists them.

A router that needs the API key declares it once, as a router-level dependency
(`dependencies=[Depends(require_key)]`), so a route added to it cannot forget it.
"""
