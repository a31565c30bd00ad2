"""The embedded local runtime: real redis-server and moto server, the real handlers, emulated
triggers. Never shipped to Lambda."""
