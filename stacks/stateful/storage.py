"""The buckets: the results bucket the sinks write, the server access log bucket, and the
relay's failure bucket. Private, TLS-only, owner-enforced and versioned; their names and ARNs
are published as outputs the stateless stack reads (stacks/references.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_s3 as s3

from stacks.config import EnvironmentConfig
from stacks.nag import Ack, acknowledge
from stacks.references import publish_bucket


@dataclass(frozen=True)
class Buckets:
    access_logs: s3.Bucket
    results: s3.Bucket


@dataclass(frozen=True)
class BucketFactory:
    """Creates buckets in `stack`'s own scope, all alike but for what each call names."""

    stack: cdk.Stack
    config: EnvironmentConfig
    removal_policy: cdk.RemovalPolicy

    def bucket(
        self, construct_id: str, *, lifecycle_rules: Sequence[s3.LifecycleRule] = (), **kwargs: object
    ) -> s3.Bucket:
        """Private, TLS-only, owner-enforced, versioned (an overwritten or deleted object can be
        recovered for `storage.noncurrent_version_expire_days`); named by CloudFormation (a fixed
        name would collide when a retained bucket outlives its stack and the stack is created
        again)."""
        keep_versions = cdk.Duration.days(self.config.storage.noncurrent_version_expire_days)
        return s3.Bucket(
            self.stack,
            construct_id,
            versioned=True,
            lifecycle_rules=[
                *lifecycle_rules,
                s3.LifecycleRule(
                    id="expire-noncurrent-versions", noncurrent_version_expiration=keep_versions
                ),
            ],
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            removal_policy=self.removal_policy,
            auto_delete_objects=not self.config.retain_data,
            **kwargs,  # type: ignore[arg-type]
        )

    def buckets(self) -> Buckets:
        storage = self.config.storage
        access_logs = self.bucket(
            "AccessLogs",
            # Server access log delivery supports only SSE-S3 on the target bucket.
            encryption=s3.BucketEncryption.S3_MANAGED,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-logs", expiration=cdk.Duration.days(storage.access_log_expire_days)
                )
            ],
        )
        acknowledge(
            access_logs,
            Ack("AwsSolutions-S1", "this is the server access log destination; logging it would recurse"),
        )
        expiration = (
            cdk.Duration.days(storage.results_expire_days)
            if storage.results_expire_days is not None
            else None
        )
        results = self.bucket(
            "Results",
            encryption=s3.BucketEncryption.S3_MANAGED,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="results/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="abort-incomplete-uploads",
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(1),
                ),
                s3.LifecycleRule(
                    id="age-results",
                    transitions=[
                        s3.Transition(
                            storage_class=s3.StorageClass.INFREQUENT_ACCESS,
                            transition_after=cdk.Duration.days(storage.results_infrequent_access_days),
                        )
                    ],
                    expiration=expiration,
                ),
            ],
        )
        publish_bucket(self.stack, "Results", results, "the sinks' results bucket")
        return Buckets(access_logs=access_logs, results=results)

    def relay_failures(self, access_logs: s3.IBucket) -> s3.Bucket:
        """Stream records the relay could not pass on, as Lambda writes them. A bucket of their
        own: nothing else may write there, so a failure record is never overwritten."""
        failures = self.bucket(
            "RelayFailures",
            encryption=s3.BucketEncryption.S3_MANAGED,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="relay-failures/",
        )
        publish_bucket(self.stack, "RelayFailures", failures, "stream records the relay could not pass on")
        return failures
