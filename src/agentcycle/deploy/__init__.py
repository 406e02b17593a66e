"""Deploy an app to a Thinkube cluster: ``thinkube.yaml`` -> ``k8s/`` -> validated.

``load_thinkube`` reads the platform's deployment descriptor with errors naming the
file, line and field; ``generate_manifests`` turns it into the ``k8s/`` file set the
platform's control plane generates (deterministic, images pinned to a tag, secrets
only by reference); ``validate_manifests`` checks the files offline (Kubernetes
schemas, our custom-resource models, ``kubectl kustomize``, a secret scan) and
``write_manifests`` swaps them into the project in one rename.
"""

from agentcycle.deploy.manifests import (
    APPLICATION_FILE,
    argocd_application,
    generate_manifests,
    manifests_for,
    write_manifests,
)
from agentcycle.deploy.pipeline import DeployOptions, DeployReport, deploy
from agentcycle.deploy.target import DeployTarget, git_image_tag
from agentcycle.deploy.thinkube import (
    ThinkubeDeployment,
    load_thinkube,
    parse_thinkube,
    schema_path,
    thinkube_json_schema,
)
from agentcycle.deploy.validate import (
    ManifestError,
    kustomize_build,
    referenced_secrets,
    validate_manifests,
)

__all__ = [
    "APPLICATION_FILE",
    "DeployOptions",
    "DeployReport",
    "DeployTarget",
    "ManifestError",
    "ThinkubeDeployment",
    "argocd_application",
    "deploy",
    "generate_manifests",
    "git_image_tag",
    "kustomize_build",
    "load_thinkube",
    "manifests_for",
    "parse_thinkube",
    "referenced_secrets",
    "schema_path",
    "thinkube_json_schema",
    "validate_manifests",
    "write_manifests",
]
