"""What the tests share, one module per concern: servers and AWS clients (`aws`), canonical
Lambda events (`events`), the router harness (`pipeline`), jobs (`jobs`), ingest (`ingest`),
the relay (`relay`) and synthesized stages (`stacks`, `optional_systems`). Tests import
helpers from here, never from another test module."""
