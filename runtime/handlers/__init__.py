"""Lambda entry points: each parses its event, builds settings and clients lazily on first
call, calls one core function and shapes the response."""
