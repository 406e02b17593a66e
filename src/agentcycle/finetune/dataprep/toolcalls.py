"""Tool-use training data: records generated from templates, run through the real tools,
and rendered into prompt/completion pairs exactly as the serving gate renders them.

A spec (YAML) lists templates: user prompts with slots, the calls those prompts deserve
(none for greetings, questions about the assistant, out-of-scope requests) and the final
answer. :func:`build_tool_dataset` fills the slots, validates each
call's arguments against its tool's JSON schema, runs the REAL tool on them and writes
records in the OpenAI fine-tuning format. :func:`tool_record_to_examples` turns a record
into one example per assistant turn, with the prompt text the gate builds for a model
whose template ignores ``tools`` (:mod:`agentcycle.serving.toolcalls`): the model learns
exactly the prompt it will be served.

Templates are Jinja: ``{{ rent | crowns }}`` in a prompt, ``"{{ rent }}"`` as an argument
(a lone expression keeps its type: an int stays an int), ``{{ result.deadline }}`` in an
answer. A slot's value may itself hold a template (rendered once more).
"""

from __future__ import annotations

import importlib
import json
import random
import re
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import jinja2
import jsonschema

from agentcycle.agents.tools import Tool, as_tools
from agentcycle.errors import AgentcycleError, DataError
from agentcycle.finetune.dataprep.leakage import normalise
from agentcycle.serving.toolcalls import prepare_request, render_history

Example = dict[str, list[dict[str, Any]]]  # finetune.data's prompt/completion pair

_LONE = re.compile(r"^\{\{\s*(.+?)\s*\}\}$", re.DOTALL)
_SENTENCE = re.compile(r"(.+?[.;:])(?:\s|$)", re.DOTALL)
_ATTEMPTS = 30  # draws per wanted record before a template counts as exhausted


def _first_sentence(text: str) -> str:
    match = _SENTENCE.match(" ".join(str(text).split()))
    return match.group(1) if match else str(text)


def _crowns(value: Any) -> str:
    number = float(value)
    return f"{number:,.0f}" if number == int(number) else f"{number:,.2f}"


def _add_days(day: str, days: int) -> str:
    return (date.fromisoformat(str(day)) + timedelta(days=int(days))).isoformat()


_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
_ENV.filters.update(first_sentence=_first_sentence, crowns=_crowns, add_days=_add_days)


SPEC_KEYS = {"tools", "system", "system_ref", "slots", "templates"}


def load_tool_spec(path: str | Path) -> dict[str, Any]:
    """The spec file, parsed; DataError (with the line) for a missing file, bad YAML,
    a key it does not know, or a part of the wrong kind."""
    from agentcycle._yaml import load_yaml_file

    file = Path(path)
    if not file.is_file():
        raise DataError(f"tool spec not found: {path}")
    doc = load_yaml_file(file, error=DataError)
    spec = doc.data
    if not isinstance(spec, dict) or not spec.get("templates"):
        raise DataError(f"{path}: a tool spec needs a 'templates' list")
    for key_node, _ in doc.root.value:  # the root is a mapping: spec is a dict
        if key_node.value not in SPEC_KEYS:
            raise DataError(f"{path}:{key_node.start_mark.line + 1}: {key_node.value}: unknown "
                            f"key; a tool spec has {', '.join(sorted(SPEC_KEYS))}")
    kinds = {"templates": (list, "a list"), "slots": (dict, "a mapping"),
             "tools": (str, "'package.module:function'"),
             "system_ref": (str, "'package.module:NAME'"), "system": (str, "text")}
    for key, (kind, described) in kinds.items():
        if key in spec and not isinstance(spec[key], kind):
            raise doc.error((key,), f"must be {described}", DataError)
    return spec


def _resolve(ref: str, what: str) -> Any:
    module, _, name = str(ref).partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise DataError(f"{what} '{ref}' not found: give it as 'package.module:name'") from None


def spec_tools(spec: dict[str, Any], settings: Any = None) -> list[Any]:
    """The tools a spec names (``tools: package.module:factory``, called with settings)."""
    if "tools" not in spec:
        raise DataError("the tool spec names no 'tools' factory (package.module:function)")
    factory = _resolve(spec["tools"], "tools factory")
    if not callable(factory):
        raise DataError(f"tools factory '{spec['tools']}' is not a function")
    try:
        tools = list(factory(settings))
        as_tools(tools)  # each one usable as a tool, or the error says which is not
    except AgentcycleError:
        raise
    except Exception as exc:  # a user's factory: its failure, named, not a traceback
        raise DataError(f"tools factory '{spec['tools']}' failed: "
                        f"{type(exc).__name__}: {exc}") from None
    if not tools:
        raise DataError(f"tools factory '{spec['tools']}' returned no tools")
    return tools


def spec_system_prompt(spec: dict[str, Any]) -> str:
    """``system`` (text) or ``system_ref`` (package.module:CONSTANT), so the training
    prompt can be the very constant the agent is served with."""
    text = _resolve(spec["system_ref"], "system_ref") if "system_ref" in spec else spec.get(
        "system")
    if not isinstance(text, str) or not text.strip():
        raise DataError("the tool spec needs a 'system' prompt (or 'system_ref')")
    return text


def build_tool_dataset(spec: dict[str, Any], tools: list[Any], *, seed: int) -> list[dict]:
    """Records in the OpenAI fine-tuning format, from a spec's templates and real tool runs.

    Each template draws with its own random stream (seeded by ``seed`` and its id), so
    editing one template leaves the records of the others as they were. A user prompt is
    used once across the whole set."""
    offered = as_tools(tools)
    schemas = [t.openai_schema() for t in offered.values()]
    system = spec_system_prompt(spec)
    shared = spec.get("slots") or {}
    seen: set[str] = set()
    records: list[dict] = []
    for index, template in enumerate(spec.get("templates") or []):
        name = _template_name(template, index)
        try:
            records += _expand(template, shared, offered, schemas, system, seed, seen, name)
        except AgentcycleError as exc:
            raise DataError(f"template '{name}': {exc}") from None
        except (jinja2.TemplateError, TypeError, KeyError, ValueError) as exc:
            raise DataError(f"template '{name}': {type(exc).__name__}: {exc}") from None
    return records


def _template_name(template: Any, index: int) -> str:
    if not isinstance(template, dict) or not template.get("prompts"):
        raise DataError(f"templates[{index}]: each template needs 'prompts' (a list)")
    return str(template.get("id") or f"templates[{index}]")


def _expand(template: dict, shared: dict, tools: dict[str, Tool], schemas: list[dict],
            system: str, seed: int, seen: set[str], name: str) -> list[dict]:
    prompts, calls = template["prompts"], template.get("calls") or []
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        raise DataError("'prompts' must be a list of strings")
    if "answer" not in template:
        raise DataError("needs an 'answer' (the assistant's final reply)")
    for call in calls:
        if not isinstance(call, dict) or call.get("name") not in tools:
            raise DataError(f"calls an unknown tool {call!r}; the tools are: "
                            f"{', '.join(sorted(tools))}")
    slots = {**shared, **(template.get("slots") or {})}
    count = int(template.get("count", len(prompts)))
    rng = random.Random(f"{seed}:{name}")
    decks: dict[str, list] = {}
    records: list[dict] = []
    for _ in range(count * _ATTEMPTS):
        if len(records) == count:
            break
        values = {key: _draw(spec_, rng, key, decks) for key, spec_ in slots.items()}
        prompt = _render(rng.choice(prompts), values).strip()
        if normalise(prompt) in seen:
            continue
        seen.add(normalise(prompt))
        records.append(_record(template, calls, values, prompt, tools, schemas, system, rng))
    if len(records) < count:
        raise DataError(f"only {len(records)} distinct prompts for count {count}: add "
                        "prompts or slot values, or lower the count")
    return records


def _record(template: dict, calls: list[dict], values: dict, prompt: str,
            tools: dict[str, Tool], schemas: list[dict], system: str,
            rng: random.Random) -> dict:
    messages: list[dict[str, Any]] = [{"role": "system", "content": system},
                                      {"role": "user", "content": prompt}]
    results = []
    if calls:
        made = [_call(call, values, tools, rng) for call in calls]
        messages.append({"role": "assistant", "tool_calls": [m[0] for m in made]})
        for wire, result in made:
            results.append(result)
            # What the ToolAgent sends back: the result as json.dumps gives it.
            content = result if isinstance(result, str) else json.dumps(result)
            messages.append({"role": "tool", "tool_call_id": wire["id"], "content": content})
    context = {**values, "results": results, "result": results[0] if results else None}
    if "require" in template and _render(template["require"], context).strip() != "True":
        raise DataError(f"the requirement {template['require']!r} fails for {prompt!r} "
                        f"(the tool returned {results})")
    answer = _render(str(template["answer"]), context).strip()
    messages.append({"role": "assistant", "content": answer})
    return {"messages": messages, "tools": schemas}


def _call(call: dict, values: dict, tools: dict[str, Tool],
          rng: random.Random) -> tuple[dict, Any]:
    tool = tools[call["name"]]
    arguments = {key: _value(raw, values) for key, raw in (call.get("arguments") or {}).items()}
    unknown = set(arguments) - set(tool.parameters.get("properties") or {})
    if unknown:
        raise DataError(f"{tool.name} has no parameter {', '.join(sorted(unknown))}")
    try:
        jsonschema.validate(arguments, tool.parameters)
    except jsonschema.ValidationError as exc:
        raise DataError(f"arguments {arguments} do not fit {tool.name}'s schema: "
                        f"{exc.message}") from None
    try:
        result = tool.fn(**arguments)
    except Exception as exc:  # the spec asked the tool for something it refuses
        raise DataError(f"{tool.name}({arguments}) failed: {exc}") from None
    result = json.loads(json.dumps(result, default=str))  # as the agent records it
    wire = {"id": f"call_{rng.getrandbits(48):012x}", "type": "function",
            "function": {"name": tool.name,
                         "arguments": json.dumps(arguments, ensure_ascii=False)}}
    return wire, result


def _value(raw: Any, values: dict) -> Any:
    """An argument: a lone ``{{ expr }}`` keeps the expression's type; other strings
    render as text; anything else is a literal."""
    if not isinstance(raw, str):
        return raw
    if match := _LONE.match(raw.strip()):
        return _ENV.compile_expression(match.group(1), undefined_to_none=False)(**values)
    return _render(raw, values)


def _render(text: str, values: dict) -> str:
    out = _ENV.from_string(text).render(**values)
    # A slot value may hold a template of its own (a rule's phrasing with {{ date }}).
    return _ENV.from_string(out).render(**values) if "{{" in out else out


def _draw(spec: Any, rng: random.Random, key: str, decks: dict[str, list]) -> Any:
    """One value of a slot: a list (each value in turn, in a shuffled order: a template
    of 200 records over 20 values gives each about 10, where independent draws gave
    one value a single record), {range: [lo, hi, step]}, {date: [from, to]}, or a
    constant."""
    if isinstance(spec, list):
        if not spec:
            raise DataError(f"slot '{key}' has no values")
        if not decks.get(key):
            decks[key] = rng.sample(spec, len(spec))
        return decks[key].pop()
    if isinstance(spec, dict) and "range" in spec:
        low, high, *step = spec["range"]
        return rng.randrange(int(low), int(high) + 1, int(step[0]) if step else 1)
    if isinstance(spec, dict) and "date" in spec:
        start, end = (date.fromisoformat(str(d)) for d in spec["date"])
        return (start + timedelta(days=rng.randrange((end - start).days + 1))).isoformat()
    if isinstance(spec, dict):
        raise DataError(f"slot '{key}': use a list, {{range: [lo, hi, step]}} or "
                        f"{{date: [from, to]}}")
    return spec


# --- records -> training examples --------------------------------------------------------


def called_tool(record: dict[str, Any]) -> str:
    """The first tool a record's assistant calls; "" when it answers without one."""
    for message in record.get("messages") or []:
        for call in (message.get("tool_calls") or []) if isinstance(message, dict) else []:
            return str((call.get("function") or {}).get("name") or "")
    return ""


def tool_record_to_examples(record: dict[str, Any], where: str = "record") -> list[Example]:
    """One prompt/completion pair per assistant turn, as text the gate would send the
    model: tools in the system prompt, past calls as ``<tool_call>`` text, results as
    ``<tool_response>`` user turns; the completion is what the model must write."""
    messages, tools = record.get("messages"), record.get("tools") or []
    _check_record(messages, tools, where)
    examples = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or i == 0:
            continue
        prompt = prepare_request({"messages": messages[:i], "tools": tools})["messages"]
        [target] = render_history([message])
        examples.append({"prompt": [_plain(m) for m in prompt],
                         "completion": [{"role": "assistant", "content": target["content"]}]})
    return examples


def _plain(message: dict) -> dict[str, str]:
    return {"role": message["role"], "content": message.get("content") or ""}


def _check_record(messages: Any, tools: Any, where: str) -> None:
    if not isinstance(messages, list) or len(messages) < 2:
        raise DataError(f"{where}: 'messages' must be a list of at least 2 messages")
    if not isinstance(tools, list) or not all(
            isinstance(t, dict) and isinstance(t.get("function"), dict)
            and t["function"].get("name") for t in tools):
        raise DataError(f"{where}: 'tools' must be a list of "
                        '{"type": "function", "function": {"name": ...}}')
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        calls = message.get("tool_calls") if isinstance(message, dict) else None
        if role not in ("system", "user", "assistant", "tool"):
            raise DataError(f"{where}: messages[{i}] needs a role (system/user/assistant/tool)")
        if calls is not None and not (role == "assistant" and isinstance(calls, list) and all(
                isinstance(c, dict) and isinstance(c.get("function"), dict)
                and c["function"].get("name") for c in calls)):
            raise DataError(f"{where}: messages[{i}].tool_calls must be a list of "
                            '{"type": "function", "function": {"name": ..., "arguments": ...}}')
        if not calls and not isinstance(message.get("content"), str):
            raise DataError(f"{where}: messages[{i}] needs a string content")
    if messages[-1]["role"] != "assistant":
        raise DataError(f"{where}: the last message must be the assistant's")
