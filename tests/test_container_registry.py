"""The container registry component: registered through the CLI, images pushed there in pre-flight (once per content
hash) and pulled from it by digest, against the real registries the suite starts (tests/fixtures/registry.py)."""

from __future__ import annotations

import json
import secrets
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from testkit import run_python

SCRIPT = """
from conveyor import pipeline, step

@step(step_operator="k8s")
def shout(word: str) -> str:
    return word.upper()

@pipeline(enable_cache=False)
def p():
    shout("pushed")

run = p()
step_run = run.steps["shout"]
print("RESULT", run.status, step_run.outputs["output"].load(), step_run.attempts[-1].image_digest)
"""


def _k8s(cluster: Any, engine: Any, **extra: Any) -> None:
    from testkit import add_step_operator

    add_step_operator("k8s", "kubernetes", kubeconfig=str(cluster.kubeconfig), docker_host=engine.docker_host,
                      docker_settings={"parent_image": engine.base_image}, mount_local_artifact_store=True,
                      poll_interval=0.2, stop_timeout=30, check_node_resources=False, **extra)


def _manifest_digest(server: Any, repository: str, tag: str, auth: tuple[str, str] | None = None) -> str:
    import base64

    request = urllib.request.Request(f"{server.url}/v2/{repository}/manifests/{tag}", method="HEAD", headers={
        "Accept": "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"})
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.headers["Docker-Content-Digest"]


def _step_tag(engine: Any) -> str:
    from conveyor.images.build import plan_image
    from conveyor.images.settings import DockerSettings

    return plan_image(DockerSettings(parent_image=engine.base_image)).tag.rsplit(":", 1)[1]


# -- the component, through the CLI ---------------------------------------------------------------------
def test_register_list_describe_update_and_delete_like_every_component(conveyor_cli: Any) -> None:
    conveyor_cli("container-registry", "register", "images", "--flavor=default", "--uri=127.0.0.1:5000/ml",
                 "--insecure=true")
    [listed] = json.loads(conveyor_cli("container-registry", "list", "--output", "json").stdout)
    assert (listed["name"], listed["flavor"], listed["configuration"]) == (
        "images", "default", {"uri": "127.0.0.1:5000/ml", "insecure": True})
    conveyor_cli("container-registry", "update", "images", "--username={{reg.user}}", "--password={{reg.password}}")
    described = json.loads(conveyor_cli("container-registry", "describe", "images", "--output", "json").stdout)
    assert described["configuration"]["username"] == "{{reg.user}}"
    assert "{{reg.password}}" not in json.dumps(described)  # a secret field is masked, even a reference
    bad = conveyor_cli("container-registry", "register", "web", "--flavor=default", "--uri=https://r.example/ml",
                       check=False)
    assert bad.returncode == 1 and "without a scheme" in bad.stderr and "--insecure=true" in bad.stderr
    flavors = {f["name"] for f in json.loads(conveyor_cli("container-registry", "flavor", "list", "--output",
                                                          "json").stdout)}
    assert {"default", "aws", "gcp", "azure"} <= flavors

    conveyor_cli("stack", "register", "prod", "-o", "default", "-a", "default", "-c", "images")
    stack = json.loads(conveyor_cli("stack", "describe", "prod", "--output", "json").stdout)
    assert stack["container_registry"]["name"] == "images"
    refused = conveyor_cli("container-registry", "delete", "images", check=False)
    assert refused.returncode == 1 and "conveyor stack update prod --remove-container-registry" in refused.stderr
    conveyor_cli("stack", "update", "prod", "--remove-container-registry")
    assert json.loads(conveyor_cli("stack", "describe", "prod", "--output", "json").stdout)["container_registry"] is None
    conveyor_cli("container-registry", "delete", "images")
    assert json.loads(conveyor_cli("container-registry", "list", "--output", "json").stdout) == []


def test_a_plain_password_is_stored_as_given_with_a_warning_that_names_the_secret_to_use(conveyor_cli: Any) -> None:
    """A password typed as a value (not a {{name.key}} reference) is kept as given: the CLI says so and how to
    keep it in a secret, and never echoes it back."""
    made = conveyor_cli("container-registry", "register", "images", "--flavor=default", "--uri=127.0.0.1:5000/ml",
                        "--username=ml", "--password=hunter2")
    fix = "conveyor secret create images password=...`, then --password={{images.password}}"
    assert "password is kept in plain text" in made.stderr and fix in made.stderr, made.stderr
    changed = conveyor_cli("container-registry", "update", "images", "--password=hunter3")
    assert "hunter3" not in changed.stdout + changed.stderr and fix in changed.stderr
    conveyor_cli("secret", "create", "images", "password=hunter4")
    referenced = conveyor_cli("container-registry", "update", "images", "--password={{images.password}}")
    assert "plain text" not in referenced.stderr and "hunter4" not in referenced.stdout + referenced.stderr


def test_a_stack_without_a_registry_is_refused_before_the_run_naming_the_fix(project: Path, tmp_path: Path) -> None:
    from testkit import add_step_operator

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    add_step_operator("k8s", "kubernetes", kubeconfig=str(kubeconfig), check_node_resources=False,
                      docker_settings={"parent_image": "python:3.11-slim"})
    proc = run_python(SCRIPT, project, check=False)
    assert proc.returncode != 0
    assert "has no container registry" in proc.stderr, proc.stderr
    assert ("conveyor container-registry register images --flavor=default --uri=HOST[:PORT]/NAMESPACE && "
            "conveyor stack update default -c images") in proc.stderr
    from conveyor.client import Client

    assert Client().list_pipeline_runs() == []  # refused before any run was recorded


# -- pushed in pre-flight, pulled by the backend --------------------------------------------------------
def test_the_image_is_pushed_once_pulled_by_digest_and_recorded(kube_cluster: Any, podman_engine: Any,
                                                                  podman_step_image: str, registry_server: Any,
                                                                  conveyor_cli: Any, project: Path) -> None:
    from fixtures.registry import PULLS

    namespace = f"t{secrets.token_hex(3)}"
    conveyor_cli("container-registry", "register", "images", "--flavor=default",
                 f"--uri={registry_server.host}/{namespace}", "--insecure=true")
    conveyor_cli("stack", "update", "default", "-c", "images")
    _k8s(kube_cluster, podman_engine)
    repository, tag = f"{namespace}/conveyor-step", _step_tag(podman_engine)

    first = run_python(SCRIPT, project)
    assert registry_server.manifest_puts(repository) == [f"{repository}:{tag}"]
    digest = _manifest_digest(registry_server, repository, tag)
    assert first.stdout.split()[-3:] == ["completed", "PUSHED", digest], first.stdout
    pulled = f"{registry_server.host}/{repository}@{digest}"
    assert pulled in PULLS, "the kubelet pulled the step's image from the registry, by digest"
    [job] = [r.job_manifest for r in kube_cluster.runs.values()
             if pulled in json.dumps(r.job_manifest)] or [None]
    assert job is not None, "the Job asks for the image by digest"

    uploads = registry_server.blob_uploads()
    second = run_python(SCRIPT, project)  # unchanged code: nothing is built or pushed
    assert second.stdout.split()[-3:] == ["completed", "PUSHED", digest], second.stdout
    assert registry_server.manifest_puts(repository) == [f"{repository}:{tag}"]
    assert registry_server.blob_uploads() == uploads


def test_a_registry_with_basic_auth_gets_the_password_from_a_secret_only(kube_cluster: Any, podman_engine: Any,
                                                                       podman_step_image: str,
                                                                       auth_registry_server: Any, conveyor_cli: Any,
                                                                       project: Path) -> None:
    from fixtures.registry import PULLS

    server = auth_registry_server
    namespace = f"t{secrets.token_hex(3)}"
    conveyor_cli("secret", "create", "reg", f"user={server.username}", f"password={server.password}")
    conveyor_cli("container-registry", "register", "images", "--flavor=default", f"--uri={server.host}/{namespace}",
                 "--insecure=true", "--username={{reg.user}}", "--password={{reg.password}}")
    conveyor_cli("stack", "update", "default", "-c", "images")
    _k8s(kube_cluster, podman_engine)
    repository, tag = f"{namespace}/conveyor-step", _step_tag(podman_engine)

    proc = run_python(SCRIPT, project)
    digest = _manifest_digest(server, repository, tag, (server.username, server.password))
    assert proc.stdout.split()[-3:] == ["completed", "PUSHED", digest], proc.stdout
    assert server.manifest_puts(repository) == [f"{repository}:{tag}"]
    assert f"{server.host}/{repository}@{digest}" in PULLS

    # the password is in no job spec, no argv of the step's container, no store row and no log
    texts = [json.dumps(r.job_manifest) + json.dumps(r.create_kwargs, default=str) for r in kube_cluster.runs.values()]
    texts += [json.dumps(o) for o in kube_cluster.jobs() + kube_cluster.pods()]
    store = project / ".conveyor"
    texts += [p.read_bytes().decode(errors="replace") for p in store.rglob("*") if p.is_file()
              and "secrets" not in p.name]
    texts += [proc.stdout, proc.stderr, conveyor_cli("run", "list", "--output", "json").stdout]
    assert not [t for t in texts if server.password in t]

    # without the login the registry refuses, and the error names the fix
    conveyor_cli("container-registry", "remove-attribute", "images", "password")
    refused = run_python(SCRIPT.replace("pushed", "again"), project, check=False)
    assert refused.returncode != 0 and "refused" in refused.stderr and "--password=" in refused.stderr, refused.stderr


# -- the cloud flavors supply a login (at the SDK boundary: no ECR, Artifact Registry or ACR runs here) -----------
def _registry(flavor: str, uri: str, **config: Any) -> Any:
    from conveyor.stack.registry import FlavorRegistry
    from conveyor.stack.stack import build_component

    record = {"id": "c1", "type": "container_registry", "name": "cloud", "flavor": flavor,
              "config": {"uri": uri, **config}}
    return build_component(FlavorRegistry(), record)


def test_the_aws_flavor_logs_in_with_an_ecr_token(monkeypatch: pytest.MonkeyPatch) -> None:
    import base64

    from moto import mock_aws

    for var, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(var, value)
    registry = _registry("aws", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/ml")
    with mock_aws():
        import boto3

        token = boto3.client("ecr", region_name="eu-west-1").get_authorization_token()
        expected = base64.b64decode(token["authorizationData"][0]["authorizationToken"]).decode()
        login = registry.login()
    assert f"{login.username}:{login.password}" == expected and login.username == "AWS"
    assert "password=***" in repr(login)
    given = _registry("aws", "123456789012.dkr.ecr.eu-west-1.amazonaws.com", username="u", password="p").login()
    assert (given.username, given.password) == ("u", "p")  # given credentials win, no token is asked for


def test_the_gcp_flavor_logs_in_with_an_access_token(monkeypatch: pytest.MonkeyPatch) -> None:
    import google.auth

    class Credentials:
        token = None

        def refresh(self, request: Any) -> None:
            self.token = "ya29.fresh-token"

    asked: list[Any] = []

    def default(scopes: Any = None) -> tuple[Credentials, str]:
        asked.append(scopes)
        return Credentials(), "ml-project"

    monkeypatch.setattr(google.auth, "default", default)

    login = _registry("gcp", "europe-west4-docker.pkg.dev/ml-project/steps").login()
    assert (login.username, login.password) == ("oauth2accesstoken", "ya29.fresh-token")
    assert asked == [["https://www.googleapis.com/auth/cloud-platform"]]


def test_the_azure_flavor_exchanges_an_entra_token_for_a_registry_token(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import urllib.parse
    from http.server import BaseHTTPRequestHandler, HTTPServer

    import azure.identity

    posted: list[dict[str, list[str]]] = []

    class Exchange(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            posted.append({"path": [self.path], **urllib.parse.parse_qs(body)})
            answer = json.dumps({"refresh_token": "acr-refresh-token"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    class Credential:
        def get_token(self, scope: str) -> Any:
            assert scope == "https://management.azure.com/.default"
            return type("Token", (), {"token": "entra-access-token"})()

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", Credential)
    server = HTTPServer(("127.0.0.1", 0), Exchange)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host = f"127.0.0.1:{server.server_address[1]}"
        login = _registry("azure", f"{host}/steps", insecure=True).login()
    finally:
        server.shutdown()
        server.server_close()
    assert (login.username, login.password) == ("00000000-0000-0000-0000-000000000000", "acr-refresh-token")
    assert posted == [{"path": ["/oauth2/exchange"], "grant_type": ["access_token"], "service": ["127.0.0.1"],
                       "access_token": ["entra-access-token"]}]
    admin = _registry("azure", "mlteam.azurecr.io", username="mlteam", password="admin-pw").login()
    assert (admin.username, admin.password) == ("mlteam", "admin-pw")  # the admin user: no exchange


def test_a_bearer_token_registry_is_asked_once_for_a_token_and_an_unreachable_one_names_the_fix() -> None:
    """Artifact Registry, ACR and GHCR answer 401 with a Bearer challenge: the token comes from the realm, asked
    with the login, and the manifest request is repeated with it."""
    import base64
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from conveyor.container_registries.base import RegistryLogin
    from conveyor.images.registry_api import PushTarget, RegistryError, manifest_digest

    calls: list[tuple[str, str | None]] = []

    class Registry(BaseHTTPRequestHandler):
        def _answer(self, code: int, headers: dict[str, str], body: bytes = b"") -> None:
            self.send_response(code)
            for key, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_HEAD(self) -> None:
            calls.append((self.path, self.headers.get("Authorization")))
            if self.headers.get("Authorization") != "Bearer pull-token":
                host = self.headers["Host"]
                return self._answer(401, {"WWW-Authenticate": f'Bearer realm="http://{host}/token",'
                                                                f'service="{host}",scope="repository:ml/app:pull"'})
            return self._answer(200, {"Docker-Content-Digest": "sha256:" + "a" * 64})

        def do_GET(self) -> None:
            calls.append((self.path, self.headers.get("Authorization")))
            assert self.headers["Authorization"] == "Basic " + base64.b64encode(b"robot:pw").decode()
            self._answer(200, {"Content-Type": "application/json"}, json.dumps({"token": "pull-token"}).encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host = f"127.0.0.1:{server.server_address[1]}"
        target = PushTarget(host, "ml/app", "0123", RegistryLogin("robot", "pw"), insecure=True)
        assert manifest_digest(target) == "sha256:" + "a" * 64
    finally:
        server.shutdown()
        server.server_close()
    assert [path.split("?")[0] for path, _ in calls] == ["/v2/ml/app/manifests/0123", "/token",
                                                         "/v2/ml/app/manifests/0123"]
    assert "pw" not in repr(target)
    with pytest.raises(RegistryError, match="cannot reach container registry http://127.0.0.1:1.*uri right"):
        manifest_digest(PushTarget("127.0.0.1:1", "ml/app", "0123", insecure=True))
