"""HTTP layer: routers, schemas, auth, problem+json errors. Logic lives in ``app.services``."""
