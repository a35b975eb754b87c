"""The deployment manifests under cluster/: they parse, validate against Ray Serve's own
schema, and everything they name (import paths, config files) exists in the repository."""

from __future__ import annotations

import copy
import functools
import importlib
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import ray
import typer.main
import yaml
from click.testing import CliRunner as ClickRunner
from ray.serve import Application
from ray.serve.schema import ServeDeploySchema
from typer.testing import CliRunner as TyperRunner

from crossrec.cli import app as crossrec_app
from crossrec.config import CrossRecConfig, DeploymentSettings, load_config
from crossrec.errors import ConfigError
from serving.app import AppArgs

ROOT = Path(__file__).resolve().parents[1]


def test_every_cluster_yaml_parses() -> None:
    files = sorted((ROOT / "cluster").glob("*.yaml"))
    assert files
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            assert isinstance(doc, dict), path


@pytest.mark.parametrize("name", ["serve_config.yaml", "serve_config.single-host.yaml"])
def test_serve_config_matches_rays_schema_and_the_repo(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = yaml.safe_load((ROOT / "cluster" / name).read_text())
    schema = ServeDeploySchema.model_validate(raw)
    assert schema.applications
    monkeypatch.chdir(ROOT)  # paths in the serve config are relative to the app's working dir
    for app in schema.applications:
        module_name, _, attr = app.import_path.partition(":")
        builder = getattr(importlib.import_module(module_name), attr)
        args = AppArgs.model_validate(app.args or {})
        assert args.config is not None
        assert (ROOT / args.config).is_file(), args.config
        cfg = load_config(args.config, overrides=args.overrides)
        if name == "serve_config.yaml":  # the cluster's: autoscaled recommenders
            assert cfg.serve.recommender.autoscaling is not None
        else:  # one host without a GPU: fixed CPU replicas
            assert cfg.serve.encoder.num_gpus == 0
        assert isinstance(builder(args), Application)


def test_replica_settings_follow_rays_rules() -> None:
    auto = DeploymentSettings.model_validate({"autoscaling": {"min_replicas": 1}})
    assert auto.num_replicas is None
    assert "num_replicas" not in auto.ray_options()
    assert auto.ray_options()["autoscaling_config"]["min_replicas"] == 1
    with pytest.raises(ValueError, match="num_replicas is not allowed when autoscaling"):
        DeploymentSettings.model_validate({"num_replicas": 2, "autoscaling": {}})
    with pytest.raises(ValueError, match="min_replicas .* is above max_replicas"):
        DeploymentSettings.model_validate({"autoscaling": {"min_replicas": 5, "max_replicas": 2}})
    with pytest.raises(ConfigError, match="serve.encoder: .*a batch could never fill"):
        load_config(
            None,
            overrides=["serve.encoder.max_ongoing_requests=4", "serve.encoder.max_batch_size=8"],
        )
    fixed = CrossRecConfig().serve.recommender.ray_options()
    assert fixed["num_replicas"] == 1
    assert fixed["ray_actor_options"] == {"num_cpus": 0.5}


# --------------------------------------------------------------------------- all manifests
# Everything below checks the deployment manifests (cluster/**, Dockerfile) against the repo,
# the installed Ray and the crossrec CLI, without Docker, Kubernetes or a network.
CLUSTER = ROOT / "cluster"
DOCKERFILE = ROOT / "Dockerfile"
RAY_VERSION = ray.__version__
PYTHON_TAG = "py311"  # every image's Python: a Ray client and its cluster need the same one
PROJECT_VERSION = re.findall(
    r'(?m)^version\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text()
)[0]
CROSSREC_IMAGE = "ghcr.io/crossrec/crossrec"
SECRET_ENV = {"CROSSREC_REDIS_PASSWORD", "CROSSREC_KAFKA_PASSWORD", "CROSSREC_API_KEY"}
# Top-level repository entries a manifest may name by a relative path.
REPO_PATH = re.compile(
    r"(?<![\w./:@-])((?:cluster|configs|crossrec|serving|training|tests|benchmarks)/[\w./-]*\w)"
)


def yaml_files() -> list[Path]:
    return sorted([*CLUSTER.rglob("*.yaml"), *CLUSTER.rglob("*.yml")])


def manifest_files() -> list[Path]:
    return [*yaml_files(), DOCKERFILE]


def load_docs(path: Path) -> list[dict[str, Any]]:
    docs = list(yaml.safe_load_all(path.read_text()))
    assert all(isinstance(doc, dict) for doc in docs), path
    return docs


def kube_docs(kind: str) -> list[dict[str, Any]]:
    found = [
        doc
        for path in sorted((CLUSTER / "kuberay").glob("*.yaml"))
        for doc in load_docs(path)
        if doc.get("kind") == kind
    ]
    assert found, f"no {kind} under cluster/kuberay"
    return found


def compose() -> dict[str, Any]:
    return load_docs(CLUSTER / "compose.yaml")[0]


def walk(node: Any, key: str | None = None) -> Iterator[tuple[str | None, Any]]:
    """Every (key, value) pair of a parsed YAML tree, lists' items under their list's key."""
    yield key, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, str(k))
    elif isinstance(node, list):
        for item in node:
            yield from walk(item, key)


# --------------------------------------------------------------------------- Dockerfile
def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, args = line.partition(" ")
            pairs.append((instruction.upper(), args.strip()))
    return pairs


def dockerfile_args() -> dict[str, str]:
    args = {}
    for instruction, rest in dockerfile_instructions():
        if instruction == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
    return args


def dockerfile_base() -> str:
    (base,) = [rest for instruction, rest in dockerfile_instructions() if instruction == "FROM"]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: dockerfile_args()[m[1] or m[2]], base)


def dockerfile_workdir() -> str:
    workdirs = [rest for instruction, rest in dockerfile_instructions() if instruction == "WORKDIR"]
    assert workdirs
    return workdirs[-1]


def dockerfile_copy_instructions() -> list[tuple[list[str], str]]:
    """(repository paths, destination) of every COPY."""
    copies = []
    for instruction, rest in dockerfile_instructions():
        if instruction == "COPY":
            words = [w for w in shlex.split(rest) if not w.startswith("--")]
            copies.append(([w.rstrip("/") for w in words[:-1]], words[-1]))
    return copies


def dockerfile_copies() -> list[str]:
    """Repository paths the image copies."""
    return [source for sources, _ in dockerfile_copy_instructions() for source in sources]


def dockerignore_excludes(path: str) -> bool:
    """Whether the build context leaves ``path`` (or a folder above it) out (Docker's rules:
    patterns anchored at the context root, `*` within a name, `**` across folders, `!` keeps)."""
    excluded = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        keep = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            excluded = not keep
    return excluded


def test_dockerfile_builds_on_the_pinned_ray_and_installs_with_constraints() -> None:
    assert dockerfile_base() == f"rayproject/ray:{RAY_VERSION}-{PYTHON_TAG}"
    runs = [rest for instruction, rest in dockerfile_instructions() if instruction == "RUN"]
    installs = [run for run in runs if "pip install" in run]
    (torch_pin,) = [
        line
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line.startswith("torch==")
    ]
    torch_first = next(i for i, run in enumerate(installs) if torch_pin in run)
    project = next(i for i, run in enumerate(installs) if "-c constraints.txt ." in run)
    assert torch_first < project, "torch must be installed (pinned) before the project"
    assert f"ray[serve,train]=={RAY_VERSION}" in installs[project]
    # The CPU image gets torch from the CPU index; the GPU build empties the argument.
    assert dockerfile_args()["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert "TORCH_INDEX_URL" in installs[torch_first]
    envs = " ".join(rest for instruction, rest in dockerfile_instructions() if instruction == "ENV")
    assert "HF_HUB_OFFLINE=1" in envs
    assert not re.search(r"(?i)(password|api_key|token|secret)\s*=", envs)


def test_dockerfile_copies_the_project_and_the_context_keeps_it() -> None:
    copied = dockerfile_copies()
    for needed in (
        "cluster",
        "serving",
        "training",
        "crossrec",
        "pyproject.toml",
        "README.md",
        "constraints.txt",
    ):
        assert needed in copied, needed
    for source in copied:
        assert (ROOT / source).exists(), source
        assert not dockerignore_excludes(source), source
        files = [ROOT / source] if (ROOT / source).is_file() else (ROOT / source).rglob("*")
        for file in files:
            rel = file.relative_to(ROOT).as_posix()
            if file.is_file() and "__pycache__" not in rel:
                assert not dockerignore_excludes(rel), rel
    for left_out in (".venv", ".git", "runs", "results", "crossrec/__pycache__/cli.pyc"):
        assert dockerignore_excludes(left_out), left_out
    # The serve config's paths are relative to the working directory, so everything lands
    # under WORKDIR in the repository's layout (cluster/ at WORKDIR/cluster, ...).
    workdir = PurePosixPath(dockerfile_workdir())
    assert workdir.is_absolute()
    assert workdir != PurePosixPath("/")
    for sources, dest in dockerfile_copy_instructions():
        assert not PurePosixPath(dest).is_absolute(), dest
        for source in sources:
            if (ROOT / source).is_dir():
                assert dest.rstrip("/") == source, f"COPY {source} {dest} moves it"
            else:
                assert dest in ("./", "."), f"COPY {source} {dest} moves it"


# --------------------------------------------------------------------------- parse + validate
def test_every_manifest_under_cluster_parses_recursively() -> None:
    names = {path.relative_to(CLUSTER).as_posix() for path in yaml_files()}
    assert {
        "compose.yaml",
        "ray-cluster.yaml",
        "kuberay/raycluster.yaml",
        "kuberay/rayjob-train.yaml",
        "kuberay/rayservice.yaml",
    } <= names
    for path in yaml_files():
        assert load_docs(path), path
        assert path.read_text().startswith("#"), f"{path}: no header comment"
    assert DOCKERFILE.read_text().startswith("#")


def test_rayservice_serves_exactly_cluster_serve_config() -> None:
    expected = yaml.safe_load((CLUSTER / "serve_config.yaml").read_text())
    (service,) = kube_docs("RayService")
    raw = service["spec"]["serveConfigV2"]
    assert isinstance(raw, str), "serveConfigV2 is a YAML string"
    parsed = yaml.safe_load(raw)
    schema = ServeDeploySchema.model_validate(parsed)
    assert [app.import_path for app in schema.applications] == ["serving.app:build_app"]
    assert parsed["applications"] == expected["applications"]
    assert parsed["http_options"] == expected["http_options"]
    assert parsed == expected


def test_cluster_launcher_config_is_valid_for_ray_up() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = load_docs(CLUSTER / "ray-cluster.yaml")[0]
    validate_config(prepare_config(copy.deepcopy(raw)))
    types = raw["available_node_types"]
    head = types[raw["head_node_type"]]
    assert not head["resources"].get("GPU"), "the head is a CPU node"
    gpu_groups = [
        t
        for name, t in types.items()
        if name != raw["head_node_type"] and t["resources"].get("GPU", 0) >= 1
    ]
    assert gpu_groups
    for group in gpu_groups:
        assert group["min_workers"] == 0
        assert 1 <= group["max_workers"] <= raw["max_workers"]
    image = raw["docker"].get("worker_image", raw["docker"]["image"])
    assert image.startswith(f"{CROSSREC_IMAGE}:")
    assert image.endswith("-gpu"), "GPU workers need the CUDA build of the image"
    assert any("ray start --head" in c for c in raw["head_start_ray_commands"])
    assert any("ray start --address=$RAY_HEAD_IP" in c for c in raw["worker_start_ray_commands"])


# --------------------------------------------------------------------------- images + versions
def image_refs() -> list[tuple[str, str]]:
    """(file, image reference) for every image a manifest runs or builds from."""
    refs = [("Dockerfile", dockerfile_base())]
    for path in yaml_files():
        for doc in load_docs(path):
            for key, value in walk(doc):
                if key in ("image", "head_image", "worker_image", "BASE_IMAGE"):
                    assert isinstance(value, str), (path, key)
                    refs.append((path.name, value))
    return refs


def test_every_image_is_pinned() -> None:
    refs = image_refs()
    assert {file for file, _ in refs} >= {
        "Dockerfile",
        "compose.yaml",
        "ray-cluster.yaml",
        "raycluster.yaml",
        "rayjob-train.yaml",
        "rayservice.yaml",
    }
    for file, ref in refs:
        if "@sha256:" in ref:
            continue
        name, _, tag = ref.rpartition(":")
        assert name, f"{file}: {ref} has no tag"
        assert "/" not in tag, f"{file}: {ref} has no tag"
        assert tag not in ("", "latest"), f"{file}: {ref} is not pinned"


def test_every_ray_version_is_the_installed_one() -> None:
    texts = {path.relative_to(ROOT).as_posix(): path.read_text() for path in manifest_files()}

    def tags(pattern: str) -> list[tuple[str, str]]:
        return [(file, tag) for file, text in texts.items() for tag in re.findall(pattern, text)]

    ray_images = tags(r"rayproject/ray:([^\s\"'@]+)")
    crossrec_images = tags(rf"{re.escape(CROSSREC_IMAGE)}:([^\s\"'@]+)")
    ray_pins = tags(r"(?<![\w.-])ray(?:\[[^\]]*\])?==([\w.]+)")
    assert ray_images
    assert crossrec_images
    assert ray_pins
    for file, tag in ray_images:
        assert re.fullmatch(rf"{re.escape(RAY_VERSION)}-{PYTHON_TAG}(-gpu)?", tag), (file, tag)
    suffix = rf"{re.escape(PROJECT_VERSION)}-ray{re.escape(RAY_VERSION)}(-gpu|-cpu)?"
    for file, tag in crossrec_images:
        assert re.fullmatch(suffix, tag), (file, tag)
    for file, version in ray_pins:
        assert version == RAY_VERSION, (file, version)
    ray_versions = [
        doc_version
        for kind in ("RayCluster", "RayJob", "RayService")
        for doc in kube_docs(kind)
        for key, doc_version in walk(doc)
        if key == "rayVersion"
    ]
    assert len(ray_versions) == 3
    assert set(ray_versions) == {RAY_VERSION}


def test_compose_builds_the_image_variant_it_names() -> None:
    declared = dockerfile_args()
    built = {name: s for name, s in compose()["services"].items() if "build" in s}
    assert built
    for name, service in built.items():
        build = service["build"]
        context = (CLUSTER / build["context"]).resolve()
        assert context == ROOT, name
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE, name
        args = build.get("args", {})
        assert set(args) <= set(declared), f"{name}: build args the Dockerfile does not declare"
        gpu = args.get("BASE_IMAGE", declared["BASE_IMAGE"]).endswith("-gpu")
        assert service["image"].endswith("-gpu") == gpu, name
        index = args.get("TORCH_INDEX_URL", declared["TORCH_INDEX_URL"])
        assert (index == "") == gpu, f"{name}: CUDA torch for the GPU image, CPU torch otherwise"


# --------------------------------------------------------------------------- commands
COMMAND_WORDS = ("crossrec", "ray", "serve")
SEPARATORS = {";", "&&", "||", "|", "&", "(", ")", "--"}


def shell_commands(text: str) -> list[list[str]]:
    """The crossrec / ray / serve commands in a shell snippet, as argument lists; quoted
    arguments holding a command (`ray exec CLUSTER 'crossrec ...'`) are searched too."""
    lexer = shlex.shlex(text.replace("\n", " ; "), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes: not a shell command
        return []
    segments: list[list[str]] = [[]]
    for token in tokens:
        if token in SEPARATORS or set(token) <= set("();<>|&"):
            segments.append([])
        else:
            segments[-1].append(token)
    found = []
    for segment in segments:
        words = [w for w in segment if not re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", w)]
        if words[:1] == ["docker"] and {"exec", "run"} & set(words):  # `docker compose exec`
            start = min(words.index(w) for w in ("exec", "run") if w in words)
            words = words[
                next(
                    (i for i, w in enumerate(words) if i > start and w in COMMAND_WORDS), len(words)
                ) :
            ]
        if words and words[0] in COMMAND_WORDS:
            found.append(words)
        for word in segment[1:]:
            if " " in word:
                found += shell_commands(word)
    return found


def comment_commands(path: Path) -> list[list[str]]:
    """Commands in a manifest's comments: lines `#   $ command`, continued by a trailing `\\`."""
    commands: list[list[str]] = []
    current: str | None = None
    for line in path.read_text().splitlines():
        if not line.lstrip().startswith("#"):
            current = None
            continue
        body = line.strip().lstrip("#").strip()
        if current is not None:
            current += " " + body
        elif body.startswith("$ "):
            current = body[2:]
        else:
            continue
        if current.endswith("\\"):
            current = current[:-1]
        else:
            commands += shell_commands(current)
            current = None
    return commands


def yaml_commands(node: Any) -> list[list[str]]:
    """Commands in YAML values: argument lists (compose `command:`) and shell strings."""
    if isinstance(node, dict):
        return [c for value in node.values() for c in yaml_commands(value)]
    if isinstance(node, list):
        if node and all(isinstance(v, str) for v in node) and node[0] in COMMAND_WORDS:
            return [list(node)]
        return [c for value in node for c in yaml_commands(value)]
    # One word (a name, a label, a folder) is not a command.
    return shell_commands(node) if isinstance(node, str) and " " in node.strip() else []


def all_commands() -> list[tuple[str, list[str]]]:
    """(file, command) for every command in a manifest's values and its comments."""
    found = []
    for path in manifest_files():
        docs = load_docs(path) if path.suffix in (".yaml", ".yml") else []
        for command in [*comment_commands(path), *(c for d in docs for c in yaml_commands(d))]:
            found.append((path.relative_to(ROOT).as_posix(), command))
    return found


def click_root(word: str) -> Any:
    if word == "crossrec":
        return typer.main.get_command(crossrec_app)
    if word == "ray":
        from ray.scripts.scripts import cli as ray_cli

        return ray_cli
    from ray.serve.scripts import cli as serve_cli

    return serve_cli


def resolve(command: list[str]) -> tuple[list[str], list[tuple[tuple[str, ...], str]]]:
    """The subcommand path a command names, and each option it uses with the path of the
    (sub)command it belongs to (`crossrec --log-level=info online run` → the root's)."""
    cmd = click_root(command[0])
    path: list[str] = []
    options: list[tuple[tuple[str, ...], str]] = []
    args = iter(command[1:])
    for word in args:
        if word.startswith("-") and word != "-":
            name = word.split("=", 1)[0]
            options.append((tuple(path), name))
            param = next((p for p in cmd.params if name in (*p.opts, *p.secondary_opts)), None)
            assert param is not None, f"{shlex.join(command)}: {' '.join(path)} has no {name}"
            if not getattr(param, "is_flag", False) and "=" not in word:
                next(args, None)  # the option's value
        elif hasattr(cmd, "commands"):
            assert word in cmd.commands, f"{command[0]} {' '.join(path)}: no subcommand {word!r}"
            path.append(word)
            cmd = cmd.commands[word]
    assert not hasattr(cmd, "commands"), f"{shlex.join(command)}: names a group, not a command"
    return path, options


@functools.cache
def help_text(word: str, path: tuple[str, ...]) -> str:
    """`WORD PATH --help`, run through the CLI's own runner."""
    env = {"COLUMNS": "200", "TERMINAL_WIDTH": "200"}
    if word == "crossrec":
        result = TyperRunner().invoke(crossrec_app, [*path, "--help"], env=env)
    else:
        result = ClickRunner().invoke(click_root(word), [*path, "--help"], env=env)
    assert result.exit_code == 0, f"{word} {' '.join(path)} --help: {result.output}"
    return result.output


def test_every_command_in_a_manifest_is_a_real_cli_command() -> None:
    seen: set[str] = set()
    for source, command in all_commands():
        word = command[0]
        path, options = resolve(command)
        seen.add(" ".join([word, *path]))
        help_text(word, tuple(path))  # exits 0
        for owner, name in options:
            assert name in help_text(word, owner), (
                f"{source}: {shlex.join(command)}: {name} is not in "
                f"`{' '.join([word, *owner])} --help`"
            )
    # The entry points the deployment is made of are all there (the test is not vacuous).
    assert {
        "crossrec train",
        "crossrec stream",
        "crossrec online run",
        "crossrec models register",
        "crossrec models promote",
        "serve deploy",
        "ray start",
        "ray stop",
        "ray job submit",
        "ray up",
        "ray exec",
    } <= seen


def test_command_parsing_finds_nested_and_continued_commands(tmp_path: Path) -> None:
    assert shell_commands("ulimit -n 65536; ray start --head --port=6379") == [
        ["ray", "start", "--head", "--port=6379"]
    ]
    assert shell_commands("ray job submit --no-wait -- crossrec stream -w 2") == [
        ["ray", "job", "submit", "--no-wait"],
        ["crossrec", "stream", "-w", "2"],
    ]
    assert shell_commands("ray exec c.yaml 'crossrec models list'")[1] == [
        "crossrec",
        "models",
        "list",
    ]
    assert shell_commands("docker compose exec ray-head crossrec version") == [
        ["crossrec", "version"]
    ]
    assert shell_commands("kubectl apply -f cluster/kuberay/rayjob-train.yaml") == []
    assert shell_commands("kubectl get rayservice crossrec") == []
    doc = tmp_path / "x.yaml"
    doc.write_text("# run:\n#   $ crossrec stream \\\n#       --workers 2\nkey: 1  # $ ray up\n")
    assert comment_commands(doc) == [["crossrec", "stream", "--workers", "2"]]
    assert resolve(["crossrec", "--log-level", "info", "online", "run", "--now"]) == (
        ["online", "run"],
        [((), "--log-level"), (("online", "run"), "--now")],
    )
    with pytest.raises(AssertionError, match="no subcommand 'trian'"):
        resolve(["crossrec", "trian"])
    with pytest.raises(AssertionError, match="names a group"):
        resolve(["crossrec", "online"])
    with pytest.raises(AssertionError, match="has no --worker"):
        resolve(["crossrec", "stream", "--worker=2"])


# --------------------------------------------------------------------------- repository paths
def test_every_repository_path_a_manifest_names_exists_and_ships_in_the_image() -> None:
    named: dict[str, set[str]] = {}
    for path in manifest_files():
        for match in REPO_PATH.findall(path.read_text()):
            named.setdefault(match, set()).add(path.name)
    assert {
        "cluster/serve_config.yaml",
        "cluster/crossrec.yaml",
        "configs/synthetic-transfer.yaml",
    } <= set(named)
    for rel, files in named.items():
        assert (ROOT / rel).exists(), f"{rel} (named in {sorted(files)}) does not exist"
    # What the containers read: paths in manifest values and in crossrec commands.
    used = {
        m
        for path in yaml_files()
        for doc in load_docs(path)
        for _, value in walk(doc)
        if isinstance(value, str)
        for m in REPO_PATH.findall(value)
    }
    used |= {
        m
        for _, command in all_commands()
        if command[0] == "crossrec"
        for word in command
        for m in REPO_PATH.findall(word)
    }
    assert "configs/synthetic-transfer.yaml" in used
    shipped = dockerfile_copies()
    for rel in used:
        assert any(rel == s or rel.startswith(f"{s}/") for s in shipped), (
            f"{rel} is used in a container but the Dockerfile does not copy it"
        )


# --------------------------------------------------------------------------- KubeRay
def cluster_specs() -> list[tuple[str, dict[str, Any]]]:
    specs = [("RayCluster", doc["spec"]) for doc in kube_docs("RayCluster")]
    specs += [("RayJob", doc["spec"]["rayClusterSpec"]) for doc in kube_docs("RayJob")]
    specs += [("RayService", doc["spec"]["rayClusterConfig"]) for doc in kube_docs("RayService")]
    return specs


def pod_containers(group: dict[str, Any]) -> list[dict[str, Any]]:
    return list(group["template"]["spec"]["containers"])


def test_kuberay_clusters_cpu_head_autoscaled_gpu_workers_and_secrets() -> None:
    for path in sorted((CLUSTER / "kuberay").glob("*.yaml")):
        for doc in load_docs(path):
            if doc["kind"].startswith("Ray"):
                assert doc["apiVersion"] == "ray.io/v1", path
    workdir = dockerfile_workdir()
    for kind, spec in cluster_specs():
        assert spec["enableInTreeAutoscaling"] is True, kind
        head = spec["headGroupSpec"]
        groups = spec["workerGroupSpecs"]
        for container in pod_containers(head):
            assert "nvidia.com/gpu" not in container.get("resources", {}).get("limits", {}), kind
        gpu_groups = [
            g
            for g in groups
            if any("nvidia.com/gpu" in c["resources"]["limits"] for c in pod_containers(g))
        ]
        assert gpu_groups, f"{kind}: no GPU worker group"
        for group in gpu_groups:
            assert all(c["image"].endswith("-gpu") for c in pod_containers(group)), kind
            assert group["minReplicas"] == 0, kind
            assert group["maxReplicas"] >= 1, kind
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], kind
        for group in [head, *groups]:
            mounts = {
                m["mountPath"] for c in pod_containers(group) for m in c.get("volumeMounts", [])
            }
            assert "/mnt/crossrec" in mounts, f"{kind}: a pod without the shared volume"
            claims = {
                v["persistentVolumeClaim"]["claimName"]
                for v in group["template"]["spec"]["volumes"]
                if "persistentVolumeClaim" in v
            }
            assert claims == {"crossrec-shared"}, kind
            for container in pod_containers(group):
                assert container["image"].startswith(f"{CROSSREC_IMAGE}:"), kind
                assert container["workingDir"] == workdir, kind
                env = {e["name"]: e for e in container["env"]}
                assert set(env) >= SECRET_ENV, kind
                for name in SECRET_ENV:
                    assert "value" not in env[name], f"{kind}: {name} has a literal value"
                    ref = env[name]["valueFrom"]["secretKeyRef"]
                    if name == "CROSSREC_API_KEY":
                        # Required: with serve.auth 'key' a missing key must stop the pod, not
                        # open the write endpoints.
                        assert not ref.get("optional", False), f"{kind}: the API key is optional"
                    else:
                        assert ref["optional"] is True, f"{kind}: {name} must be optional"


def test_kuberay_shared_volume_is_the_same_claim_everywhere() -> None:
    claims = kube_docs("PersistentVolumeClaim")
    assert len(claims) == 3  # one per file, so each file applies on its own
    assert all(claim == claims[0] for claim in claims)
    assert claims[0]["metadata"]["name"] == "crossrec-shared"
    assert claims[0]["spec"]["accessModes"] == ["ReadWriteMany"]


def test_rayjob_trains_on_the_cluster_into_shared_storage() -> None:
    (job,) = kube_docs("RayJob")
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    (command,) = shell_commands(spec["entrypoint"])
    path, _ = resolve(command)
    assert path == ["train"]
    assert command[command.index("--address") + 1] == "auto"
    storage = command[command.index("--storage") + 1]
    assert PurePosixPath(storage).is_relative_to("/mnt/crossrec"), storage


# --------------------------------------------------------------------------- compose
COMPOSE_CONFIG = "cluster/single-host.yaml"
COMPOSE_SERVE_CONFIG = "cluster/serve_config.single-host.yaml"


def test_compose_wires_services_to_its_crossrec_config() -> None:
    services = compose()["services"]
    cfg = load_config(str(ROOT / COMPOSE_CONFIG))
    assert cfg.stream.bootstrap_servers is not None
    assert cfg.feature_store.url is not None
    kafka_host, _, kafka_port = cfg.stream.bootstrap_servers.partition(":")
    kafka = services[kafka_host]
    assert kafka["image"].startswith("apache/kafka:")
    assert f"{kafka_host}:{kafka_port}" in kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    redis_url = urlsplit(cfg.feature_store.url)
    assert services[redis_url.hostname]["image"].startswith("redis:")
    assert (redis_url.port or 6379) == 6379
    # The topics the consumers read and dead-letter to exist before anything consumes.
    init = " ".join(services["kafka-init"]["command"])
    created = set(re.findall(r"--create --if-not-exists\s+--topic (\S+)", init))
    assert created == {cfg.stream.topic, cfg.stream.dead_letter_topic}


def test_compose_health_dependencies_and_loopback_ports() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} is not loopback-only"
        for dep, condition in service.get("depends_on", {}).items():
            assert dep in services, name
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits on {dep}'s healthcheck"
            else:
                assert condition["condition"] == "service_completed_successfully", name
                assert services[dep].get("restart") == "no", dep
    for needed in ("kafka", "redis", "ray-head"):
        assert "healthcheck" in services[needed], needed
    serve_port = yaml.safe_load((ROOT / COMPOSE_SERVE_CONFIG).read_text())["http_options"]
    assert f"127.0.0.1:{serve_port['port']}:{serve_port['port']}" in services["ray-head"]["ports"]
    head = services["ray-head"]["command"]
    assert head[:4] == ["ray", "start", "--head", "--block"]
    client_port = next(w.split("=")[1] for w in head if w.startswith("--ray-client-server-port"))
    assert services["serve"]["command"][:2] == ["serve", "deploy"]
    assert "http://ray-head:8265" in services["serve"]["command"]
    assert COMPOSE_SERVE_CONFIG in services["serve"]["command"]
    for name in ("stream", "online"):
        command = services[name]["command"]
        assert command[0] == "crossrec", name
        assert f"--address=ray://ray-head:{client_port}" in command, name
        assert f"--config={COMPOSE_CONFIG}" in command, name
        assert set(services[name]["environment"]) == SECRET_ENV, name
    assert "--set=online.runner=ray" in services["online"]["command"]


def test_compose_volumes_put_registry_and_runs_where_every_container_sees_them() -> None:
    services = compose()["services"]
    workdir = PurePosixPath(dockerfile_workdir())
    registry = PurePosixPath(
        next(
            w.split("=", 2)[2]
            for w in services["online"]["command"]
            if w.startswith("--set=registry.root=")
        )
    )
    # The learner writes versions (its Ray tasks on the head too); the replicas on the head
    # load them: one volume, one path, inside the image's working directory.
    for name in ("ray-head", "online"):
        mounts = [PurePosixPath(v.split(":")[1]) for v in services[name]["volumes"]]
        assert any(registry.is_relative_to(m) and m.is_relative_to(workdir) for m in mounts), name


def test_compose_head_has_the_gpus_the_serve_config_asks_for() -> None:
    head = compose()["services"]["ray-head"]
    serve_config = yaml.safe_load((ROOT / COMPOSE_SERVE_CONFIG).read_text())
    cfg = load_config(str(ROOT / serve_config["applications"][0]["args"]["config"]))
    reservations = head.get("deploy", {}).get("resources", {}).get("reservations", {})
    has_gpu = any("gpu" in device["capabilities"] for device in reservations.get("devices", []))
    if cfg.serve.encoder.num_gpus > 0:  # else the encoder replicas would never be placed
        assert has_gpu, "the encoder replicas ask for a GPU: the head must reserve one"
    assert head["image"].endswith("-gpu") == has_gpu, "CUDA image exactly when GPUs are given"


def test_every_dependency_declares_the_floor_make_test_floors_installs() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "floors.py")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    pins = dict(line.split("==") for line in done.stdout.split())
    for needed in ("torch", "transformers", "ray", "kafka-python", "redis", "confluent-kafka"):
        assert needed in pins, needed
    # The floor of torch is the version the Makefile and constraints.txt install first.
    assert f"torch=={pins['torch']}" in (ROOT / "constraints.txt").read_text()
    assert f'"torch=={pins["torch"]}"' in (ROOT / "Makefile").read_text()
