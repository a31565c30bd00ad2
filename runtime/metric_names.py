"""Every metric name sluice emits (namespace `sluice`, Powertools EMF), in one place: the
runtime emits them, the stacks' alarms and dashboards watch them, the operator CLI reads them
and the tests check them by these names. No imports, so synth and tooling can read it."""

from __future__ import annotations

# -- ingest: the loader -----------------------------------------------------------------------
RECORDS_SENT = "RecordsSent"
FILES_LOADED = "FilesLoaded"
REJECTED_FILES = "RejectedFiles"
HALTED_BATCHES = "HaltedBatches"  # also the checker's count of halted batches it found
FAILED_BATCH_RUNS = "FailedBatchRuns"
ENVIRONMENT_ERRORS = "EnvironmentErrors"  # the environment refuses the loader (alarmed)

# -- ingest: the checker ----------------------------------------------------------------------
INBOX_DEPTH = "InboxDepth"
OLDEST_FILE_AGE_SECONDS = "OldestFileAgeSeconds"
BATCHES_IN_FLIGHT = "BatchesInFlight"
RESUMABLE_BATCHES = "ResumableBatches"
HALTED_BATCHES_TOTAL = "HaltedBatchesTotal"
REJECTED_FILES_TOTAL = "RejectedFilesTotal"
STUCK_INBOX_FILES = "StuckInboxFiles"  # unreadable, or modified in the future

# -- ingest: the archiver ---------------------------------------------------------------------
BATCHES_ARCHIVED = "BatchesArchived"
LATE_WRITES = "LateWrites"
STRAYS_RETURNED = "StraysReturned"
FILES_DELETED = "FilesDeleted"

# -- the router (per batch) -------------------------------------------------------------------
MESSAGES = "Messages"
SKIPPED_DONE = "SkippedDone"
BOUNCED = "Bounced"
FOLLOWED_PLANS = "FollowedPlans"
PLAN_MISMATCH = "PlanMismatch"
REDIS_UNAVAILABLE = "RedisUnavailable"
REDRIVEN = "Redriven"
LEDGER_READS = "LedgerReads"
QUARANTINED = "Quarantined"
LEDGER_WRITES = "LedgerWrites"
ITEMS_NEXT = "ItemsNext"
ITEMS_DONE = "ItemsDone"
ITEMS_RETRY = "ItemsRetry"
ITEMS_CONTINUED = "ItemsContinued"
ITEMS_POISONED = "ItemsPoisoned"
ITEMS_BY_OUTCOME = {
    "next": ITEMS_NEXT,
    "done": ITEMS_DONE,
    "retry": ITEMS_RETRY,
    "continued": ITEMS_CONTINUED,
    "poisoned": ITEMS_POISONED,
}
# Per step (dimension `step`): transitions that succeeded, and those that failed.
TRANSITIONS = "Transitions"
TRANSITION_FAILURES = "TransitionFailures"

# -- jobs ---------------------------------------------------------------------------------------
JOBS_DONE = "JobsDone"
JOBS_FAILED = "JobsFailed"
JOBS_PENDING = "JobsPending"
JOBS_REFUSED = "JobsRefused"
JOBS_UNKNOWN = "JobsUnknown"
JOBS_UNAVAILABLE = "JobsUnavailable"
JOBS_BY_OUTCOME = {
    "done": JOBS_DONE,
    "failed": JOBS_FAILED,
    "pending": JOBS_PENDING,
    "refused": JOBS_REFUSED,
    "unknown": JOBS_UNKNOWN,
    "unavailable": JOBS_UNAVAILABLE,
}
JOBS_UNANNOUNCED = "JobsUnannounced"  # outcome stored in S3, Redis unreachable

# -- the relay ----------------------------------------------------------------------------------
RELAY_SENT = "RelaySent"  # stream records put on the FIFO queue
RELAY_FAILED_RECORDS = "RelayFailedRecords"  # stream batches stopped at a record (Lambda retries it)
RELAY_API_CALLS = "RelayApiCalls"
RELAY_API_ERRORS = "RelayApiErrors"  # 5xx, 429, timeouts and connection failures
RELAY_API_REJECTED = "RelayApiRejected"  # non-retryable 4xx, moved to the DLQ
RELAY_DELIVERED = "RelayDelivered"
RELAY_BREAKER_OPEN = "RelayBreakerOpen"
