"""The relay: DynamoDB stream INSERTs -> FIFO queue -> scheduled, rate-limited drain to a
third-party HTTP API, delivered once each as far as the API can tell, in order per group.

`stream` is the relay function's core, `drain` the drain function's; `filters` holds the one
event-filter pattern the stack and the local runtime both apply.
"""
