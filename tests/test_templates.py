"""Templates in git with tags, `agentcycle new`, `templates update/list/catalog/export`:
real Copier, real git, the shipped templates (and changed copies of them)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from agentcycle.cli.main import app
from agentcycle.templates import (
    assemble,
    export_templates,
    list_templates,
    materialize,
    new_project,
    publish,
    read_answers,
    template_names,
    templates_home,
)

runner = CliRunner()
NAME = "tkt-rag-agent"


def cli(*args):
    return runner.invoke(app, [*map(str, args)])


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def commit_all(cwd: Path, message: str) -> None:
    git(cwd, "add", "-A")
    git(cwd, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)


def assemble_changed(version: str, extra: dict[str, str]):
    """The shipped template at another version, with files added or replaced."""
    def build(dest: Path) -> None:
        assemble(NAME, dest)
        manifest = yaml.safe_load((dest / "manifest.yaml").read_text())
        manifest["metadata"]["version"] = version
        (dest / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
        for rel, text in extra.items():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_text(text)
    return build


def test_the_four_templates_are_shipped():
    assert template_names() == ["tkt-agentic-workflow", "tkt-multi-agent",
                                "tkt-rag-agent", "tkt-tool-agent"]


@pytest.fixture
def frozen(tmp_path) -> Path:
    """The shipped template assembled once (its sources may change while tests run)."""
    path = tmp_path / "frozen"
    assemble(NAME, path)
    return path


def copy_of(source: Path):
    def build(dest: Path) -> None:
        shutil.copytree(source, dest, dirs_exist_ok=True)
    return build


def test_publishing_is_idempotent_and_tags_the_manifest_version(frozen):
    repo = templates_home() / NAME
    first = publish(NAME, copy_of(frozen), repo)
    second = publish(NAME, copy_of(frozen), repo)
    assert first.tag == second.tag == f"v{first.manifest.metadata.version}"
    assert first.commit == second.commit
    assert git(repo, "rev-list", "--count", "HEAD") == "1"
    assert git(repo, "status", "--porcelain") == ""
    assert materialize(NAME).repo == repo


def test_changed_content_without_a_bump_becomes_a_post_release(frozen):
    repo = templates_home() / NAME
    release = publish(NAME, copy_of(frozen), repo)
    version = release.manifest.metadata.version
    post1 = publish(NAME, assemble_changed(version, {"NOTES.md": "one\n"}), repo)
    post2 = publish(NAME, assemble_changed(version, {"NOTES.md": "two\n"}), repo)
    assert (post1.tag, post2.tag) == (f"v{version}.post1", f"v{version}.post2")
    bumped = publish(NAME, assemble_changed("9.0.0", {"NOTES.md": "two\n"}), repo)
    assert bumped.tag == "v9.0.0"
    assert git(repo, "rev-list", "--count", "HEAD") == "4"


def test_two_processes_publish_one_version(isolated_home, frozen):
    repo = isolated_home / "templates" / NAME
    code = ("import shutil, sys; from pathlib import Path; "
            "from agentcycle.templates import publish; "
            "build = lambda d: shutil.copytree(sys.argv[1], d, dirs_exist_ok=True); "
            f"print(publish('{NAME}', build, Path(sys.argv[2])).tag)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(frozen), str(repo)],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    tags = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert tags[0] == tags[1] and tags[0].startswith("v")
    assert git(repo, "tag", "--list").splitlines() == [tags[0]]
    assert git(repo, "rev-list", "--count", "HEAD") == "1"


def test_new_renders_commits_and_records_answers(tmp_path):
    dest = tmp_path / "my-agent"
    project = new_project(NAME, dest, {"llm_model": "gpt-4o-mini",
                                       "author_name": "Ada", "author_email": "ada@x.org"})
    answers = read_answers(dest)
    assert answers["_commit"] == f"v{project.version}"
    assert Path(answers["_src_path"]) == templates_home() / NAME
    assert answers["project_name"] == "my-agent"
    assert answers["llm_model"] == "gpt-4o-mini"
    assert answers["author_name"] == "Ada"
    assert (dest / "thinkube.yaml").is_file() and not (dest / "manifest.yaml").exists()
    assert git(dest, "status", "--porcelain") == ""
    assert git(dest, "log", "--format=%an <%ae>") == "Ada <ada@x.org>"
    assert "AGENTCYCLE_API_KEYS" in project.secrets


def test_new_from_the_cli(tmp_path):
    result = cli("new", NAME, tmp_path / "cli-agent", "--defaults")
    assert result.exit_code == 0, result.output
    assert "created" in result.output
    assert (tmp_path / "cli-agent" / ".copier-answers.yml").is_file()


@pytest.mark.parametrize(("args", "message"), [
    (["tkt-nope", "{d}/a"], "unknown template 'tkt-nope': choose one of tkt-agentic-workflow"),
    ([NAME, "{d}/Bad_Name"], "bad project name 'Bad_Name' (the folder's name): it must "
                                  "match ^[a-z][a-z0-9-]*$"),
    ([NAME, "{d}/taken"], "already exists"),
    ([NAME, "{d}/a", "--data", "llm_model=no spaces"], "parameter llm_model="),
    ([NAME, "{d}/a", "--data", "colour=red"], "unknown parameter 'colour'"),
    ([NAME, "{d}/a", "--data", "novalue"], "expected key=value"),
    ([NAME, "{d}/a", "--data", "project_name=other"], "project_name comes from"),
])
def test_new_bad_input_is_one_line_and_leaves_nothing(tmp_path, args, message):
    work = tmp_path / "work"
    (work / "taken").mkdir(parents=True)
    result = cli("new", *[a.format(d=work) for a in args])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output
    assert [p.name for p in work.iterdir()] == ["taken"]


def test_a_failing_render_leaves_nothing(tmp_path, monkeypatch):
    import agentcycle.templates._render as render_module

    broken = publish("broken", assemble_changed("1.0.0", {"bad.txt.jinja": "{{ nope("}),
                     tmp_path / "repos" / "broken")
    monkeypatch.setattr(render_module, "materialize", lambda name, settings=None: broken)
    (tmp_path / "out").mkdir()
    result = cli("new", NAME, tmp_path / "out" / "a")
    assert result.exit_code == 1 and "copier" in result.output, result.output
    assert list((tmp_path / "out").iterdir()) == []


def test_update_applies_a_new_version_and_keeps_the_users_edits(tmp_path):
    dest = tmp_path / "proj"
    new_project(NAME, dest)
    thinkube = dest / "thinkube.yaml"
    thinkube.write_text(thinkube.read_text() + "# deployed by the claims team\n")
    commit_all(dest, "a note")
    publish(NAME, assemble_changed("1.1.0", {"CHANGELOG.md": "1.1.0: a changelog\n"}),
            templates_home() / NAME)
    result = cli("templates", "update", dest)
    assert result.exit_code == 0, result.output
    assert "-> 1.1.0" in result.output
    assert (dest / "CHANGELOG.md").read_text() == "1.1.0: a changelog\n"
    assert thinkube.read_text().endswith("# deployed by the claims team\n")
    assert read_answers(dest)["_commit"] == "v1.1.0"
    commit_all(dest, "update")
    again = cli("templates", "update", dest)
    assert again.exit_code == 0 and "up to date" in again.output


def test_update_refuses_a_dirty_project_and_a_foreign_folder(tmp_path):
    dest = tmp_path / "proj"
    new_project(NAME, dest)
    (dest / "thinkube.yaml").write_text("edited\n")
    result = cli("templates", "update", dest)
    assert result.exit_code == 1 and "uncommitted changes" in result.output
    assert (dest / "thinkube.yaml").read_text() == "edited\n"
    (tmp_path / "plain").mkdir()
    result = cli("templates", "update", tmp_path / "plain")
    assert result.exit_code == 1 and "not a git repository" in result.output


def test_list_fits_80_columns():
    result = cli("templates", "list")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert {line.split()[0] for line in lines[1:] if line.strip()} == set(template_names())
    kinds = {item.name: item.kind for item in list_templates()}
    assert kinds == {"tkt-agentic-workflow": "workflow", "tkt-multi-agent": "multi",
                     "tkt-rag-agent": "rag", "tkt-tool-agent": "tool"}


def test_catalog_in_the_platforms_format(tmp_path):
    out = tmp_path / "meta" / "repositories.json"
    result = cli("templates", "catalog", "--out", out, "--org", "agents",
                 "--base-url", "https://git.example.com")
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    entries = data["repositories"]
    assert [e["name"] for e in entries] == template_names()
    for entry in entries:
        assert entry["type"] == "application_template"
        assert entry["deployment_type"] in {"app", "component", "knative"}
        assert entry["full_name"] == f"agents/{entry['name']}"
        assert entry["github_url"] == f"https://git.example.com/agents/{entry['name']}"
        assert entry["ssh_url"] == f"git@git.example.com:agents/{entry['name']}.git"
        assert entry["category"] in data["categories"]


def test_catalog_and_export_name_a_path_of_the_wrong_kind(tmp_path):
    result = cli("templates", "catalog", "--out", tmp_path)
    assert result.exit_code == 1 and "is a directory, not a file" in result.output
    assert list(tmp_path.iterdir()) == []  # no temp file left beside it
    (tmp_path / "file").write_text("x")
    result = cli("templates", "export", tmp_path / "file")
    assert result.exit_code == 1 and "is a file, not a folder" in result.output
    assert "Traceback" not in result.output


def test_export_is_a_copier_source_with_tags(tmp_path):
    import copier

    [path] = export_templates(tmp_path / "export", [NAME])
    tag = materialize(NAME).tag
    assert tag in git(path, "tag", "--list").splitlines()
    assert git(path, "remote") == ""
    platform_data = {  # what thinkube-control always passes (thinkube-deploy.md, 1)
        "project_name": "plain-copy", "project_description": "d", "author_name": "a",
        "author_email": "a@example.com", "domain_name": "example.com",
        "container_registry": "registry.example.com", "admin_username": "admin",
        "namespace": "plain-copy", "k8s_namespace": "plain-copy"}
    copier.run_copy(str(path), tmp_path / "plain-copy", data=platform_data, vcs_ref="HEAD",
                    defaults=True, overwrite=True, quiet=True)
    assert yaml.safe_load((tmp_path / "plain-copy" / ".copier-answers.yml").read_text())[
        "_commit"] == tag
    assert export_templates(tmp_path / "export", [NAME]) == [path]  # a rerun updates
    result = cli("templates", "export", tmp_path / "export", "--name", "tkt-nope")
    assert result.exit_code == 1 and "unknown template" in result.output


def test_update_marks_a_clash_with_the_users_edit(tmp_path):
    dest = tmp_path / "proj"
    new_project(NAME, dest)
    thinkube = dest / "thinkube.yaml"
    original = thinkube.read_text()
    thinkube.write_text(original + "# ours\n")
    commit_all(dest, "our line")
    changed = original + "# the template's\n"
    publish(NAME, assemble_changed("2.0.0", {"thinkube.yaml": changed}),
            templates_home() / NAME)
    result = cli("templates", "update", dest)
    assert result.exit_code == 0, result.output
    assert "conflicts to resolve" in result.output and "thinkube.yaml" in result.output
    text = thinkube.read_text()
    assert "<<<<<<< " in text and "# ours" in text and "# the template's" in text


def test_update_names_a_template_repository_that_is_gone(tmp_path):
    dest = tmp_path / "proj"
    new_project(NAME, dest)
    shutil.rmtree(templates_home() / NAME)
    result = cli("templates", "update", dest)
    assert result.exit_code == 1
    assert "is gone" in result.output and len(result.output.strip().splitlines()) == 1


def test_a_real_process_prints_one_line_for_an_unknown_template(tmp_path):
    done = subprocess.run([sys.executable, "-m", "agentcycle", "new", "tkt-nope",
                           str(tmp_path / "a")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: unknown template 'tkt-nope': choose one of " + ", ".join(template_names())]
    assert not (tmp_path / "a").exists()
