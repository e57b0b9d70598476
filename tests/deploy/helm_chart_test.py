#!/usr/bin/env python3
"""The Helm chart (deploy/helm/crescent) rendered and checked against the real binary.

  helm_chart_test.py --crescent build/bin/crescent --chart deploy/helm/crescent

No helm or cluster here: render_chart/ renders the templates with Go's text/template and the
Helm/Sprig functions the chart uses. Checks, for the default values and for overrides:
- every manifest is YAML and the expected Deployments and Services are there;
- every `--flag` a container passes is one its `crescent` subcommand accepts (its --help);
- each node advertises $(POD_IP) from the downward API and is named $(POD_NAME);
- the addresses the roles dial (--kv-master, --conductor) are Services of the release with that
  port, and every probe names a container port;
- overrides reach the manifests: replicas, speculative decoding's flags, the API-key Secret, a
  model volume mounted in every pod that loads the model, and the grace period covering the
  drain timeout.
Exit 77 (CTest skip) without `go` or PyYAML.
"""
import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def render(chart, values, chart_meta):
    data = {"Values": values,
            "Release": {"Name": "t", "Namespace": "default", "Service": "Helm"},
            "Chart": {"Name": chart_meta["name"], "Version": chart_meta["version"],
                      "AppVersion": chart_meta["appVersion"]}}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "data.json")
        with open(path, "w") as f:
            json.dump(data, f)
        env = dict(os.environ, GO111MODULE="off", GOCACHE=os.path.join(tmp, "gocache"),
                   GOPATH=os.path.join(tmp, "gopath"))
        r = subprocess.run(["go", "run", "./render_chart", os.path.abspath(chart), path],
                           cwd=HERE, capture_output=True, text=True, env=env, timeout=300)
    check(r.returncode == 0, f"render failed: {r.stderr}")
    return r.stdout


def flags_of(crescent, subcommand, cache={}):
    if subcommand not in cache:
        r = subprocess.run([crescent, *subcommand, "--help"], capture_output=True, text=True,
                           timeout=60)
        check(r.returncode == 0, f"crescent {' '.join(subcommand)} --help exited {r.returncode}")
        cache[subcommand] = set(re.findall(r"(--[a-z0-9-]+)", r.stdout))
    return cache[subcommand]


def containers(doc):
    return doc["spec"]["template"]["spec"]["containers"]


def verify(crescent, text, values):
    yaml = __import__("yaml")
    docs = [d for d in yaml.safe_load_all(text) if d]
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    for role in ("kv-master", "conductor", "prefill", "decode"):
        check(f"t-crescent-{role}" in deployments, f"no Deployment for {role}")
    check(set(services) == {"t-crescent-kv-master", "t-crescent-conductor"},
          f"Services: {sorted(services)}")
    service_ports = {(n, p["port"]) for n, s in services.items() for p in s["spec"]["ports"]}

    for name, dep in deployments.items():
        labels = dep["spec"]["template"]["metadata"]["labels"]
        selector = dep["spec"]["selector"]["matchLabels"]
        check(all(labels.get(k) == v for k, v in selector.items()),
              f"{name}: the selector does not match the pod labels")
        for c in containers(dep):
            args = [str(a) for a in c["args"]]
            sub = tuple(args[:2]) if args[0] == "kvstore" else (args[0],)
            known = flags_of(crescent, sub)
            for a in args:
                if a.startswith("--"):
                    check(a in known, f"{name}: `crescent {' '.join(sub)}` has no flag {a}")
            for flag in ("--kv-master", "--conductor"):
                if flag in args:
                    host, port = args[args.index(flag) + 1].rsplit(":", 1)
                    check((host, int(port)) in service_ports,
                          f"{name}: {flag} {host}:{port} is no Service port of the release")
            ports = {p["name"] for p in c["ports"]}
            for probe in ("readinessProbe", "livenessProbe"):
                spec = c[probe].get("httpGet") or c[probe].get("tcpSocket")
                check(spec["port"] in ports, f"{name}: {probe} port {spec['port']} not declared")
            if sub[0] in ("prefill-node", "decode-node"):
                env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"]}
                check(env.get("POD_IP") == "status.podIP", f"{name}: no POD_IP from status.podIP")
                check(args[args.index("--advertise-host") + 1] == "$(POD_IP)",
                      f"{name}: does not advertise $(POD_IP)")
                check(args[args.index("--node-id") + 1] == "$(POD_NAME)",
                      f"{name}: node id is not the pod name")
                role = "prefill" if sub[0] == "prefill-node" else "decode"
                check(dep["spec"]["replicas"] == values[role]["replicas"], f"{name}: replicas")
                grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
                check(grace > values[role]["drainTimeoutS"],
                      f"{name}: grace period {grace} s does not cover the drain")
            if "--model" in args:
                path = args[args.index("--model") + 1]
                check(path == values["model"]["path"], f"{name}: --model {path}")
                mounted = values["model"]["hostPath"] or values["model"]["existingClaim"]
                mounts = c.get("volumeMounts") or []
                check(bool(mounts) == bool(mounted),
                      f"{name}: model volume mounted={bool(mounts)}, configured={bool(mounted)}")
    return deployments


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crescent", required=True)
    ap.add_argument("--chart", required=True)
    a = ap.parse_args()
    if shutil.which("go") is None:
        print("SKIP: no go toolchain (scripts/setup.sh installs golang-go)")
        return 77
    try:
        import yaml
    except ImportError:
        print("SKIP: PyYAML is not installed")
        return 77
    with open(os.path.join(a.chart, "Chart.yaml")) as f:
        meta = yaml.safe_load(f)
    with open(os.path.join(a.chart, "values.yaml")) as f:
        values = yaml.safe_load(f)

    verify(a.crescent, render(a.chart, values, meta), values)
    print("default values: ok")

    v = copy.deepcopy(values)
    v["prefill"]["replicas"] = 3
    v["decode"]["replicas"] = 2
    v["decode"]["drainTimeoutS"] = 120
    v["conductor"]["apiKeySecret"]["name"] = "crescent-key"
    v["model"]["existingClaim"] = "models"
    v["model"]["path"] = "/models-extra/Other.Q8_0.gguf"
    v["model"]["servedName"] = "other"
    v["decode"]["speculativeTokens"] = 4
    v["decode"]["speculativeDraftCost"] = 0.1
    deployments = verify(a.crescent, render(a.chart, v, meta), v)
    decode_args = [str(x) for x in containers(deployments["t-crescent-decode"])[0]["args"]]
    for flag, value in (("--speculative-tokens", "4"), ("--speculative-draft-cost", "0.1")):
        check(flag in decode_args and decode_args[decode_args.index(flag) + 1] == value,
              f"decode {flag}: {decode_args}")
    conductor = containers(deployments["t-crescent-conductor"])[0]
    secret = conductor["env"][0]["valueFrom"]["secretKeyRef"]
    check(conductor["env"][0]["name"] == "CRESCENT_API_KEY" and secret["name"] == "crescent-key",
          f"API key env: {conductor['env']}")
    check("--served-model-name" in conductor["args"], "no --served-model-name")
    for name in ("t-crescent-conductor", "t-crescent-prefill", "t-crescent-decode"):
        volumes = deployments[name]["spec"]["template"]["spec"]["volumes"]
        check(volumes[0]["persistentVolumeClaim"]["claimName"] == "models",
              f"{name}: volumes {volumes}")
    check(deployments["t-crescent-decode"]["spec"]["template"]["spec"]
          ["terminationGracePeriodSeconds"] == 135, "decode grace period for a 120 s drain")
    print("overrides: ok")
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
