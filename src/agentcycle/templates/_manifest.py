"""A template's ``manifest.yaml`` (the platform's ``TemplateManifest``): its metadata,
its 0-2 parameters with their checks, and the Copier questions made from them.

thinkube-control turns the manifest into Copier questions the same way; the reserved
answers every project gets (``project_name``, ``project_description``, ``author_name``,
``author_email``) are questions too, so ``copier update`` replays them from the
answers file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentcycle.errors import ConfigError

PROJECT_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
RESERVED = ("project_name", "project_description", "author_name", "author_email")
ANSWERS_FILE = ".copier-answers.yml"
_ANSWERS_TEMPLATE = (
    "# Changes here will be overwritten by Copier; do not edit by hand.\n"
    "{{ _copier_answers|to_nice_yaml -}}\n"
)
_TRUE = {"true", "yes", "y", "1", "on"}
_FALSE = {"false", "no", "n", "0", "off"}


class Parameter(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    type: Literal["str", "bool", "int", "choice"] = "str"
    description: str = ""
    default: Any = None
    required: bool = True
    pattern: str | None = None
    minLength: int | None = None  # noqa: N815 (the platform's spelling)
    maxLength: int | None = None  # noqa: N815
    min: int | None = None
    max: int | None = None
    choices: list[Any] | None = None

    def parse(self, raw: Any) -> Any:
        """``raw`` (a CLI string or a default) as this parameter's type; ConfigError if bad."""
        value = raw
        if self.type == "int":
            try:
                value = int(raw)
            except (TypeError, ValueError):
                raise self._bad(raw, "an integer") from None
            if self.min is not None and value < self.min:
                raise self._bad(raw, f">= {self.min}")
            if self.max is not None and value > self.max:
                raise self._bad(raw, f"<= {self.max}")
        elif self.type == "bool":
            if not isinstance(raw, bool):
                text = str(raw).strip().lower()
                if text not in _TRUE | _FALSE:
                    raise self._bad(raw, "true or false")
                value = text in _TRUE
        else:
            value = str(raw)
            if self.type == "choice" and self.choices and value not in map(str, self.choices):
                raise self._bad(raw, "one of " + ", ".join(map(str, self.choices)))
            if self.pattern and not re.fullmatch(self.pattern, value):
                raise self._bad(raw, f"matching {self.pattern}")
            if self.minLength is not None and len(value) < self.minLength:
                raise self._bad(raw, f"at least {self.minLength} characters")
            if self.maxLength is not None and len(value) > self.maxLength:
                raise self._bad(raw, f"at most {self.maxLength} characters")
        return value

    def _bad(self, raw: Any, expected: str) -> ConfigError:
        return ConfigError(f"parameter {self.name}={raw!r}: expected {expected}")

    def question(self) -> dict[str, Any]:
        """The Copier question for this parameter."""
        question: dict[str, Any] = {"type": "int" if self.type == "int" else
                                    "bool" if self.type == "bool" else "str"}
        if self.description:
            question["help"] = self.description
        if self.choices:
            question["choices"] = list(self.choices)
        if self.default is not None:
            question["default"] = self.default
        return question


class Secret(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    description: str = ""
    required: bool = True


class Metadata(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    title: str = ""
    description: str = ""
    version: str = "0.1.0"
    author: str = ""
    tags: list[str] = []


class TemplateManifest(BaseModel):
    """``manifest.yaml``: what the platform shows and asks before rendering."""

    model_config = ConfigDict(extra="allow")

    apiVersion: Literal["thinkube.io/v1"] = "thinkube.io/v1"  # noqa: N815
    kind: Literal["TemplateManifest"] = "TemplateManifest"
    metadata: Metadata
    parameters: list[Parameter] = []
    secrets: list[Secret] = []

    def answers(self, data: dict[str, str], *, use_defaults: bool) -> dict[str, Any]:
        """Check ``data`` (``--data`` pairs) against the parameters: typed answers.

        Unknown keys are refused. With ``use_defaults`` the others take their defaults
        (a required one without a default is refused); without, Copier asks for them."""
        known = {p.name: p for p in self.parameters}
        unknown = sorted(set(data) - set(known) - set(RESERVED))
        if unknown:
            names = ", ".join(known) or "none"
            raise ConfigError(f"unknown parameter '{unknown[0]}' for {self.metadata.name} "
                              f"(its parameters: {names})")
        answers: dict[str, Any] = {}
        for param in self.parameters:
            if param.name in data:
                answers[param.name] = param.parse(data[param.name])
            elif not use_defaults:
                continue  # Copier asks, showing the default
            elif param.default is not None:
                answers[param.name] = param.parse(param.default)
            elif param.required:
                raise ConfigError(f"{self.metadata.name} needs a value for parameter "
                                  f"'{param.name}': pass --data {param.name}=...")
        return answers


def load_manifest(template_dir: Path) -> TemplateManifest:
    path = Path(template_dir) / "manifest.yaml"
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing (every template needs a manifest.yaml)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    try:
        return TemplateManifest.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise ConfigError(f"{path}: {where}: {error['msg']}") from None


def check_project_name(name: str) -> str:
    if not PROJECT_NAME.fullmatch(name):
        raise ConfigError(f"bad project name '{name}' (the folder's name): it must match "
                          "^[a-z][a-z0-9-]*$, e.g. my-agent")
    return name


def prepare_for_copier(template_dir: Path, manifest: TemplateManifest) -> None:
    """Make an assembled template a Copier template that ``copier update`` can replay.

    A template with its own ``copier.yml`` is left as its author wrote it. One without
    gets the reserved answers and the manifest's parameters as questions (what
    thinkube-control does with a manifest); either way an answers file is rendered."""
    template_dir = Path(template_dir)
    if not any((template_dir / name).exists() for name in ("copier.yml", "copier.yaml")):
        reserved = {
            "project_name": {"type": "str", "help": "The project's name (its folder's name)",
                             "validator": "{% if not (project_name | regex_search("
                                          "'^[a-z][a-z0-9-]*$')) %}must match "
                                          "^[a-z][a-z0-9-]*${% endif %}"},
            "project_description": {"type": "str", "default": manifest.metadata.description},
            "author_name": {"type": "str", "default": "agentcycle user"},
            "author_email": {"type": "str", "default": "user@example.com"},
        }
        config: dict[str, Any] = {"_answers_file": ANSWERS_FILE,
                                  "_exclude": ["copier.yml", "manifest.yaml", ".git",
                                               "__pycache__", "*.py[co]"]}
        config |= reserved | {p.name: p.question() for p in manifest.parameters}
        (template_dir / "copier.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    if not any("_copier_conf.answers_file" in p.name for p in template_dir.iterdir()):
        (template_dir / "{{ _copier_conf.answers_file }}.jinja").write_text(_ANSWERS_TEMPLATE)
