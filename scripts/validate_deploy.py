#!/usr/bin/env python3
"""Deployment-file checks behind scripts/validate-deploy.sh (run that, not this:
it installs the pinned tools this script calls: kubectl, hadolint, yamllint,
check-jsonschema, shellcheck, and the kubernetes-validate library).

Every failure is collected and printed; the exit status is 1 if there was any.
"""
from __future__ import annotations

import filecmp
import difflib
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
import kubernetes_validate
from kubernetes_validate.utils import SchemaNotFoundError

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
# Oldest and newest Kubernetes minor versions the manifests must validate against.
K8S_VERSIONS = ["1.29.0", "1.37.0"]
NAMESPACE = "translation"
SECRET_NAME = "translation-worker"
HTTP_PORT = 9090
UID = 10001
CONFIG_DIR = "/etc/translation-worker"
# The worker's metrics (docs/operations.md); alert rules may only use these.
KNOWN_METRICS = {
    "jobs_total", "jobs_in_flight", "segments_total", "segments_deduplicated_total",
    "cache_errors_total", "cache_skipped_total", "cache_corrupt_total",
    "cache_stores_total", "engine_errors_total", "broker_reconnects_total",
    "broker_connected", "ready", "redis_up", "batch_size", "batch_tokens",
    "batch_wait_seconds", "inference_seconds", "job_duration_seconds", "build_info",
}
# The HTTP gateway (`translation-worker gateway`, docs/gateway.md): its port and metrics.
GATEWAY_PORT = 8080
GATEWAY_METRICS = {"requests_total", "request_duration_seconds", "pending_requests",
                   "max_pending_requests", "broker_connected", "broker_reconnects_total"}
GATEWAY_HISTOGRAMS = {"request_duration_seconds"}
HISTOGRAMS = {"batch_size", "batch_tokens", "batch_wait_seconds", "inference_seconds",
              "job_duration_seconds"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume",
                  "StorageClass", "CustomResourceDefinition", "PriorityClass"}

failures: list[str] = []


def fail(where: str, msg: str) -> None:
    failures.append(f"{where}: {msg}")
    print(f"  FAIL {where}: {msg}")


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True, **kw)


def tool_step(name: str, cmd: list[str]) -> None:
    p = run(cmd)
    out = (p.stdout + p.stderr).strip()
    if p.returncode != 0:
        fail(name, f"`{' '.join(cmd)}` exited {p.returncode}\n{out}")
    else:
        print(f"  ok   {name}")


def read_toml(path: Path) -> dict:
    text = path.read_text()
    try:
        import tomllib  # Python >= 3.11
        return tomllib.loads(text)
    except ModuleNotFoundError:
        # Enough for the keys read here: [section] and scalar `key = value` lines.
        data: dict = {}
        section: dict = data
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if m := re.fullmatch(r"\[([A-Za-z0-9_.]+)\]", line):
                section = data.setdefault(m.group(1), {})
            elif m := re.fullmatch(r"([A-Za-z0-9_]+)\s*=\s*(.+)", line):
                v = m.group(2).strip()
                section[m.group(1)] = v.strip('"') if v.startswith('"') else (
                    int(v) if re.fullmatch(r"-?\d+", v) else v)
        return data


CONFIG = read_toml(ROOT / "config" / "default.toml")


# ------------------------------------------------------------------ plain files
def check_config_copy() -> None:
    print("== config copy (k8s/base/config.toml == config/default.toml)")
    a, b = ROOT / "config/default.toml", K8S / "base/config.toml"
    if not b.exists() or not filecmp.cmp(a, b, shallow=False):
        diff = "".join(difflib.unified_diff(
            b.read_text().splitlines(True) if b.exists() else [], a.read_text().splitlines(True),
            "k8s/base/config.toml", "config/default.toml", n=1))
        fail("config copy", "k8s/base/config.toml differs from config/default.toml; run "
             "`scripts/validate-deploy.sh --sync-config` (or cp config/default.toml "
             f"k8s/base/config.toml)\n{diff[:4000]}")
    else:
        print("  ok   identical")


def yaml_files() -> list[str]:
    files = sorted(str(p.relative_to(ROOT)) for p in K8S.rglob("*") if p.suffix in (".yaml", ".yml"))
    return files + ["docker-compose.yml", ".yamllint"]


def check_lints() -> None:
    print("== lint")
    tool_step("yamllint (strict, .yamllint)", ["yamllint", "-s", "-c", ".yamllint", *yaml_files()])
    tool_step("hadolint Dockerfile", ["hadolint", "Dockerfile"])
    tool_step("shellcheck scripts/validate-deploy.sh", ["shellcheck", "scripts/validate-deploy.sh"])


def check_dockerfile() -> None:
    print("== Dockerfile targets")
    stages: list[dict] = []
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if m := re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.I):
            stages.append({"image": m.group(1), "name": (m.group(2) or "").lower(), "lines": []})
        elif stages and line and not line.startswith("#"):
            stages[-1]["lines"].append(line)
    names = [s["name"] for s in stages]
    for target in ("runtime", "runtime-cuda"):
        if target not in names:
            fail("Dockerfile", f"no stage named {target!r}")
            continue
        body = "\n".join(stages[names.index(target)]["lines"])
        for want in (f"USER {UID}", f"EXPOSE {HTTP_PORT}", "ENTRYPOINT", "config.toml"):
            if want not in body:
                fail("Dockerfile", f"stage {target} lacks {want!r}")
    if names and names[-1] != "runtime":
        fail("Dockerfile", "the last stage (what `docker build .` builds) must be `runtime`")
    for s in stages:
        img = s["image"]
        if img in names:
            continue
        if ":" not in img.split("/")[-1] or img.endswith(":latest"):
            fail("Dockerfile", f"base image {img} is not pinned by tag")
    cuda = "\n".join(s_line for s in stages if "cuda" in s["name"] for s_line in s["lines"])
    if "--no-default-features --features cuda" not in cuda:
        fail("Dockerfile", "the CUDA builder must build with --no-default-features --features cuda")
    if not failures or not any(f.startswith("Dockerfile") for f in failures):
        print(f"  ok   stages: {', '.join(n or '?' for n in names)}")


def check_compose() -> None:
    print("== docker-compose.yml")
    tool_step("Compose Specification schema (check-jsonschema vendor.compose-spec)",
              ["check-jsonschema", "--builtin-schema", "vendor.compose-spec", "docker-compose.yml"])
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc.get("services", {})
    for name, svc in services.items():
        hc = svc.get("healthcheck")
        if not hc or hc.get("disable") or not hc.get("test"):
            fail("compose", f"service {name} has no health check")
    worker = services.get("worker")
    if not worker:
        fail("compose", "no `worker` service")
        return
    dep = worker.get("depends_on", {})
    if not isinstance(dep, dict) or dep.get("rabbitmq", {}).get("condition") != "service_healthy":
        fail("compose", "worker must depend on rabbitmq with condition service_healthy")
    env = worker.get("environment", {})
    drain = int(env.get("TW_SHUTDOWN__DRAIN_TIMEOUT_SECS", CONFIG["shutdown"]["drain_timeout_secs"]))
    grace = worker.get("stop_grace_period", "10s")
    m = re.fullmatch(r"(\d+)s", str(grace))
    if not m or int(m.group(1)) <= drain:
        fail("compose", f"worker stop_grace_period {grace} must exceed the drain timeout {drain}s")
    if not any(str(HTTP_PORT) in str(p) for p in worker.get("ports", [])):
        fail("compose", f"worker does not publish its metrics port {HTTP_PORT}")
    if worker.get("deploy", {}).get("replicas", 1) < 2:
        fail("compose", "worker should run at least two replicas")
    if "model" not in doc.get("volumes", {}):
        fail("compose", "no `model` volume")
    if gateway := services.get("gateway"):
        cmd = gateway.get("command") or []
        if (cmd.split() if isinstance(cmd, str) else cmd)[:1] != ["gateway"]:
            fail("compose", "gateway must run the `gateway` subcommand")
        if gateway.get("depends_on", {}).get("rabbitmq", {}).get("condition") != "service_healthy":
            fail("compose", "gateway must depend on rabbitmq with condition service_healthy")
        gdrain = int(gateway.get("environment", {}).get(
            "TW_SHUTDOWN__DRAIN_TIMEOUT_SECS", CONFIG["shutdown"]["drain_timeout_secs"]))
        m = re.fullmatch(r"(\d+)s", str(gateway.get("stop_grace_period", "10s")))
        if not m or int(m.group(1)) <= gdrain:
            fail("compose", f"gateway stop_grace_period must exceed its drain timeout {gdrain}s")
    if not any(f.startswith("compose") for f in failures):
        print(f"  ok   {len(services)} services, each with a health check")


# ------------------------------------------------------------------ kustomize
def render_targets(tmp: Path) -> dict[str, Path]:
    """Every kustomization to render, in a scratch copy of k8s/ that also holds
    check overlays adding the optional components to the default ones."""
    shutil.copytree(K8S, tmp / "k8s")
    k = tmp / "k8s"
    targets = {"base": k / "base", "models": k / "models"}
    for d in sorted((k / "overlays").iterdir()):
        if (d / "kustomization.yaml").exists():
            targets[f"overlays/{d.name}"] = d
    checks = {
        "cpu+monitoring+model-from-image": ("keda", "monitoring", "model-from-image"),
        "cpu-hpa+monitoring": ("hpa", "monitoring"),
    }
    for name, comps in checks.items():
        d = k / "overlays" / f"_check-{name}"
        d.mkdir()
        (d / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "namespace": NAMESPACE, "resources": ["../../base"],
            "components": [f"../../components/{c}" for c in comps]}))
        targets[f"check:{name}"] = d
    # Every component must be exercised by some render.
    used = set()
    for d in targets.values():
        kz = yaml.safe_load((d / "kustomization.yaml").read_text()) or {}
        used.update(Path(c).name for c in kz.get("components", []))
    for comp in sorted(p.name for p in (k / "components").iterdir() if p.is_dir()):
        if comp not in used:
            fail("kustomize", f"component {comp} is rendered by no overlay or check")
    return targets


def render(name: str, path: Path) -> list[dict] | None:
    p = subprocess.run(["kubectl", "kustomize", str(path)], text=True, capture_output=True)
    if p.returncode != 0:
        fail(name, f"kubectl kustomize failed:\n{p.stderr.strip()}")
        return None
    if p.stderr.strip():
        fail(name, f"kubectl kustomize warned:\n{p.stderr.strip()}")
    return [d for d in yaml.safe_load_all(p.stdout) if d]


def kn(o: dict) -> str:
    return f"{o.get('kind')}/{o.get('metadata', {}).get('name')}"


def schema_validate(where: str, o: dict) -> bool:
    """True when Kubernetes ships a schema for the kind (validated), False for CRDs."""
    for v in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(o, v, strict=True)
        except SchemaNotFoundError:
            return False
        except kubernetes_validate.ValidationError as e:
            path = "/".join(str(p) for p in e.path)
            fail(where, f"{kn(o)} invalid for Kubernetes {v} at /{path}: {e.message}")
            return True
    return True


def objs(rendered: list[dict], kind: str) -> list[dict]:
    return [o for o in rendered if o.get("kind") == kind]


def labels_match(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def env_map(c: dict) -> dict:
    return {e["name"]: e for e in c.get("env", [])}


def check_pod_template(where: str, owner: dict, rendered: list[dict]) -> None:
    spec = owner["spec"]["template"]["spec"]
    psc = spec.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True or psc.get("runAsUser") != UID:
        fail(where, f"{kn(owner)}: pod securityContext needs runAsNonRoot and runAsUser {UID}")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        fail(where, f"{kn(owner)}: pod seccompProfile must be RuntimeDefault")
    if spec.get("automountServiceAccountToken") is not False:
        fail(where, f"{kn(owner)}: automountServiceAccountToken should be false (no API access needed)")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for c in spec.get("initContainers", []) + spec.get("containers", []):
        csc = c.get("securityContext", {})
        cname = f"{kn(owner)} container {c['name']}"
        if csc.get("allowPrivilegeEscalation") is not False:
            fail(where, f"{cname}: allowPrivilegeEscalation must be false")
        if csc.get("readOnlyRootFilesystem") is not True:
            fail(where, f"{cname}: readOnlyRootFilesystem must be true")
        if "ALL" not in csc.get("capabilities", {}).get("drop", []):
            fail(where, f"{cname}: capabilities must drop ALL")
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in res.get(kind, {}):
                    fail(where, f"{cname}: resources.{kind}.{r} missing")
        for m in c.get("volumeMounts", []):
            if m["name"] not in volumes:
                fail(where, f"{cname}: mounts unknown volume {m['name']}")
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref and ref.get("name") != SECRET_NAME:
                fail(where, f"{cname}: env {e['name']} reads Secret {ref.get('name')}, expected {SECRET_NAME}")
            if re.search(r"://[^/@\s]*:[^/@\s]*@", str(e.get("value", ""))):
                fail(where, f"{cname}: env {e['name']} has a password in plain text; use the Secret")
    cms = {o["metadata"]["name"]: o for o in objs(rendered, "ConfigMap")}
    for v in volumes.values():
        if "configMap" in v and v["configMap"]["name"] not in cms:
            fail(where, f"{kn(owner)}: volume {v['name']} names ConfigMap {v['configMap']['name']} "
                        "that the render does not contain")
        if "secret" in v:
            fail(where, f"{kn(owner)}: mounts a Secret volume; credentials come through env")


def check_worker(where: str, d: dict, rendered: list[dict]) -> None:
    spec = d["spec"]
    tpl = spec["template"]
    pod = tpl["spec"]
    if not labels_match(spec["selector"].get("matchLabels", {}), tpl["metadata"].get("labels", {})):
        fail(where, f"{kn(d)}: selector does not match the pod labels")
    workers = [c for c in pod["containers"] if c["name"] == "worker"]
    if len(workers) != 1:
        fail(where, f"{kn(d)}: expected one container named worker")
        return
    c = workers[0]
    env = env_map(c)

    def envval(name: str, default=None):
        return env[name].get("value", default) if name in env else default

    # Drain vs grace period.
    drain = int(envval("TW_SHUTDOWN__DRAIN_TIMEOUT_SECS", CONFIG["shutdown"]["drain_timeout_secs"]))
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace < drain + 10:
        fail(where, f"{kn(d)}: terminationGracePeriodSeconds {grace} must exceed the drain "
                    f"timeout {drain}s by at least 10 s")
    # Credentials from the Secret, never literal.
    for name in ("TW_AMQP__URL", "TW_REDIS__URL"):
        if "secretKeyRef" not in env.get(name, {}).get("valueFrom", {}):
            fail(where, f"{kn(d)}: {name} must come from the Secret {SECRET_NAME}")
    # Config file.
    args = c.get("args", []) + c.get("command", [])
    if f"{CONFIG_DIR}/config.toml" not in args:
        fail(where, f"{kn(d)}: worker args must pass --config {CONFIG_DIR}/config.toml")
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    cm_mount = mounts.get(CONFIG_DIR)
    if not cm_mount or "configMap" not in vols.get(cm_mount["name"], {}):
        fail(where, f"{kn(d)}: {CONFIG_DIR} must be a ConfigMap mount")
    else:
        cm_name = vols[cm_mount["name"]]["configMap"]["name"]
        for cm in objs(rendered, "ConfigMap"):
            if cm["metadata"]["name"] == cm_name:
                if "config.toml" not in cm.get("data", {}):
                    fail(where, f"ConfigMap {cm_name} has no config.toml key")
    # Model: read-only mount holding TW_MODEL__PATH.
    model = envval("TW_MODEL__PATH")
    if not model:
        fail(where, f"{kn(d)}: TW_MODEL__PATH not set")
    else:
        holder = [m for p, m in mounts.items() if model == p or model.startswith(p.rstrip("/") + "/")]
        if not holder or not holder[0].get("readOnly"):
            fail(where, f"{kn(d)}: the model path {model} must lie in a read-only volume mount")
    if "/tmp" not in mounts:
        fail(where, f"{kn(d)}: no writable /tmp (read-only root filesystem)")
    # HTTP: port, listen address, probes.
    ports = {p.get("name"): p for p in c.get("ports", [])}
    port = ports.get("http-metrics") or ports.get("metrics")
    if not port or port.get("containerPort") != HTTP_PORT:
        fail(where, f"{kn(d)}: container port {HTTP_PORT} named http-metrics missing")
    listen = envval("TW_HTTP__LISTEN", CONFIG.get("http", {}).get("listen", f"0.0.0.0:{HTTP_PORT}"))
    if not str(listen).endswith(f":{HTTP_PORT}"):
        fail(where, f"{kn(d)}: TW_HTTP__LISTEN {listen} does not listen on {HTTP_PORT}")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = c.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or get.get("port") not in ("http-metrics", "metrics", HTTP_PORT):
            fail(where, f"{kn(d)}: {probe} must GET {path} on the metrics port")
    # Threads from the CPU quota need a CPU limit.
    limits = c.get("resources", {}).get("limits", {})
    if str(envval("TW_MODEL__THREADS", CONFIG["model"]["threads"])) == "0" and "cpu" not in limits:
        fail(where, f"{kn(d)}: model.threads = 0 follows the CPU limit, which is not set")
    # GPU consistency.
    device = envval("TW_MODEL__DEVICE", CONFIG["model"].get("device", "cpu"))
    gpus = limits.get("nvidia.com/gpu")
    image = c.get("image", "")
    if device == "cuda":
        if not gpus:
            fail(where, f"{kn(d)}: TW_MODEL__DEVICE=cuda without a nvidia.com/gpu limit")
        if "cuda" not in image:
            fail(where, f"{kn(d)}: TW_MODEL__DEVICE=cuda with a non-CUDA image {image}")
    elif gpus or "cuda" in image:
        fail(where, f"{kn(d)}: GPU resources or CUDA image without TW_MODEL__DEVICE=cuda")


def served_pairs(c: dict) -> str:
    """The pairs a container serves or accepts: TW_MODEL__PAIRS, else source-target."""
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    if env.get("TW_MODEL__PAIRS"):
        return ",".join(sorted(p.strip() for p in env["TW_MODEL__PAIRS"].split(",")))
    model = CONFIG["model"]
    return f"{env.get('TW_MODEL__SOURCE', model['source'])}-{env.get('TW_MODEL__TARGET', model['target'])}"


def check_gateway(where: str, d: dict, rendered: list[dict]) -> None:
    """The HTTP gateway: broker only (no model, Redis or GPU), drain vs grace period
    (preStop sleep included), probes on its HTTP port, the workers' pairs."""
    pod = d["spec"]["template"]["spec"]
    if not labels_match(d["spec"]["selector"].get("matchLabels", {}),
                        d["spec"]["template"]["metadata"].get("labels", {})):
        fail(where, f"{kn(d)}: selector does not match the pod labels")
    gws = [c for c in pod["containers"] if c["name"] == "gateway"]
    if len(gws) != 1:
        fail(where, f"{kn(d)}: expected one container named gateway")
        return
    c = gws[0]
    env = env_map(c)
    args = c.get("args", []) + c.get("command", [])
    if "gateway" not in args or f"{CONFIG_DIR}/config.toml" not in args:
        fail(where, f"{kn(d)}: args must be gateway --config {CONFIG_DIR}/config.toml")
    if "secretKeyRef" not in env.get("TW_AMQP__URL", {}).get("valueFrom", {}):
        fail(where, f"{kn(d)}: TW_AMQP__URL must come from the Secret {SECRET_NAME}")
    drain = int(env.get("TW_SHUTDOWN__DRAIN_TIMEOUT_SECS", {}).get(
        "value", CONFIG["shutdown"]["drain_timeout_secs"]))
    cmd = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pre = int(cmd[1]) if len(cmd) == 2 and cmd[0] == "sleep" and cmd[1].isdigit() else 0
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace < pre + drain + 10:
        fail(where, f"{kn(d)}: terminationGracePeriodSeconds {grace} must exceed preStop "
                    f"{pre}s + drain {drain}s by at least 10 s")
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    if "configMap" not in vols.get(mounts.get(CONFIG_DIR, ""), {}):
        fail(where, f"{kn(d)}: {CONFIG_DIR} must be a ConfigMap mount")
    listen = env.get("TW_GATEWAY__LISTEN", {}).get(
        "value", CONFIG.get("gateway", {}).get("listen", f"0.0.0.0:{GATEWAY_PORT}"))
    port = {p.get("name"): p for p in c.get("ports", [])}.get("http")
    if not port or not str(listen).endswith(f":{port.get('containerPort')}"):
        fail(where, f"{kn(d)}: container port named http must be the one of TW_GATEWAY__LISTEN {listen}")
    ready = c.get("readinessProbe", {}).get("httpGet", {})
    if ready.get("path") != "/healthz" or ready.get("port") not in ("http", GATEWAY_PORT):
        fail(where, f"{kn(d)}: readinessProbe must GET /healthz on the http port")
    if c.get("livenessProbe", {}).get("httpGet", {}).get("port") not in ("http", GATEWAY_PORT):
        fail(where, f"{kn(d)}: livenessProbe must GET a path on the http port")
    if "nvidia.com/gpu" in c.get("resources", {}).get("limits", {}) or "cuda" in c.get("image", ""):
        fail(where, f"{kn(d)}: the gateway needs no GPU or CUDA image")
    for w in objs(rendered, "Deployment"):
        for wc in w["spec"]["template"]["spec"]["containers"]:
            if wc["name"] == "worker" and served_pairs(wc) != served_pairs(c):
                fail(where, f"{kn(d)} accepts {served_pairs(c)} but {kn(w)} serves {served_pairs(wc)}")


# Custom resources: no JSON schemas for these CRDs ship with the tools, so the
# fields this repository uses are checked here, unknown keys rejected.
SO_SPEC_KEYS = {"scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
                "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "fallback", "advanced",
                "triggers"}
TRIGGER_KEYS = {"type", "name", "metadata", "authenticationRef", "metricType", "useCachedMetrics"}
RABBIT_META = {"protocol", "mode", "value", "activationValue", "queueName", "vhostName",
               "unsafeSsl", "timeout", "excludeUnacknowledged", "useRegex", "operation", "pageSize"}


def secret_example() -> dict:
    return yaml.safe_load((K8S / "base/secret.example.yaml").read_text()).get("stringData", {})


def check_scaledobject(where: str, o: dict, rendered: list[dict]) -> None:
    name = kn(o)
    if o.get("apiVersion") != "keda.sh/v1alpha1":
        fail(where, f"{name}: apiVersion must be keda.sh/v1alpha1")
    spec = o.get("spec", {})
    if extra := set(spec) - SO_SPEC_KEYS:
        fail(where, f"{name}: unknown spec keys {sorted(extra)}")
    target = spec.get("scaleTargetRef", {})
    deps = {d["metadata"]["name"] for d in objs(rendered, "Deployment")}
    if target.get("name") not in deps or target.get("kind", "Deployment") != "Deployment":
        fail(where, f"{name}: scaleTargetRef {target} is not a Deployment of this render")
    lo, hi = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
    if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi):
        fail(where, f"{name}: need integers 0 <= minReplicaCount <= maxReplicaCount")
    triggers = spec.get("triggers") or []
    if not triggers:
        fail(where, f"{name}: no triggers")
    auths = {a["metadata"]["name"]: a for a in objs(rendered, "TriggerAuthentication")}
    queue = CONFIG["amqp"]["queue"]
    for d in objs(rendered, "Deployment"):
        for c in d["spec"]["template"]["spec"]["containers"]:
            queue = env_map(c).get("TW_AMQP__QUEUE", {}).get("value", queue)
    for i, t in enumerate(triggers):
        tw = f"{name} trigger {i}"
        if extra := set(t) - TRIGGER_KEYS:
            fail(where, f"{tw}: unknown keys {sorted(extra)}")
        meta = t.get("metadata", {})
        bad = [k for k, v in meta.items() if not isinstance(v, str)]
        if bad:
            fail(where, f"{tw}: metadata values must be strings (KEDA map[string]string): {bad}")
        value = meta.get("value", "")
        try:
            if float(value) <= 0:
                raise ValueError
        except ValueError:
            fail(where, f"{tw}: metadata.value {value!r} must be a positive number in a string")
        if t.get("type") == "rabbitmq":
            if extra := set(meta) - RABBIT_META:
                fail(where, f"{tw}: unexpected rabbitmq metadata {sorted(extra)} (credentials belong "
                            "in the TriggerAuthentication)")
            # The job queue is the bulk lane; `<queue>.interactive` its interactive lane.
            if meta.get("queueName") not in (queue, queue + ".interactive"):
                fail(where, f"{tw}: queueName {meta.get('queueName')!r} is not a lane of the worker's "
                            f"queue {queue!r} (or {queue + '.interactive'!r})")
            if meta.get("mode") not in ("QueueLength", "MessageRate"):
                fail(where, f"{tw}: mode must be QueueLength or MessageRate")
            protocol = meta.get("protocol", "auto")
            if protocol not in ("amqp", "http", "auto"):
                fail(where, f"{tw}: protocol must be amqp, http or auto")
            ref = t.get("authenticationRef", {}).get("name")
            if ref not in auths:
                fail(where, f"{tw}: authenticationRef {ref!r} is not a TriggerAuthentication of this render")
                continue
            for s in auths[ref].get("spec", {}).get("secretTargetRef", []):
                if s.get("parameter") == "host" and protocol in ("amqp", "http"):
                    example = secret_example().get(s.get("key"), "")
                    if not example.startswith(protocol):
                        fail(where, f"{tw}: protocol {protocol} but the host comes from Secret key "
                                    f"{s.get('key')} (example value {example.split('@')[-1]!r})")
        elif t.get("type") in ("cpu", "memory"):
            if t.get("metricType") not in ("Utilization", "AverageValue"):
                fail(where, f"{tw}: metricType must be Utilization or AverageValue")
            for d in objs(rendered, "Deployment"):
                for c in d["spec"]["template"]["spec"]["containers"]:
                    if t["type"] not in c.get("resources", {}).get("requests", {}):
                        fail(where, f"{tw}: container {c['name']} has no {t['type']} request")
        else:
            fail(where, f"{tw}: trigger type {t.get('type')!r} is not checked by this script")
    # KEDA must count every lane the workers consume (amqp.interactive_lane).
    counted = {t.get("metadata", {}).get("queueName") for t in triggers if t.get("type") == "rabbitmq"}
    if counted:
        lanes = {queue}
        if CONFIG["amqp"].get("interactive_lane", True):
            lanes.add(queue + ".interactive")
        if missing := sorted(lanes - counted):
            fail(where, f"{name}: no rabbitmq trigger counts the lane queue(s) {missing}")


def check_triggerauth(where: str, o: dict) -> None:
    name = kn(o)
    spec = o.get("spec", {})
    if extra := set(spec) - {"secretTargetRef", "env", "podIdentity"}:
        fail(where, f"{name}: unknown spec keys {sorted(extra)}")
    refs = spec.get("secretTargetRef") or []
    keys = secret_example()
    if not refs:
        fail(where, f"{name}: no secretTargetRef")
    for r in refs:
        if set(r) != {"parameter", "name", "key"}:
            fail(where, f"{name}: secretTargetRef entries need exactly parameter, name, key: {r}")
        if r.get("name") != SECRET_NAME or r.get("key") not in keys:
            fail(where, f"{name}: {r} is not a key of Secret {SECRET_NAME} (k8s/base/secret.example.yaml)")


def check_servicemonitor(where: str, o: dict, rendered: list[dict]) -> None:
    name = kn(o)
    spec = o.get("spec", {})
    sel = spec.get("selector", {}).get("matchLabels", {})
    svcs = [s for s in objs(rendered, "Service") if labels_match(sel, s["metadata"].get("labels", {}))]
    if not svcs:
        fail(where, f"{name}: selector {sel} matches no Service")
        return
    ports = {p.get("name") for s in svcs for p in s["spec"].get("ports", [])}
    endpoints = spec.get("endpoints") or []
    if not endpoints:
        fail(where, f"{name}: no endpoints")
    for e in endpoints:
        if e.get("port") not in ports:
            fail(where, f"{name}: endpoint port {e.get('port')!r} is not a named port of {ports}")
        if e.get("path", "/metrics") != "/metrics":
            fail(where, f"{name}: endpoint path must be /metrics")


def check_prometheusrule(where: str, o: dict) -> None:
    name = kn(o)
    groups = o.get("spec", {}).get("groups") or []
    if not groups:
        fail(where, f"{name}: no groups")
    for g in groups:
        for r in g.get("rules") or []:
            rid = r.get("alert") or r.get("record")
            if not rid or ("alert" in r) == ("record" in r):
                fail(where, f"{name}: each rule needs exactly one of alert/record: {r}")
            expr = str(r.get("expr", ""))
            if not expr or expr.count("(") != expr.count(")") or expr.count("{") != expr.count("}"):
                fail(where, f"{name} {rid}: empty or unbalanced expr")
            if "alert" in r and r.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
                fail(where, f"{name} {rid}: labels.severity must be critical, warning or info")
            for m in re.findall(r"translation_worker_([a-z_]+)", expr):
                base = re.sub(r"_(bucket|sum|count)$", "", m)
                if base not in KNOWN_METRICS or (base != m and base not in HISTOGRAMS):
                    fail(where, f"{name} {rid}: unknown metric translation_worker_{m}")
            for m in re.findall(r"translation_gateway_([a-z_]+)", expr):
                base = re.sub(r"_(bucket|sum|count)$", "", m)
                if base not in GATEWAY_METRICS or (base != m and base not in GATEWAY_HISTOGRAMS):
                    fail(where, f"{name} {rid}: unknown metric translation_gateway_{m}")


def check_render(where: str, rendered: list[dict]) -> None:
    counts: dict[str, int] = {}
    for o in rendered:
        counts[o["kind"]] = counts.get(o["kind"], 0) + 1
        if o["kind"] not in CLUSTER_SCOPED and o["metadata"].get("namespace") != NAMESPACE:
            fail(where, f"{kn(o)}: namespace {o['metadata'].get('namespace')!r}, expected {NAMESPACE!r}")
        if o["kind"] == "Secret":
            fail(where, f"{kn(o)}: Secrets are created by hand (secret.example.yaml), not rendered")
        if not schema_validate(where, o):
            checker = {"ScaledObject": lambda: check_scaledobject(where, o, rendered),
                       "TriggerAuthentication": lambda: check_triggerauth(where, o),
                       "ServiceMonitor": lambda: check_servicemonitor(where, o, rendered),
                       "PrometheusRule": lambda: check_prometheusrule(where, o)}.get(o["kind"])
            if checker is None:
                fail(where, f"{kn(o)} ({o.get('apiVersion')}): no schema and no hand check")
            else:
                checker()
    for d in objs(rendered, "Deployment") + objs(rendered, "Job"):
        check_pod_template(where, d, rendered)
    # Each Service and PodDisruptionBudget selects the pods of exactly one Deployment
    # (worker or gateway), and each Deployment has its PodDisruptionBudget.
    pods = {kn(d): d["spec"]["template"]["metadata"].get("labels", {}) for d in objs(rendered, "Deployment")}
    covered: dict[str, int] = {}
    for o in objs(rendered, "Service") + objs(rendered, "PodDisruptionBudget"):
        sel = o["spec"].get("selector", {})
        sel = sel.get("matchLabels", {}) if o["kind"] == "PodDisruptionBudget" else sel
        owners = [n for n, labels in pods.items() if labels_match(sel, labels)]
        if pods and len(owners) != 1:
            fail(where, f"{kn(o)}: selector matches the pods of {owners or 'no Deployment'}, expected one")
        if o["kind"] == "PodDisruptionBudget":
            for n in owners:
                covered[n] = covered.get(n, 0) + 1
            if "maxUnavailable" not in o["spec"]:
                fail(where, f"{kn(o)}: use maxUnavailable (a minAvailable blocks drains at 1 replica)")
    for n in pods:
        if covered.get(n) != 1:
            fail(where, f"{n}: {covered.get(n, 0)} PodDisruptionBudgets, expected one")
    for d in objs(rendered, "Deployment"):
        if d["spec"]["template"]["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "gateway":
            check_gateway(where, d, rendered)
        else:
            check_worker(where, d, rendered)
        scalers = [o for o in objs(rendered, "ScaledObject") + objs(rendered, "HorizontalPodAutoscaler")
                   if o.get("spec", {}).get("scaleTargetRef", {}).get("name") == d["metadata"]["name"]]
        if len(scalers) > 1:
            fail(where, f"{kn(d)} is the target of {len(scalers)} autoscalers: "
                        f"{', '.join(kn(s) for s in scalers)} (KEDA creates its own HPA)")
        if where.startswith(("overlays/", "check:")) and not scalers:
            fail(where, f"{kn(d)}: an overlay must configure one autoscaler (KEDA or HPA)")
        if scalers and "replicas" in d["spec"]:
            fail(where, f"{kn(d)}: spec.replicas fights the autoscaler on every apply; leave it out")
    for h in objs(rendered, "HorizontalPodAutoscaler"):
        deps = {d["metadata"]["name"] for d in objs(rendered, "Deployment")}
        if h["spec"]["scaleTargetRef"].get("name") not in deps:
            fail(where, f"{kn(h)}: scaleTargetRef is not a Deployment of this render")
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    if not any(f.startswith(where + ":") for f in failures):
        print(f"  ok   {where}: {summary}")


def check_kustomize() -> None:
    print(f"== kustomize renders, validated against Kubernetes {', '.join(K8S_VERSIONS)} (strict)")
    with tempfile.TemporaryDirectory(prefix="tw-validate-") as tmp:
        for where, path in render_targets(Path(tmp)).items():
            rendered = render(where, path)
            if rendered is not None:
                check_render(where, rendered)
    # The example Secret: valid, and in no kustomization.
    ex = yaml.safe_load((K8S / "base/secret.example.yaml").read_text())
    schema_validate("secret.example.yaml", ex)
    for kz in K8S.rglob("kustomization.yaml"):
        if "secret.example.yaml" in kz.read_text().split("#")[0] or any(
                "secret.example" in str(r) for r in (yaml.safe_load(kz.read_text()) or {}).get("resources", [])):
            fail("secret.example.yaml", f"must not be listed in {kz.relative_to(ROOT)}")
    for key in ("TW_AMQP__URL", "TW_REDIS__URL"):
        if key not in ex.get("stringData", {}):
            fail("secret.example.yaml", f"lacks {key}")


def check_docs() -> None:
    print("== docs/operations.md")
    doc = ROOT / "docs/operations.md"
    if not doc.exists():
        fail("docs", "docs/operations.md missing")
        return
    text = doc.read_text()
    wanted = ["runtime-cuda", "k8s/overlays/cpu", "k8s/overlays/gpu", "k8s/overlays/cpu-hpa",
              "secret.example.yaml", "terminationGracePeriodSeconds", "/readyz", "/healthz"]
    wanted += [f"translation_worker_{m}" for m in sorted(KNOWN_METRICS)]
    missing = [w for w in wanted if w not in text]
    if missing:
        fail("docs", f"docs/operations.md does not mention {missing}")
    else:
        print("  ok   mentions every target, overlay, endpoint and metric")


def main() -> int:
    check_config_copy()
    check_lints()
    check_dockerfile()
    check_compose()
    check_kustomize()
    check_docs()
    print()
    if failures:
        print(f"validate-deploy: FAILED ({len(failures)} problem(s)):", file=sys.stderr)
        for f in failures:
            print(f"  - {f.splitlines()[0]}", file=sys.stderr)
        return 1
    print("validate-deploy: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
