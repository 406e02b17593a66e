"""Agent templates: the four shipped Copier templates, versioned in local git
repositories, rendered into new projects, updated, listed and catalogued.

    from agentcycle.templates import new_project, update_project, list_templates
    project = new_project("tkt-rag-agent", Path("my-agent"))
"""

from agentcycle.templates._manifest import TemplateManifest, check_project_name, load_manifest
from agentcycle.templates._render import (
    NewProject,
    UpdateResult,
    new_project,
    read_answers,
    update_project,
)
from agentcycle.templates._repo import TemplateRelease, materialize, publish, templates_home
from agentcycle.templates._sources import assemble, template_names
from agentcycle.templates.catalog import (
    TemplateInfo,
    catalog,
    export_templates,
    list_templates,
    write_catalog,
)

__all__ = [
    "NewProject",
    "TemplateInfo",
    "TemplateManifest",
    "TemplateRelease",
    "UpdateResult",
    "assemble",
    "catalog",
    "check_project_name",
    "export_templates",
    "list_templates",
    "load_manifest",
    "materialize",
    "new_project",
    "publish",
    "read_answers",
    "template_names",
    "templates_home",
    "update_project",
    "write_catalog",
]
