"""Checks what schemas cannot: that the deployment files keep their hardening and that
their parts refer to each other correctly. Run by scripts/validate-deploy.sh (after the
schema validators) as: check_deploy.py ROOT [COMPOSE_YAML], COMPOSE_YAML being the
production compose file as `docker-compose config` prints it, or docker-compose.yml.

- Dockerfile: every FROM names an exact version (x.y.z or a dated tag) or a digest; the
  prod stage is last, runs as 10001 and has a HEALTHCHECK; the dependency layer knows
  every workspace member and every target they declare (else the image build fails).
- compose (production; the dev override relaxes read_only on purpose): every service is
  read-only, drops all capabilities, sets no-new-privileges and has a health check;
  studyroom waits for healthy redis and nats and runs as 10001.
- Kubernetes: workload selectors match their pod labels; every Service and PDB selects
  some workload's pods; the HPA targets an existing Deployment; every container has a
  read-only root, no privilege escalation and drops ALL; third-party images by digest.
Prints one line per problem; exit status 1 if there is any.
"""

import re
import sys
import tomllib
from pathlib import Path

import yaml

problems = []


def problem(where, what):
    problems.append(f"{where}: {what}")


def check_dockerfile(path):
    stages = []
    for line in path.read_text().splitlines():
        words = line.split()
        if not words or words[0].upper() not in ("FROM", "USER", "HEALTHCHECK"):
            continue
        if words[0].upper() == "FROM":
            image = next(w for w in words[1:] if not w.startswith("--"))
            name = words[-1] if len(words) > 3 and words[-2].upper() == "AS" else image
            stages.append({"name": name, "user": None, "health": False})
            pinned = "@sha256:" in image or re.search(r":(\d+\.\d+\.\d+|[a-z]+-\d{8})", image)
            if not pinned:
                problem(path.name, f"FROM {image}: pin an exact version or a digest")
        elif stages and words[0].upper() == "USER":
            stages[-1]["user"] = words[1]
        elif stages:
            stages[-1]["health"] = True
    if not stages or stages[-1]["name"] != "prod":
        problem(path.name, "the last stage (the default build target) must be `prod`")
        return
    if stages[-1]["user"] != "10001:10001":
        problem(path.name, "prod stage must run as USER 10001:10001")
    if not stages[-1]["health"]:
        problem(path.name, "prod stage has no HEALTHCHECK")


def check_dependency_layer(root):
    """The build stage copies each member's Cargo.toml and writes a stand-in for each
    target; a member or target added later must be added there too."""
    text = (root / "Dockerfile").read_text()
    libs = re.search(r"for lib in ([^;]+);", text)
    libs = libs.group(1).split() if libs else []
    workspace = tomllib.loads((root / "Cargo.toml").read_text())["workspace"]
    for member in workspace["members"]:
        manifest = tomllib.loads((root / member / "Cargo.toml").read_text())
        if f"COPY {member}/Cargo.toml {member}/" not in text:
            problem("Dockerfile", f"dependency layer: COPY {member}/Cargo.toml is missing")
        if ("lib" in manifest or (root / member / "src/lib.rs").exists()) and member not in libs:
            problem("Dockerfile", f"dependency layer: no stand-in lib.rs for {member}")
        targets = [b.get("path", f"src/bin/{b['name']}.rs") for b in manifest.get("bin", [])]
        targets += [b.get("path", f"benches/{b['name']}.rs") for b in manifest.get("bench", [])]
        for target in targets:
            if f"{member}/{target}" not in text:
                problem("Dockerfile", f"dependency layer: no stand-in for {member}/{target}")


def check_compose(path):
    doc = yaml.safe_load(path.read_text()) or {}
    where = path.name
    for name, svc in (doc.get("services") or {}).items():
        at = f"{where}: service {name}"
        if svc.get("read_only") is not True:
            problem(at, "read_only: true is missing")
        if "ALL" not in (svc.get("cap_drop") or []):
            problem(at, "cap_drop: [ALL] is missing")
        if not any(o.startswith("no-new-privileges") for o in svc.get("security_opt") or []):
            problem(at, "security_opt no-new-privileges is missing")
        if not svc.get("healthcheck"):
            problem(at, "healthcheck is missing")
    studyroom = (doc.get("services") or {}).get("studyroom")
    if studyroom is None:
        problem(where, "no studyroom service")
        return
    deps = studyroom.get("depends_on") or {}
    for dep in ("redis", "nats"):
        if not isinstance(deps, dict) or deps.get(dep, {}).get("condition") != "service_healthy":
            problem(where, f"studyroom must depend on {dep} with condition service_healthy")
    if str(studyroom.get("user")) != "10001:10001":
        problem(where, "studyroom must run as user 10001:10001")


def check_k8s(folder):
    docs = []
    for path in sorted(folder.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    workloads = {}
    for where, doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind not in ("Deployment", "StatefulSet"):
            continue
        pod = doc["spec"]["template"]
        labels = pod["metadata"].get("labels", {})
        selector = doc["spec"]["selector"].get("matchLabels", {})
        if any(labels.get(k) != v for k, v in selector.items()):
            problem(where, f"{kind} {name}: selector does not match the pod labels")
        workloads[(kind, name)] = labels
        for c in pod["spec"]["containers"]:
            sc = c.get("securityContext", {})
            if sc.get("readOnlyRootFilesystem") is not True:
                problem(where, f"container {c['name']}: readOnlyRootFilesystem must be true")
            if sc.get("allowPrivilegeEscalation") is not False:
                problem(where, f"container {c['name']}: allowPrivilegeEscalation must be false")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                problem(where, f"container {c['name']}: capabilities must drop ALL")
            if not c["image"].startswith("studyroom:") and "@sha256:" not in c["image"]:
                problem(where, f"container {c['name']}: pin {c['image']} by digest")

    def selects_pods(selector):
        return any(all(lb.get(k) == v for k, v in selector.items()) for lb in workloads.values())

    for where, doc in docs:
        kind, name, spec = doc["kind"], doc["metadata"]["name"], doc.get("spec", {})
        if kind == "Service" and not selects_pods(spec.get("selector", {})):
            problem(where, f"Service {name} selects no workload's pods")
        if kind == "PodDisruptionBudget" and not selects_pods(spec["selector"].get("matchLabels", {})):
            problem(where, f"PodDisruptionBudget {name} selects no workload's pods")
        if kind == "HorizontalPodAutoscaler":
            target = spec["scaleTargetRef"]
            if (target["kind"], target["name"]) not in workloads:
                problem(where, f"HPA {name} targets missing {target['kind']} {target['name']}")


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: check_deploy.py ROOT [COMPOSE_YAML]")
    root = Path(sys.argv[1])
    check_dockerfile(root / "Dockerfile")
    check_dependency_layer(root)
    if len(sys.argv) > 2:
        check_compose(Path(sys.argv[2]))
    check_k8s(root / "deploy" / "k8s")
    for line in problems:
        print(f"  {line}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
