"""Names a deployed resource and the code that uses it must agree on: the ledger's key schema,
the jobs' object prefixes, the relay source table's keys. The stacks read them at synth, the
runtime at run time."""

from __future__ import annotations

# The ledger table (runtime/pipeline/ledger.py writes it): one string partition key and an
# epoch-seconds TTL.
LEDGER_PARTITION_KEY = "pk"
LEDGER_TTL_ATTRIBUTE = "expires_at"

# The relay source table is the user's; its stream's keys group the relay's messages.
SOURCE_PARTITION_KEY = "pk"
SOURCE_SORT_KEY = "sk"

# Jobs live under this prefix of the results bucket; acceptance records under its `accepted/`.
JOBS_RESULTS_PREFIX = "jobs/"
ACCEPTED_FOLDER = "accepted/"

# The stateless stack's output naming the operations function's URL (`sluice --env` reads it).
OPERATIONS_URL_OUTPUT = "OperationsFunctionUrl"
