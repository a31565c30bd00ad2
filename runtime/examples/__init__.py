"""Example routers: hello/world, the stock-image state machine and enrich-and-store (ingest)."""
