"""The deploy rehearsal's moto server: moto, plus the few test-only patches a real CDK deploy needs.

    python -m tests.deploy.moto_launcher -p PORT [-H HOST]

Plain moto cannot take a `cdk deploy`. Each gap below was found by running the real CDK CLI
against it; each has one small patch function, named after the gap, checked against the pinned
moto version (`PINNED_MOTO`). Upgrading moto fails the launcher's start until every patch has
been re-checked against the new version (and the pin here and in requirements-dev.txt moved).

Resource types moto has no CloudFormation model for are *recorded*, not created: the template's
resolved properties are kept in a registry (a JSON file named by `SLUICE_MOTO_RECORD_FILE`, read
back by the rehearsal), and `Ref` / `Fn::GetAtt` on them answer values of the documented shape,
so whatever references them resolves as in CloudFormation. `RECORD_ONLY` is the fixed list; the
README ("Testing the deploy") says why each is there.

Nothing here is used outside the rehearsal and its tests.
"""

from __future__ import annotations

import argparse
import json
import os
import string
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

from local.moto_server import require_moto

PINNED_MOTO = "5.2.5"
RECORD_FILE_ENV = "SLUICE_MOTO_RECORD_FILE"

# Types moto 5.2.5 has no CloudFormation model for (it drops them with a warning, so `Ref` /
# `Fn::GetAtt` on them fails), and Lambda-backed custom resources (moto would invoke their
# handler in Docker). CDK::Metadata is CloudFormation's own bookkeeping; SecretsManager::Secret
# has an API model in moto but no CloudFormation model.
RECORD_ONLY = (
    "AWS::ApiGatewayV2::Api",
    "AWS::ApiGatewayV2::Integration",
    "AWS::ApiGatewayV2::Route",
    "AWS::ApiGatewayV2::Stage",
    "AWS::CloudWatch::Alarm",
    "AWS::ElastiCache::ReplicationGroup",
    "AWS::ElastiCache::SubnetGroup",
    "AWS::ElastiCache::ParameterGroup",
    "AWS::S3::BucketPolicy",
    "AWS::SQS::QueuePolicy",
    "AWS::SNS::TopicPolicy",
    "AWS::EC2::SecurityGroupEgress",
    "AWS::Lambda::EventInvokeConfig",
    "AWS::Lambda::Url",
    "AWS::SecretsManager::Secret",
    "AWS::CDK::Metadata",
    "Custom::S3AutoDeleteObjects",
    "Custom::VpcRestrictDefaultSG",
)
FAILED_LOGICAL_ID = "_sluice_failed_logical_id"
REDIS_PORT = "6379"


def check_moto_version() -> None:
    require_moto(PINNED_MOTO, "tests/deploy/moto_launcher.py")


# --- record-only resources ------------------------------------------------------------------


class Registry:
    """What was recorded instead of created, written whole to a JSON file after each change."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def add(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.entries[f"{entry['stack_id']}/{entry['logical_id']}"] = entry
            self._write()

    def remove(self, stack_id: str, logical_id: str) -> None:
        with self._lock:
            self.entries.pop(f"{stack_id}/{logical_id}", None)
            self._write()

    def _write(self) -> None:
        if self.path:
            temporary = f"{self.path}.tmp"
            with open(temporary, "w", encoding="utf-8") as handle:
                json.dump(list(self.entries.values()), handle, indent=1, default=str)
            os.replace(temporary, self.path)


REGISTRY = Registry(os.environ.get(RECORD_FILE_ENV))


def _random(length: int) -> str:
    from moto.moto_api._internal import mock_random

    return "".join(mock_random.choice(string.ascii_lowercase + string.digits) for _ in range(length))


def _shape(
    resource_type: str, name: str, properties: dict[str, Any], account: str, region: str
) -> tuple[str, dict[str, Any]]:
    """(Ref value, Fn::GetAtt attributes) as CloudFormation documents them for each type."""
    if resource_type == "AWS::ApiGatewayV2::Api":
        api_id = _random(10)
        return api_id, {
            "ApiId": api_id,
            "ApiEndpoint": f"https://{api_id}.execute-api.{region}.amazonaws.com",
        }
    if resource_type in ("AWS::ApiGatewayV2::Integration", "AWS::ApiGatewayV2::Route"):
        resource_id = _random(7)
        key = "IntegrationId" if resource_type.endswith("Integration") else "RouteId"
        return resource_id, {key: resource_id}
    if resource_type == "AWS::ApiGatewayV2::Stage":
        return str(properties.get("StageName", "$default")), {}
    if resource_type == "AWS::CloudWatch::Alarm":
        alarm = str(properties.get("AlarmName") or name)
        return alarm, {"Arn": f"arn:aws:cloudwatch:{region}:{account}:alarm:{alarm}"}
    if resource_type == "AWS::ElastiCache::ReplicationGroup":
        group = str(properties.get("ReplicationGroupId") or name[-40:].strip("-")).lower()
        port = str(properties.get("Port", REDIS_PORT))
        host = f"{group}.{_random(6)}.{region}.cache.amazonaws.com"
        return group, {
            "PrimaryEndPoint.Address": f"master.{host}",
            "PrimaryEndPoint.Port": port,
            "ReaderEndPoint.Address": f"replica.{host}",
            "ReaderEndPoint.Port": port,
        }
    if resource_type.startswith("AWS::ElastiCache::"):
        key = "CacheSubnetGroupName" if resource_type.endswith("SubnetGroup") else "CacheParameterGroupName"
        return str(properties.get(key) or name).lower(), {}
    if resource_type == "AWS::SecretsManager::Secret":
        secret = str(properties.get("Name") or name)
        arn = f"arn:aws:secretsmanager:{region}:{account}:secret:{secret}-{_random(6)}"
        return arn, {"Id": arn}
    if resource_type == "AWS::Lambda::Url":
        # Ref is the target function's ARN; FunctionUrl is https://<url id>.lambda-url.<region>.on.aws/
        function_arn = str(properties["TargetFunctionArn"])  # required, resolved by now
        url = f"https://{_random(32).lower()}.lambda-url.{region}.on.aws/"
        return function_arn, {"FunctionArn": function_arn, "FunctionUrl": url}
    return name, {}  # policies, CDK metadata, custom resources: an opaque physical id


class RecordedResource:
    """Stands in for a resource moto cannot create (see RECORD_ONLY): records it, answers Ref and
    Fn::GetAtt, and is listed by DescribeStackResources like any other resource."""

    resource_type = ""

    def __init__(self, logical_id: str, stack_id: str, physical_id: str, attributes: dict[str, Any]) -> None:
        self.logical_resource_id = logical_id
        self.stack_id = stack_id
        self.physical_resource_id = physical_id
        self.attributes = attributes
        self.cf_resource_type = self.resource_type

    @classmethod
    def cloudformation_type(cls) -> str:
        return cls.resource_type

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return True  # checked when the attribute is read (get_cfn_attribute)

    @classmethod
    def create_from_cloudformation_json(
        cls,
        resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
        **kwargs: Any,
    ) -> RecordedResource:
        properties = cloudformation_json.get("Properties") or {}
        physical_id, attributes = _shape(
            cls.resource_type, resource_name, properties, account_id, region_name
        )
        resource = cls(kwargs["LogicalId"], kwargs["StackId"], physical_id, attributes)
        REGISTRY.add(
            {
                "stack_id": resource.stack_id,
                "stack": resource.stack_id.split("/")[1],
                "type": cls.resource_type,
                "logical_id": resource.logical_resource_id,
                "physical_id": physical_id,
                "properties": properties,
            }
        )
        return resource

    @classmethod
    def update_from_cloudformation_json(
        cls,
        original_resource: RecordedResource,
        new_resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
    ) -> RecordedResource:
        original_resource.delete(account_id, region_name)
        kwargs = {"LogicalId": original_resource.logical_resource_id, "StackId": original_resource.stack_id}
        return cls.create_from_cloudformation_json(
            new_resource_name, cloudformation_json, account_id, region_name, **kwargs
        )

    @classmethod
    def delete_from_cloudformation_json(cls, *args: Any, **kwargs: Any) -> None:
        return None

    def delete(self, account_id: str, region_name: str) -> None:
        REGISTRY.remove(self.stack_id, self.logical_resource_id)

    def is_created(self) -> bool:
        return True

    def get_cfn_attribute(self, attribute_name: str) -> Any:
        from moto.cloudformation.exceptions import UnformattedGetAttTemplateException

        if attribute_name not in self.attributes:
            raise UnformattedGetAttTemplateException()
        return self.attributes[attribute_name]


RECORDED_CLASSES = {
    resource_type: type(
        f"Recorded_{resource_type.replace(':', '_')}", (RecordedResource,), {"resource_type": resource_type}
    )
    for resource_type in RECORD_ONLY
}


def patch_record_only_types() -> None:
    """Gap (moto 5.2.5): types without a moto model are dropped silently (`Ref`/`GetAtt` on them
    then fails), and `Custom::*` resources invoke their Lambda handler, which needs Docker.
    Fix: those in RECORD_ONLY resolve to a RecordedResource class instead."""
    from moto.cloudformation import parsing

    original = parsing.resource_class_from_type

    def resource_class_from_type(resource_type: str) -> Any:
        recorded = RECORDED_CLASSES.get(resource_type)
        return recorded if recorded is not None else original(resource_type)

    parsing.resource_class_from_type = resource_class_from_type


def patch_get_stack_output() -> None:
    """Gap (moto 5.2.5): `Fn::GetStackOutput` (how CDK's weak cross-stack references read another
    stack's output, no export) is not an intrinsic moto knows; the resource's properties then
    carry the unresolved object. Fix: resolve it from the named stack's outputs in the same
    account (and the given region, by default the reading stack's), as CloudFormation does at
    create and update time; a missing stack or output fails the resource like CloudFormation."""
    from moto.cloudformation import parsing
    from moto.cloudformation.exceptions import ValidationError
    from moto.cloudformation.models import cloudformation_backends

    original = parsing.clean_json

    def clean_json(resource_json: Any, resources_map: Any) -> Any:
        if isinstance(resource_json, dict) and "Fn::GetStackOutput" in resource_json:
            spec = original(resource_json["Fn::GetStackOutput"], resources_map)
            region = spec.get("Region") or resources_map._region_name
            backend = cloudformation_backends[resources_map._account_id][region]
            for stack in backend.stacks.values():
                if stack.name == spec["StackName"] and not stack.status.startswith("DELETE"):
                    for output in stack.output_map.values():
                        if output.key == spec["OutputName"]:
                            return output.value
            raise ValidationError(
                message=f"Fn::GetStackOutput: stack {spec['StackName']} has no output {spec['OutputName']}"
            )
        return original(resource_json, resources_map)

    parsing.clean_json = clean_json


# --- models moto has, with a gap ------------------------------------------------------------


def _fifo(queue_properties: dict[str, Any]) -> bool:
    """A queue's `FifoQueue`, as a template writes it (true, "true", absent)."""
    return str(queue_properties.get("FifoQueue", "false")).lower() == "true"


def patch_fifo_queue_names() -> None:
    """Gap (moto 5.2.5): an unnamed FIFO queue gets moto's generated `<stack>-<id>-<suffix>` name
    and SQS then refuses it ("Queue name must end in .fifo"). CloudFormation appends `.fifo` to
    the name it generates (80 characters at most); so does this."""
    from moto.sqs.models import Queue

    original = Queue.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]

    def create_from_cloudformation_json(
        cls: type,
        resource_name: str,
        cloudformation_json: Any,
        account_id: str,
        region_name: str,
        **kwargs: Any,
    ) -> Any:
        properties = cloudformation_json.get("Properties") or {}
        if _fifo(properties) and "QueueName" not in properties and not resource_name.endswith(".fifo"):
            resource_name = f"{resource_name[:75]}.fifo"
        return original(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)

    Queue.create_from_cloudformation_json = classmethod(create_from_cloudformation_json)  # type: ignore[method-assign,assignment]


def patch_queue_replacement() -> None:
    """Gap (moto 5.2.5): an update that changes a queue's `QueueName` or `FifoQueue` (in
    CloudFormation "Update requires: Replacement") keeps the old queue under its old name: moto
    updates only the visibility and wait time in place. CloudFormation creates a new queue, points
    the stack's `Ref` / `Fn::GetAtt` at it, and deletes the old one (with its messages); so does
    this (moto deletes at once, CloudFormation in the update's clean-up phase)."""
    from moto.sqs.models import Queue, sqs_backends

    original = Queue.update_from_cloudformation_json.__func__  # type: ignore[attr-defined]

    def update_from_cloudformation_json(
        cls: type,
        original_resource: Any,
        new_resource_name: str,
        cloudformation_json: Any,
        account_id: str,
        region_name: str,
    ) -> Any:
        properties = cloudformation_json.get("Properties") or {}
        renamed = "QueueName" in properties and properties["QueueName"] != original_resource.name
        if not renamed and _fifo(properties) == original_resource.fifo_queue:
            return original(
                cls, original_resource, new_resource_name, cloudformation_json, account_id, region_name
            )
        replacement = Queue.create_from_cloudformation_json(
            new_resource_name, cloudformation_json, account_id, region_name
        )
        sqs_backends[account_id][region_name].delete_queue(original_resource.name)
        return replacement

    Queue.update_from_cloudformation_json = classmethod(update_from_cloudformation_json)  # type: ignore[method-assign,assignment]


def patch_efs_refs() -> None:
    """Gap (moto 5.2.5): `AWS::EFS::AccessPoint` has no physical id, so `Ref` answers the Python
    object's repr, and neither it nor `AWS::EFS::FileSystem` answers `Fn::GetAtt`. CloudFormation's
    `Ref` is the access point id (`fsap-...`); `Arn` and `AccessPointId` / `FileSystemId` are
    their attributes."""
    from moto.cloudformation.exceptions import UnformattedGetAttTemplateException
    from moto.efs.models import AccessPoint, FileSystem

    def answer(model: Any, attributes: Any) -> None:
        def get_cfn_attribute(self: Any, attribute_name: str) -> Any:
            values = attributes(self)
            if attribute_name not in values:
                raise UnformattedGetAttTemplateException()
            return values[attribute_name]

        model.get_cfn_attribute = get_cfn_attribute
        model.has_cfn_attr = classmethod(lambda cls, attr: attr in ("Arn", "AccessPointId", "FileSystemId"))

    AccessPoint.physical_resource_id = property(lambda self: self.access_point_id)  # type: ignore[attr-defined]
    answer(AccessPoint, lambda self: {"Arn": self.access_point_arn, "AccessPointId": self.access_point_id})
    answer(FileSystem, lambda self: {"Arn": self.file_system_arn, "FileSystemId": self.file_system_id})


def patch_lambda_function_properties() -> None:
    """Gap (moto 5.2.5): a function created from a template keeps only Description, MemorySize,
    Publish, Timeout, VpcConfig, Environment and ReservedConcurrentExecutions: Architectures
    (arm64 here), Layers, EphemeralStorage and TracingConfig are dropped, though moto's
    CreateFunction takes them; and `Ref` on an `AWS::Lambda::LayerVersion` answers no value (it
    has no physical id), where CloudFormation answers the layer version's ARN. Fix: pass those
    properties on, and make the layer version's ARN its physical id."""
    from moto.awslambda.models import LambdaFunction, LayerVersion, get_backend

    passed_on = (
        # what moto 5.2.5 already passes on
        "Description",
        "MemorySize",
        "Publish",
        "Timeout",
        "VpcConfig",
        "Environment",
        "ReservedConcurrentExecutions",
        # what it dropped
        "Architectures",
        "Layers",
        "EphemeralStorage",
        "TracingConfig",
    )

    original = LambdaFunction.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]

    def create_from_cloudformation_json(
        cls: type,
        resource_name: str,
        cloudformation_json: Any,
        account_id: str,
        region_name: str,
        **kwargs: Any,
    ) -> Any:
        # moto's own method with the longer list; inline (ZipFile) code is left to moto's
        properties = cloudformation_json["Properties"]
        if "ZipFile" in properties["Code"]:
            return original(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
        spec = {
            "Code": properties["Code"],
            "FunctionName": resource_name,
            "Handler": properties.get("Handler"),
            "Role": properties["Role"],
            "Runtime": properties.get("Runtime"),
            **{key: properties[key] for key in passed_on if key in properties},
        }
        return get_backend(account_id, region_name).create_function(spec)

    LambdaFunction.create_from_cloudformation_json = classmethod(create_from_cloudformation_json)  # type: ignore[method-assign,assignment]
    LayerVersion.physical_resource_id = property(lambda self: self.arn)  # type: ignore[attr-defined]


def patch_bucket_public_access_block() -> None:
    """Gap (moto 5.2.5): a bucket created from a template keeps only BucketEncryption and Tags;
    PublicAccessBlockConfiguration and VersioningConfiguration (which every sluice bucket sets)
    are dropped, though moto's PutPublicAccessBlock and PutBucketVersioning take them. Fix: apply
    them after moto creates the bucket. (Lifecycle,
    logging and ownership controls stay dropped; the rehearsal does not check them.)"""
    from moto.s3.models import FakeBucket, s3_backends
    from moto.utilities.utils import get_partition

    original = FakeBucket.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]

    def create_from_cloudformation_json(
        cls: type,
        resource_name: str,
        cloudformation_json: Any,
        account_id: str,
        region_name: str,
        **kwargs: Any,
    ) -> Any:
        bucket = original(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
        properties = cloudformation_json.get("Properties") or {}
        backend = s3_backends[account_id][get_partition(region_name)]
        block = properties.get("PublicAccessBlockConfiguration")
        if block:
            backend.put_public_access_block(bucket.name, block)
        versioning = properties.get("VersioningConfiguration")
        if versioning:
            backend.put_bucket_versioning(bucket.name, versioning["Status"])
        return bucket

    FakeBucket.create_from_cloudformation_json = classmethod(create_from_cloudformation_json)  # type: ignore[method-assign,assignment]


def patch_update_termination_protection() -> None:
    """Gap (moto 5.2.5): `UpdateTerminationProtection` is not implemented; the CDK CLI calls it
    after deploying a stack with termination protection (prod). Fix: store the flag on the stack
    (DescribeStacks then reports it)."""
    from moto.cloudformation.responses import CloudFormationResponse
    from moto.core.responses import ActionResult

    def update_termination_protection(self: Any) -> ActionResult:
        stack = self.cloudformation_backend.get_stack(self._get_param("StackName"))
        stack.enable_termination_protection = self._get_bool_param("EnableTerminationProtection", False)
        return ActionResult({"StackId": stack.stack_id})

    CloudFormationResponse.update_termination_protection = update_termination_protection  # type: ignore[attr-defined]


def patch_failed_resource_names() -> None:
    """Part of the change-set fix below: an exception raised while creating a resource is tagged
    with that resource's logical id (the innermost one, as resources create their dependencies
    lazily), so the stack's failure event names the resource, as CloudFormation's does."""
    from moto.cloudformation import parsing

    original = parsing.parse_and_create_resource

    def parse_and_create_resource(logical_id: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return original(logical_id, *args, **kwargs)
        except Exception as exc:
            if not hasattr(exc, FAILED_LOGICAL_ID):
                setattr(exc, FAILED_LOGICAL_ID, logical_id)
            raise

    parsing.parse_and_create_resource = parse_and_create_resource


def _error_text(exc: Exception) -> str:
    message = getattr(exc, "message", None) or getattr(exc, "description", None) or str(exc)
    return f"{type(exc).__name__}: {message}"


def patch_change_set_execution() -> None:
    """Gaps (moto 5.2.5) in ExecuteChangeSet, the only way the CDK CLI deploys:
    - a new stack's Outputs and Exports are never published (the stack keeps the empty template's
      output map, and exports are only registered by CreateStack), so `Fn::ImportValue` in the
      next stack fails; and the new stack does not see other stacks' exports at all;
    - an error while resources are created escapes as HTTP 500, the SDK retries, the retry finds
      the change set executed, and the CLI reports a false `CREATE_COMPLETE`.
    Fix: execute as CloudFormation does. Exports are visible to the change set and published
    after it (names unique in the region); an error becomes the resource's `CREATE_FAILED` (or
    `UPDATE_FAILED`) event with its reason and the stack ends `ROLLBACK_COMPLETE` (or
    `UPDATE_ROLLBACK_COMPLETE`), which the CLI reports as a failed deploy. Resources created
    before the error are not rolled back (the rehearsal fails anyway)."""
    from moto.cloudformation.exceptions import ValidationError
    from moto.cloudformation.models import CloudFormationBackend, Event

    def execute_change_set(self: Any, change_set_name: str, stack_name: str | None = None) -> None:
        change_set = self.describe_change_set(change_set_name)
        stack = self.stacks[change_set.stack_id]
        kind = change_set.change_set_type  # CREATE or UPDATE
        stack._add_stack_event(f"{kind}_IN_PROGRESS", resource_status_reason="User Initiated")
        stack.cross_stack_resources = self.exports
        stack.resource_map.cross_stack_resources = self.exports
        own_exports = {
            name for name, export in self.exports.items() if export.exporting_stack_id == stack.stack_id
        }
        try:
            change_set.apply()
            stack.template = change_set.template
            stack._parse_template()
            stack.output_map = stack._create_output_map()
            exports = stack.exports
            clashes = {export.name for export in exports} & (set(self.exports) - own_exports)
            if clashes:
                raise ValidationError(
                    stack.stack_id, message=f"Export names must be unique: {sorted(clashes)}"
                )
        except Exception as exc:
            failed = getattr(exc, FAILED_LOGICAL_ID, None)
            resource_type = (
                change_set.template_dict["Resources"].get(failed, {}).get("Type", "") if failed else ""
            )
            stack.events.append(
                Event(
                    stack_id=stack.stack_id,
                    stack_name=stack.name,
                    logical_resource_id=failed or stack.name,
                    physical_resource_id="",
                    resource_type=resource_type or "AWS::CloudFormation::Stack",
                    resource_status=f"{kind}_FAILED",
                    resource_status_reason=_error_text(exc),
                    resource_properties=None,
                )
            )
            final = "ROLLBACK_COMPLETE" if kind == "CREATE" else "UPDATE_ROLLBACK_COMPLETE"
            stack._add_stack_event(
                final.replace("COMPLETE", "IN_PROGRESS"), resource_status_reason=_error_text(exc)
            )
            stack._add_stack_event(final)
            stack.status = final
            change_set.execution_status = "EXECUTE_FAILED"
            return
        for name in own_exports:
            self.exports.pop(name, None)
        for export in exports:
            self.exports[export.name] = export
        stack._add_stack_event(f"{kind}_COMPLETE")
        stack.status = f"{kind}_COMPLETE"
        change_set.execution_status = "EXECUTE_COMPLETE"

    CloudFormationBackend.execute_change_set = execute_change_set  # type: ignore[method-assign]


def patch_executed_change_sets_removed() -> None:
    """Gap (moto 5.2.5): an executed change set is kept, and change sets are found by name across
    every stack. The CLI names every stack's change set `cdk-deploy-change-set` and, before a
    deploy that changes a template, deletes "the" set of that name and waits until DescribeChangeSet
    no longer finds it: moto deletes one and keeps answering with another stack's executed one, so
    the CLI waits forever. CloudFormation removes a stack's change sets once one of them is
    executed; so does this (after a successful execution)."""
    from moto.cloudformation.models import CloudFormationBackend

    original = CloudFormationBackend.execute_change_set

    def execute_change_set(self: Any, change_set_name: str, stack_name: str | None = None) -> None:
        change_set = self.describe_change_set(change_set_name)
        original(self, change_set_name, stack_name)
        if change_set.execution_status == "EXECUTE_COMPLETE":
            for change_set_id, kept in list(self.change_sets.items()):
                if kept.stack_id == change_set.stack_id:
                    del self.change_sets[change_set_id]

    CloudFormationBackend.execute_change_set = execute_change_set  # type: ignore[method-assign]


def patch_delete_missing_change_set() -> None:
    """Gap (moto 5.2.5): DeleteChangeSet for a name that does not exist fails inside moto
    (UnboundLocalError, HTTP 500 with an HTML body); the SDK retries for ~40 s and `cdk diff`,
    which always removes a stale change set "if it exists" before creating its own, falls back to
    a template-only diff. CloudFormation answers success; so does this."""
    from moto.cloudformation.models import CloudFormationBackend

    original = CloudFormationBackend.delete_change_set

    def delete_change_set(self: Any, change_set_name: str) -> None:
        known = change_set_name in self.change_sets or any(
            change_set.change_set_name == change_set_name for change_set in self.change_sets.values()
        )
        if known:
            original(self, change_set_name)

    CloudFormationBackend.delete_change_set = delete_change_set  # type: ignore[method-assign]


def patch_describe_missing_change_set() -> None:
    """Gap (moto 5.2.5): DescribeChangeSet of a change set that does not exist answers
    `ValidationError` ("Stack with id <change set> does not exist"); CloudFormation answers
    `ChangeSetNotFound`, which is what the CLI waits for after deleting the previous change set
    before a deploy that changes a template (on anything else it gives up the deploy)."""
    from moto.cloudformation.exceptions import CloudFormationError, ValidationError
    from moto.cloudformation.models import CloudFormationBackend

    class ChangeSetNotFound(CloudFormationError):
        code = "ChangeSetNotFoundException"  # the model's shape: serialized as ChangeSetNotFound, 404

    original = CloudFormationBackend.describe_change_set

    def describe_change_set(self: Any, change_set_name: str) -> Any:
        try:
            return original(self, change_set_name)
        except ValidationError:
            raise ChangeSetNotFound(message=f"ChangeSet [{change_set_name}] does not exist") from None

    CloudFormationBackend.describe_change_set = describe_change_set  # type: ignore[method-assign]


def patch_previous_ssm_parameter_values() -> None:
    """Gap (moto 5.2.5): a stack keeps its parameters' *resolved* values, and `UsePreviousValue`
    (how the CLI passes CDK's `BootstrapVersion` on every update) hands those back; for a
    parameter of an SSM type (`/cdk-bootstrap/<qualifier>/version`) moto then looks up an SSM
    parameter named after the value ("21") and every update of a deployed stack fails with an
    AttributeError. CloudFormation keeps the parameter's value, the SSM name, and resolves it
    again; so does this (other parameters keep their values as before)."""
    from moto.cloudformation.models import Stack

    def stack_parameters(self: Any) -> dict[str, Any]:
        declared = self.template_dict.get("Parameters", {})
        given = self.resource_map.input_parameters
        kept = dict(self.resource_map.resolved_parameters)
        for name, declaration in declared.items():
            if name in kept and str(declaration.get("Type", "")).startswith("AWS::SSM::Parameter::"):
                kept[name] = given.get(name, declaration.get("Default", kept[name]))
        return kept

    Stack.stack_parameters = property(stack_parameters)  # type: ignore[assignment,method-assign]


PATCHES = (
    patch_record_only_types,
    patch_get_stack_output,
    patch_fifo_queue_names,
    patch_queue_replacement,
    patch_efs_refs,
    patch_lambda_function_properties,
    patch_bucket_public_access_block,
    patch_update_termination_protection,
    patch_failed_resource_names,
    patch_change_set_execution,
    patch_executed_change_sets_removed,
    patch_delete_missing_change_set,
    patch_describe_missing_change_set,
    patch_previous_ssm_parameter_values,
)


def apply_patches() -> None:
    check_moto_version()
    for patch in PATCHES:
        patch()


def spawn(port: int, env: dict[str, str], cwd: str) -> subprocess.Popen[bytes]:
    """Start this launcher as a child, in its own process group."""
    command = [sys.executable, "-m", "tests.deploy.moto_launcher", "-H", "127.0.0.1", "-p", str(port)]
    return subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, process_group=0
    )


def wait_ready(process: subprocess.Popen[bytes], port: int, timeout_s: float = 90.0) -> None:
    """Wait until the launcher answers. The wait is long: moto imports every service model at
    start, which took over 20 s on a loaded machine."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the moto launcher exited with code {process.returncode} while starting")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/data.json", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    process.kill()
    process.wait()
    raise RuntimeError(f"the moto launcher did not answer within {timeout_s} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args(argv)
    apply_patches()
    from moto import server

    server.main(["-H", args.host, "-p", str(args.port)])


if __name__ == "__main__":
    main()
