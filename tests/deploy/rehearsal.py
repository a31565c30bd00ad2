"""The deploy rehearsal (`make rehearse`, part of `make test`): the real CDK CLI bootstraps and
deploys every environment in cdk.json with the README's own `make deploy ENV=<env>`, against a
moto server started by tests/deploy/moto_launcher.py (fake credentials, region eu-west-1).

Pass:
- every stack is CREATE_COMPLETE (or UPDATE_COMPLETE);
- every template resource outside the launcher's RECORD_ONLY list exists in moto, with its
  template's key properties (queues, tables, buckets, functions, event source mappings, rules,
  log groups, file systems); every RECORD_ONLY resource was recorded;
- a second `make deploy` reports "(no changes)" for every stack, and `make diff` "There were no
  differences";
- in dev, a deploy that replaces the queue a router consumes (the assembly with that queue given a
  `QueueName`) removes the old queue, and after the README's procedure (destroy the stateless
  stack, `make deploy` again) no function or event source mapping names the old queue.

The app is synthesized once for every environment; each `make deploy` / `make diff` is given
that assembly (`ARGS="--app <assembly> ..."`), so the first deploy, the second deploy and the
diff all see the same templates. Steps run one after another: moto finds a change set by its
name alone, and the CLI gives every stack's change set the same name, so deploys of two stacks
at once would execute each other's change sets. A summary is printed and written to build/rehearsal.json; the
exit status is non-zero on any failure. The whole run has a hard timeout: on expiry the
rehearsal kills its children's process groups (moto, make, the CLI) and exits 124.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from local.servers import FAKE_AWS_ENVIRONMENT, _stop, free_port
from tests.deploy import moto_launcher
from tests.deploy.moto_launcher import RECORD_FILE_ENV, RECORD_ONLY
from tests.support.optional_systems import ALL_SYSTEMS

ROOT = Path(__file__).resolve().parents[2]
ASSEMBLY = ROOT / "build" / "rehearsal" / "cdk.out"
# The same assembly with one change that CloudFormation can make only by replacing a queue.
REPLACED_ASSEMBLY = ROOT / "build" / "rehearsal" / "replaced.out"
REPLACED_IN = "dev"  # one environment is enough to show the procedure; each costs two deploys
SUMMARY = ROOT / "build" / "rehearsal.json"
ACCOUNT = "123456789012"  # moto's default account: what STS answers the CLI
REGION = "eu-west-1"  # the synth check covers us-east-1; the rehearsal covers a second region
# The whole run; SLUICE_REHEARSAL_TIMEOUT_S overrides it (a slow or shared machine).
HARD_TIMEOUT_S = int(os.environ.get("SLUICE_REHEARSAL_TIMEOUT_S", "600"))
COMMAND_TIMEOUT_S = 5 * 60
CDK = ["npx", "--no-install", "cdk"]
DONE = ("CREATE_COMPLETE", "UPDATE_COMPLETE")


@dataclass
class Report:
    started: float = field(default_factory=time.monotonic)
    steps: dict[str, float] = field(default_factory=dict)
    stacks: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.failures.append(message)
        print(f"rehearsal: FAIL {message}", flush=True)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": not self.failures,
            "region": REGION,
            "seconds": round(time.monotonic() - self.started, 1),
            "steps_s": {name: round(seconds, 1) for name, seconds in self.steps.items()},
            "stacks": self.stacks,
            "created": sum(stack["created"] for stack in self.stacks.values()),
            "recorded": sum(stack["recorded"] for stack in self.stacks.values()),
            "failures": self.failures,
        }


REPORT = Report()


def _write_summary() -> None:
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    SUMMARY.write_text(json.dumps(REPORT.to_json(), indent=2) + "\n", encoding="utf-8")


# Every child (moto, make, the CLI) runs in its own process group, killed whole on a timeout,
# an interrupt or any exit.
CHILDREN: list[subprocess.Popen[Any]] = []


def _kill_children() -> None:
    for child in CHILDREN:
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)


def _on_timeout(signum: int, frame: object) -> None:
    REPORT.fail(f"hard timeout: the rehearsal did not finish within {HARD_TIMEOUT_S} s")
    _kill_children()
    _write_summary()
    print_summary()
    os._exit(124)


def run(step: str, command: list[str], env: dict[str, str]) -> str:
    """Run one command to completion, timed; its output is returned (and shown on failure)."""
    print(f"rehearsal: {step}: {' '.join(command)}", flush=True)
    began = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        process_group=0,
    )
    CHILDREN.append(process)
    try:
        output, _ = process.communicate(timeout=COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _kill_children()
        output, _ = process.communicate()
        REPORT.fail(f"{step}: timed out after {COMMAND_TIMEOUT_S} s")
    REPORT.steps[step] = time.monotonic() - began
    if process.returncode != 0:
        print(output[-6000:], flush=True)
        REPORT.fail(f"{step}: exit status {process.returncode}")
    return str(output)


# --- the moto server ------------------------------------------------------------------------


def start_moto(port: int, record_file: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **FAKE_AWS_ENVIRONMENT, RECORD_FILE_ENV: str(record_file)}
    process = moto_launcher.spawn(port, env, str(ROOT))
    CHILDREN.append(process)  # before the wait: a timeout while it starts kills it too
    moto_launcher.wait_ready(process, port)
    return process


def cli_environment(port: int, scratch: Path) -> dict[str, str]:
    """Fake credentials only: no profile, config file or real endpoint can leak in."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "CDK_"))}
    env.update(FAKE_AWS_ENVIRONMENT)
    env.pop("AWS_SESSION_TOKEN", None)
    env.update(
        {
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            # not 127.0.0.1: moto would read http://127.0.0.1:<port>/<bucket> as a bucket named "127"
            "AWS_ENDPOINT_URL": f"http://localhost:{port}",
            "AWS_CONFIG_FILE": str(scratch / "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(scratch / "aws-credentials"),
            "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
            "CDK_DISABLE_VERSION_CHECK": "1",
        }
    )
    return env


# --- the assembly ---------------------------------------------------------------------------


@dataclass
class StackArtifact:
    environment: str
    name: str
    template: dict[str, Any]


def assembly_stacks() -> list[StackArtifact]:
    stacks = []
    top = json.loads((ASSEMBLY / "manifest.json").read_text(encoding="utf-8"))
    for artifact in top["artifacts"].values():
        if artifact["type"] != "cdk:cloud-assembly":
            continue
        directory = ASSEMBLY / artifact["properties"]["directoryName"]
        environment = artifact["properties"]["displayName"].removeprefix("sluice-")
        nested = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
        for stack in nested["artifacts"].values():
            if stack["type"] == "aws:cloudformation:stack":
                properties = stack["properties"]
                template = json.loads((directory / properties["templateFile"]).read_text(encoding="utf-8"))
                stacks.append(StackArtifact(environment, properties["stackName"], template))
    return stacks


def environments() -> list[str]:
    context = json.loads((ROOT / "cdk.json").read_text(encoding="utf-8"))["context"]["sluice"]
    return list(context["environments"])


# --- checks against moto --------------------------------------------------------------------


def literal(value: Any) -> Any:
    """A template value with no intrinsic function in it, else None (not compared)."""
    text = json.dumps(value)
    return None if ('"Ref"' in text or '"Fn::' in text) else value


def compare(what: str, expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """Mismatches between template values (literals only) and what moto reports."""
    problems = []
    for key, value in expected.items():
        want = literal(value)
        if want is None:
            continue
        got = actual.get(key)
        if str(got).lower() != str(want).lower() and got != want:
            problems.append(f"{what}: {key} is {got!r}, the template says {want!r}")
    return problems


class Checker:
    """Type-specific property checks; each returns a list of mismatches."""

    def __init__(self, port: int) -> None:
        self.session = boto3.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
        )
        self.endpoint = f"http://localhost:{port}"
        self.checks: dict[str, Callable[[str, dict[str, Any]], list[str]]] = {
            "AWS::SQS::Queue": self.queue,
            "AWS::DynamoDB::Table": self.table,
            "AWS::S3::Bucket": self.bucket,
            "AWS::Lambda::Function": self.function,
            "AWS::Lambda::EventSourceMapping": self.event_source_mapping,
            "AWS::Events::Rule": self.rule,
            "AWS::Logs::LogGroup": self.log_group,
            "AWS::EFS::FileSystem": self.file_system,
            "AWS::EFS::AccessPoint": self.access_point,
            "AWS::IAM::Role": self.role,
        }

    def client(self, service: str) -> Any:
        return self.session.client(service, endpoint_url=self.endpoint)  # type: ignore[call-overload]

    def check(self, resource_type: str, physical_id: str, properties: dict[str, Any]) -> list[str]:
        check = self.checks.get(resource_type)
        return check(physical_id, properties) if check else []

    def queue(self, url: str, properties: dict[str, Any]) -> list[str]:
        attributes = self.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["All"])[
            "Attributes"
        ]
        keys = (
            "FifoQueue",
            "ContentBasedDeduplication",
            "VisibilityTimeout",
            "MessageRetentionPeriod",
            "SqsManagedSseEnabled",
            "KmsMasterKeyId",
            "DelaySeconds",
            "ReceiveMessageWaitTimeSeconds",
        )
        problems = compare(f"queue {url}", {k: properties[k] for k in keys if k in properties}, attributes)
        if "RedrivePolicy" in properties:
            redrive = json.loads(attributes.get("RedrivePolicy", "{}"))
            problems += compare(f"queue {url} redrive", properties["RedrivePolicy"], redrive)
        return problems

    def table(self, name: str, properties: dict[str, Any]) -> list[str]:
        table = self.client("dynamodb").describe_table(TableName=name)["Table"]
        problems = []
        if table["KeySchema"] != properties["KeySchema"]:
            problems.append(f"table {name}: key schema {table['KeySchema']} != {properties['KeySchema']}")
        billing = table.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED")
        problems += compare(
            f"table {name}",
            {"BillingMode": properties.get("BillingMode", "PROVISIONED")},
            {"BillingMode": billing},
        )
        if "StreamSpecification" in properties:
            problems += compare(
                f"table {name} stream",
                properties["StreamSpecification"],
                table.get("StreamSpecification", {}),
            )
        return problems

    def bucket(self, name: str, properties: dict[str, Any]) -> list[str]:
        s3 = self.client("s3")
        problems = []
        if "BucketEncryption" in properties:
            rules = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"]
            want = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
            problems += compare(
                f"bucket {name} encryption",
                want["ServerSideEncryptionByDefault"],
                rules[0]["ApplyServerSideEncryptionByDefault"],
            )
        if "VersioningConfiguration" in properties:
            status = s3.get_bucket_versioning(Bucket=name).get("Status")
            problems += compare(
                f"bucket {name} versioning", properties["VersioningConfiguration"], {"Status": status}
            )
        if "PublicAccessBlockConfiguration" in properties:
            block = s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
            problems += compare(
                f"bucket {name} public access", properties["PublicAccessBlockConfiguration"], block
            )
        return problems

    def function(self, name: str, properties: dict[str, Any]) -> list[str]:
        config = self.client("lambda").get_function_configuration(FunctionName=name)
        expected = {
            key: properties[key]
            for key in ("Runtime", "Handler", "MemorySize", "Timeout")
            if key in properties
        }
        problems = compare(f"function {name}", expected, config)
        architectures = properties.get("Architectures", ["x86_64"])
        if config.get("Architectures", ["x86_64"]) != architectures:
            problems.append(
                f"function {name}: architectures {config.get('Architectures')} != {architectures}"
            )
        want_env = sorted(properties.get("Environment", {}).get("Variables", {}))
        got_env = sorted(config.get("Environment", {}).get("Variables", {}))
        if want_env != got_env:
            problems.append(f"function {name}: environment variables {got_env} != {want_env}")
        if len(config.get("Layers", [])) != len(properties.get("Layers", [])):
            problems.append(f"function {name}: layers {config.get('Layers')} != {properties.get('Layers')}")
        return problems

    def event_source_mapping(self, uuid: str, properties: dict[str, Any]) -> list[str]:
        mapping = self.client("lambda").get_event_source_mapping(UUID=uuid)
        keys = ("BatchSize", "MaximumBatchingWindowInSeconds", "Enabled", "StartingPosition")
        problems = compare(
            f"event source mapping {uuid}", {k: properties[k] for k in keys if k in properties}, mapping
        )
        if not mapping.get("EventSourceArn") or not mapping.get("FunctionArn"):
            problems.append(f"event source mapping {uuid}: no source or function ({mapping})")
        return problems

    def rule(self, name: str, properties: dict[str, Any]) -> list[str]:
        events = self.client("events")
        rule_name = name.rsplit("/", maxsplit=1)[-1].rsplit("|", maxsplit=1)[-1]
        rule = events.describe_rule(Name=rule_name)
        keys = ("ScheduleExpression", "State")
        problems = compare(f"rule {rule_name}", {k: properties[k] for k in keys if k in properties}, rule)
        targets = events.list_targets_by_rule(Rule=rule_name)["Targets"]
        if len(targets) != len(properties.get("Targets", [])):
            problems.append(
                f"rule {rule_name}: {len(targets)} targets != {len(properties.get('Targets', []))}"
            )
        return problems

    def log_group(self, name: str, properties: dict[str, Any]) -> list[str]:
        groups = self.client("logs").describe_log_groups(logGroupNamePrefix=name)["logGroups"]
        group = next((g for g in groups if g["logGroupName"] == name), None)
        if group is None:
            return [f"log group {name}: not found"]
        return (
            compare(f"log group {name}", {"retentionInDays": properties.get("RetentionInDays")}, group)
            if "RetentionInDays" in properties
            else []
        )

    def file_system(self, file_system_id: str, properties: dict[str, Any]) -> list[str]:
        system = self.client("efs").describe_file_systems(FileSystemId=file_system_id)["FileSystems"][0]
        keys = ("Encrypted", "ThroughputMode", "ProvisionedThroughputInMibps", "PerformanceMode")
        return compare(
            f"file system {file_system_id}", {k: properties[k] for k in keys if k in properties}, system
        )

    def access_point(self, access_point_id: str, properties: dict[str, Any]) -> list[str]:
        point = self.client("efs").describe_access_points(AccessPointId=access_point_id)["AccessPoints"][0]
        problems = compare(
            f"access point {access_point_id}", properties.get("PosixUser", {}), point.get("PosixUser", {})
        )
        path = properties.get("RootDirectory", {}).get("Path", "/")
        if point.get("RootDirectory", {}).get("Path") != path:
            problems.append(f"access point {access_point_id}: root {point.get('RootDirectory')} != {path}")
        return problems

    def role(self, name: str, properties: dict[str, Any]) -> list[str]:
        role = self.client("iam").get_role(RoleName=name)["Role"]
        document = role["AssumeRolePolicyDocument"]
        document = json.loads(document) if isinstance(document, str) else document
        want = properties["AssumeRolePolicyDocument"]["Statement"]
        if literal(want) is not None and document.get("Statement") != want:
            return [f"role {name}: trust policy {document.get('Statement')} != {want}"]
        return []


def check_stack(stack: StackArtifact, checker: Checker, recorded: list[dict[str, Any]]) -> None:
    cloudformation = checker.client("cloudformation")
    status = cloudformation.describe_stacks(StackName=stack.name)["Stacks"][0]["StackStatus"]
    if status not in DONE:
        REPORT.fail(f"{stack.name}: {status}")
    listed = {
        resource["LogicalResourceId"]: resource
        for resource in cloudformation.list_stack_resources(StackName=stack.name)["StackResourceSummaries"]
    }
    recorded_here = {entry["logical_id"] for entry in recorded if entry["stack"] == stack.name}
    created = recorded_count = 0
    for logical_id, resource in stack.template["Resources"].items():
        resource_type = resource["Type"]
        if resource_type in RECORD_ONLY:
            recorded_count += 1
            if logical_id not in recorded_here:
                REPORT.fail(f"{stack.name}/{logical_id} ({resource_type}): not recorded")
            continue
        created += 1
        if logical_id not in listed:
            REPORT.fail(f"{stack.name}/{logical_id} ({resource_type}): not created in moto")
            continue
        # Some moto models have no physical id (a Lambda permission, a security group ingress
        # rule): listed is created. A Python repr is a broken `Ref`.
        physical_id = listed[logical_id].get("PhysicalResourceId") or ""
        if " object at 0x" in physical_id:
            REPORT.fail(f"{stack.name}/{logical_id} ({resource_type}): physical id {physical_id!r}")
            continue
        if not physical_id:
            continue
        try:
            problems = checker.check(resource_type, physical_id, resource.get("Properties", {}))
        except Exception as exc:  # any error reading it back is a failure to report
            problems = [f"{resource_type} {physical_id}: {type(exc).__name__}: {exc}"]
        for problem in problems:
            REPORT.fail(f"{stack.name}/{logical_id}: {problem}")
    REPORT.stacks[stack.name] = {"status": status, "created": created, "recorded": recorded_count}


# --- replacing a stateful resource ---------------------------------------------------------


@dataclass
class ConsumedQueue:
    """A stateful queue that a stateless event source mapping reads through a weak reference."""

    queue: str  # logical id in the stateful template
    mapping: str  # logical id in the stateless template


def consumed_standard_queue(stateful: StackArtifact, stateless: StackArtifact) -> ConsumedQueue:
    outputs = stateful.template.get("Outputs", {})
    for mapping_id, mapping in stateless.template["Resources"].items():
        if mapping["Type"] != "AWS::Lambda::EventSourceMapping":
            continue
        source = mapping["Properties"].get("EventSourceArn", {})
        output = source.get("Fn::GetStackOutput", {}).get("OutputName") if isinstance(source, dict) else None
        value = outputs.get(output, {}).get("Value", {}) if output else {}
        queue_id = value.get("Fn::GetAtt", [None])[0] if isinstance(value, dict) else None
        queue = stateful.template["Resources"].get(queue_id or "", {})
        if queue.get("Type") == "AWS::SQS::Queue" and not queue["Properties"].get("FifoQueue"):
            return ConsumedQueue(queue=str(queue_id), mapping=mapping_id)
    raise RuntimeError(
        f"no event source mapping of {stateless.name} reads a standard queue of {stateful.name}"
    )


def write_replaced_assembly(stateful: StackArtifact, queue_id: str, queue_name: str) -> None:
    """The assembly with one queue given an explicit `QueueName`: what setting `queue_name` on
    it in stacks/ would synthesize, and a change CloudFormation makes only by replacing the queue
    ("Update requires: Replacement"). Nothing else differs, so the stateless template is the
    one already deployed. Files are hard links to the assembly's; the edited ones are new files.
    The template is an asset named by its SHA-256 (the CLI uploads it under that key), so the
    manifests that name it get the new hash."""
    shutil.rmtree(REPLACED_ASSEMBLY, ignore_errors=True)
    shutil.copytree(ASSEMBLY, REPLACED_ASSEMBLY, copy_function=os.link)
    directory = REPLACED_ASSEMBLY / f"assembly-sluice-{stateful.environment}"
    [path] = [
        candidate
        for candidate in directory.glob("*.template.json")
        if json.loads(candidate.read_text(encoding="utf-8")) == stateful.template
    ]
    old_hash = hashlib.sha256(path.read_bytes()).hexdigest()
    template = json.loads(json.dumps(stateful.template))
    template["Resources"][queue_id]["Properties"]["QueueName"] = queue_name
    content = json.dumps(template, indent=1).encode()
    rewrites = {path: content}
    for manifest in (directory / "manifest.json", *directory.glob("*.assets.json")):
        text = manifest.read_text(encoding="utf-8")
        if old_hash in text:
            rewrites[manifest] = text.replace(old_hash, hashlib.sha256(content).hexdigest()).encode()
    for target, data in rewrites.items():
        target.unlink()  # a hard link: writing through it would change the original assembly too
        target.write_bytes(data)


def physical_ids(checker: Checker, stack_name: str) -> dict[str, str]:
    resources = checker.client("cloudformation").list_stack_resources(StackName=stack_name)
    return {
        r["LogicalResourceId"]: r.get("PhysicalResourceId", "") for r in resources["StackResourceSummaries"]
    }


def queue_arn(checker: Checker, url: str) -> str:
    attributes = checker.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(attributes["Attributes"]["QueueArn"])


def still_reading(checker: Checker, stateless: StackArtifact, mapping_id: str, old: set[str]) -> list[str]:
    """What in the deployed stateless stack still names the old queue (its URL or ARN)."""
    found = []
    ids = physical_ids(checker, stateless.name)
    lambda_ = checker.client("lambda")
    source = lambda_.get_event_source_mapping(UUID=ids[mapping_id])["EventSourceArn"]
    if source in old:
        found.append(f"event source mapping {mapping_id} reads {source}")
    for logical_id, resource in stateless.template["Resources"].items():
        if resource["Type"] == "AWS::Lambda::Function":
            variables = lambda_.get_function_configuration(FunctionName=ids[logical_id])
            for name, value in variables.get("Environment", {}).get("Variables", {}).items():
                if value in old:
                    found.append(f"function {logical_id}: {name}={value}")
    return found


def rehearse_replacement(checker: Checker, stacks: list[StackArtifact], env: dict[str, str]) -> None:
    """README "Changing a deployed environment": deploy a change that replaces a queue a router
    consumes (the old queue must be gone, the stateless stack still reading it), then follow the
    documented procedure; every function and event source mapping must then read the new queue."""
    [stateful] = [s for s in stacks if s.environment == REPLACED_IN and s.name.endswith("-stateful")]
    [stateless] = [s for s in stacks if s.environment == REPLACED_IN and s.name.endswith("-stateless")]
    consumed = consumed_standard_queue(stateful, stateless)
    old_url = physical_ids(checker, stateful.name)[consumed.queue]
    old = {old_url, queue_arn(checker, old_url)}
    new_name = f"{stateful.name}-replaced-queue"
    write_replaced_assembly(stateful, consumed.queue, new_name)
    replaced_args = f"ARGS=--app {REPLACED_ASSEMBLY.relative_to(ROOT)} --require-approval never"
    make(f"replace a queue {REPLACED_IN}", "deploy", REPLACED_IN, replaced_args, env)
    new_url = physical_ids(checker, stateful.name)[consumed.queue]
    if not new_url.endswith(f"/{new_name}"):
        REPORT.fail(f"{stateful.name}/{consumed.queue}: not replaced (physical id {new_url})")
    if old_url in checker.client("sqs").list_queues(QueueNamePrefix=stateful.name).get("QueueUrls", []):
        REPORT.fail(f"{stateful.name}/{consumed.queue}: the old queue {old_url} still exists")
    # The weak reference's price: the stateless template did not change, so nothing re-read it.
    if not still_reading(checker, stateless, consumed.mapping, old):
        REPORT.fail(f"{stateless.name} no longer reads the replaced queue before it was re-created")
    # The README's procedure: the stateless stack created again reads the outputs afresh.
    run(
        f"destroy stateless {REPLACED_IN}",
        [*CDK, "destroy", f"sluice-{REPLACED_IN}/stateless", "--force", "--app", str(REPLACED_ASSEMBLY)],
        env,
    )
    make(f"deploy stateless again {REPLACED_IN}", "deploy", REPLACED_IN, replaced_args, env)
    for reference in still_reading(checker, stateless, consumed.mapping, old):
        REPORT.fail(f"{stateless.name} still reads the replaced queue: {reference}")


# --- the run --------------------------------------------------------------------------------


def deploy_args(*extra: str) -> str:
    return f"ARGS=--app {ASSEMBLY.relative_to(ROOT)} {' '.join(extra)}".strip()


def make(step: str, target: str, environment: str, args: str, env: dict[str, str]) -> str:
    """The README's own command: `make <target> ENV=<environment> ARGS=...`."""
    return run(step, ["make", "--no-print-directory", target, f"ENV={environment}", args], env)


def rehearse(port: int, record_file: Path, env: dict[str, str]) -> None:
    # The synth is also the synth check's second region: cdk-nag and every validation run in it.
    # Every optional system on, as the synth check does (the relay is off by default).
    systems = json.dumps(ALL_SYSTEMS)
    run(
        "synth",
        [*CDK, "synth", "--quiet", "sluice-*/*", "-c", f"overrides={systems}", "--output", str(ASSEMBLY)],
        env,
    )
    # Given the assembly, bootstrap does not synthesize the app again (it would, from cdk.json).
    run("bootstrap", [*CDK, "bootstrap", f"aws://{ACCOUNT}/{REGION}", "--app", str(ASSEMBLY)], env)
    if REPORT.failures:
        return
    names = environments()
    for name in names:
        make(f"deploy {name}", "deploy", name, deploy_args("--require-approval never"), env)
    checker = Checker(port)
    recorded = json.loads(record_file.read_text(encoding="utf-8")) if record_file.exists() else []
    stacks = assembly_stacks()
    if sorted({stack.environment for stack in stacks}) != sorted(names):
        REPORT.fail(
            f"the assembly has environments {sorted({s.environment for s in stacks})}, cdk.json {names}"
        )
    for stack in stacks:
        check_stack(stack, checker, recorded)
    for name in names:
        output = make(f"redeploy {name}", "deploy", name, deploy_args("--require-approval never"), env)
        for stack in (s for s in stacks if s.environment == name):
            if f"({stack.name}) (no changes)" not in output:
                REPORT.fail(f"second deploy of {stack.name} did not report '(no changes)'")
        output = make(f"diff {name}", "diff", name, deploy_args(), env)
        if "Number of stacks with differences: 0" not in output or "Could not create a change set" in output:
            print(output[-4000:], flush=True)
            REPORT.fail(f"make diff ENV={name} reported differences (or could not create its change set)")
    if not REPORT.failures:
        rehearse_replacement(checker, stacks, env)


def print_summary() -> None:
    summary = REPORT.to_json()
    print("\nrehearsal summary (moto, region eu-west-1)")
    print(f"{'stack':<28} {'status':<16} {'created':>8} {'recorded':>9}")
    for name, stack in summary["stacks"].items():
        print(f"{name:<28} {stack['status']:<16} {stack['created']:>8} {stack['recorded']:>9}")
    print(f"{'total':<45} {summary['created']:>8} {summary['recorded']:>9}")
    print("steps: " + ", ".join(f"{step} {seconds} s" for step, seconds in summary["steps_s"].items()))
    verdict = "ok" if summary["ok"] else f"FAILED ({len(summary['failures'])} failures)"
    print(
        f"rehearsal: {verdict} in {summary['seconds']} s; written to {SUMMARY.relative_to(ROOT)}", flush=True
    )


def main() -> int:
    signal.signal(signal.SIGALRM, _on_timeout)
    signal.alarm(HARD_TIMEOUT_S)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="sluice-rehearsal-") as scratch:
        record_file = Path(scratch) / "recorded.json"
        try:
            moto = start_moto(port, record_file)
        except RuntimeError as exc:
            REPORT.fail(str(exc))
            _write_summary()
            print_summary()
            return 1
        try:
            rehearse(port, record_file, cli_environment(port, Path(scratch)))
        except Exception as exc:  # reported as a failure, with the summary
            REPORT.fail(f"{type(exc).__name__}: {exc}")
        finally:
            _stop(moto)
            _kill_children()
    _write_summary()
    print_summary()
    return 0 if not REPORT.failures else 1


if __name__ == "__main__":
    sys.exit(main())
