"""loadtests: load generator and side-by-side reports over the HTTP API only (httpx)."""
