"""deploy/: the image installs the way the README says, and the Kubernetes manifests agree with
the config they carry (which `tracegate check` accepts) and with one another. No cluster or
Docker daemon runs here, so the manifests are checked as the data they are."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from tests.harness import BIN, REPO
from tracegate.config import load_config

DEPLOY = REPO / "deploy"


def manifests() -> dict[str, dict]:
    found = {}
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            found[f"{document['kind']}/{document['metadata']['name']}"] = document
    return found


def the_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(manifests()["ConfigMap/tracegate"]["data"]["config.yaml"])
    return path


def readme_block(heading: str) -> list[str]:
    section = REPO.joinpath("README.md").read_text().split(f"## {heading}\n", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, f"no sh block under {heading}"
    return [line for line in block.group(1).splitlines() if line and not line.startswith("#")]


def test_the_image_runs_the_readmes_install_steps_and_copies_what_they_need():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    runs = [line[4:] for line in dockerfile.splitlines() if line.startswith("RUN ")]
    assert runs and runs == readme_block("Installing")
    copied = " ".join(line for line in dockerfile.splitlines() if line.startswith("COPY "))
    for needed in (
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "addons",
    ):  # what `pip install .` reads
        assert needed in copied and (REPO / needed).exists()
    assert "FROM python:3.12" in dockerfile  # the one Python the project supports
    assert '"tracegate", "run", "--config", "/etc/tracegate/config.yaml"' in dockerfile


def test_the_configmaps_config_passes_tracegate_check_and_shares_everything(tmp_path):
    path = the_config(tmp_path)
    checked = subprocess.run(
        [str(BIN / "tracegate"), "check", str(path)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stderr
    config = load_config(path)
    assert config.state.backend == "postgres" and config.audit.backend == "postgres"
    assert config.admin.host == "0.0.0.0"  # the kubelet's probes come from outside the pod


def test_the_deployment_probes_mounts_and_secrets_match_the_config(tmp_path):
    config = load_config(the_config(tmp_path))
    found = manifests()
    deployment = found["Deployment/tracegate"]
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    pod = spec["template"]["spec"]
    [container] = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"gateway": config.listen.port, "admin": config.admin.port}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert container["args"] == ["--instance-id", "$(POD_NAME)"]
    # Every secret the config reads from the environment comes from the Secret.
    secret = found["Secret/tracegate"]["stringData"]
    from_secret = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["key"]
        for e in container["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    needed = {
        config.state.dsn_env,
        config.upstream.credentials.access_key_id_env,
        config.upstream.credentials.secret_access_key_env,
        config.masking.hash_key_env,
        config.identity.sts.keys_env,
    }
    assert needed <= set(from_secret)
    assert all(from_secret[name] in secret for name in needed)
    # The files the config names are mounted from the Secret, and the config where run reads it.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    [keys] = [v for v in pod["volumes"] if v["name"] == "keys"]
    files = {f"{mounts['keys']}/{item['path']}": item["key"] for item in keys["secret"]["items"]}
    for named in (config.audit.signing_key_file, config.listen.certificate):
        assert named in files and files[named] in secret
    assert mounts["config"] == "/etc/tracegate/config.yaml"
    # Services select these pods and name their ports.
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"] == labels
    for name in ("Service/tracegate", "Service/tracegate-admin"):
        service = found[name]["spec"]
        assert service["selector"] == labels
        assert all(p["targetPort"] in ports for p in service["ports"])
    # The console's sessions are per replica: its browsers stay on one.
    assert found["Service/tracegate-admin"]["spec"]["sessionAffinity"] == "ClientIP"


def test_the_secret_template_holds_placeholders_only():
    for key, value in manifests()["Secret/tracegate"]["stringData"].items():
        assert "CHANGE-ME" in value, key
