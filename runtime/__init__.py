"""sluice runtime: the code every Lambda runs, and the local runtime drives.

Importing any module of this package never needs AWS or Redis: clients are made lazily or
injected, and settings are validated when a handler first runs.
"""

__version__ = "0.1.0"
