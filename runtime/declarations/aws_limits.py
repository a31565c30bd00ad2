"""AWS service limits the settings and the stacks are checked against, each stated once.

Fixed by AWS (documented quotas that cannot be raised), so a value beyond one fails at synth
with the setting's name rather than at deploy or at run time."""

from __future__ import annotations

# SQS
SQS_MAX_MESSAGE_BYTES = 1_048_576  # MaximumMessageSize (and one SendMessage's payload)
SQS_MIN_MESSAGE_BYTES = 1024
SQS_MAX_RECEIVE_COUNT = 1000  # a redrive policy's maxReceiveCount
SQS_MAX_VISIBILITY_S = 43_200  # VisibilityTimeout / ChangeMessageVisibility: 12 hours
SQS_MIN_RETENTION_S = 60
SQS_MAX_RETENTION_S = 1_209_600  # MessageRetentionPeriod: 14 days
SQS_MAX_DELAY_S = 900  # DelaySeconds: 15 minutes
SQS_MAX_WAIT_S = 20  # ReceiveMessage WaitTimeSeconds (long polling)
SQS_MESSAGE_GROUP_ID_MAX_CHARS = 128
# A Lambda SQS event source takes more than this many messages per batch only with a window.
SQS_STANDARD_MAX_BATCH_WITHOUT_WINDOW = 10
SQS_FIFO_MAX_BATCH = 10

# Lambda
LAMBDA_MAX_TIMEOUT_S = 900
LAMBDA_MIN_MEMORY_MB = 128
LAMBDA_MAX_MEMORY_MB = 10_240
# Lambda allocates CPU in proportion to memory: 1,769 MB is one full vCPU, and its maximum
# memory, 10,240 MB, is documented as six.
LAMBDA_MB_PER_VCPU = 1769
LAMBDA_MAX_VCPUS = 6
LAMBDA_ENVIRONMENT_LIMIT_BYTES = 4096  # all of a function's environment variables together

# API Gateway: the HTTP API ends every integration at 30 s, fixed.
HTTP_API_TIMEOUT_S = 30

# S3: a SigV4 presigned URL lives at most 7 days.
S3_MAX_PRESIGN_TTL_S = 604_800

# DynamoDB streams keep records 24 hours; an event source mapping's MaximumRecordAgeInSeconds
# is at most 7 days.
STREAM_MAX_RECORD_AGE_S = 604_800

# CloudWatch Logs: the retention periods a log group accepts.
LOG_RETENTION_DAYS = (
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
)
