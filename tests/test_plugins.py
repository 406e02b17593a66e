"""User extensions: entry points of a real (tiny) installed distribution, and
`module:attr` / `file.py:attr` references beside a router config or a suite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from agentcycle import plugins
from agentcycle.cli.main import app
from agentcycle.errors import ConfigError
from helpers import BackgroundServer, free_port, openai_fake_app

runner = CliRunner()
MESSAGES = [{"role": "user", "content": "Hello?"}]

PACKAGE = '''
from agentcycle.agents import AgentResult, BaseAgent
from agentcycle.evals.types import Score
from agentcycle.router import Policy


def shout(text: str) -> str:
    """Upper-case a text.

    Args:
        text: what to shout
    """
    return text.upper()


class EchoAgent(BaseAgent):
    kind = "echo"

    def run(self, task, **options):
        return AgentResult(answer=f"echo: {task}", kind=self.kind)


def has_hello(case, output, ctx):
    found = "hello" in output.text.lower()
    return Score(value=float(found), passed=found, explanation="" if found else "no hello")


class ReverseOrder(Policy):
    async def apply(self, candidates, request, state):
        return list(reversed(candidates)), "reversed"
'''

ENTRY_POINTS = """
[agentcycle.tools]
shout = acplug_demo:shout

[agentcycle.agents]
echo = acplug_demo:EchoAgent

[agentcycle.scorers]
has_hello = acplug_demo:has_hello
broken = acplug_broken:anything

[agentcycle.policies]
reverse = acplug_demo:ReverseOrder
missing = acplug_demo:Nope
"""

POLICY_FILE = '''
from agentcycle.router.policies import Options, Policy


class PreferOptions(Options):
    backend: str


class Prefer(Policy):
    Options = PreferOptions

    async def apply(self, candidates, request, state):
        ordered = sorted(candidates, key=lambda b: b.name != self.options.backend)
        return ordered, f"prefer {self.options.backend}"


def not_a_policy():
    pass
'''

SCORER_FILE = '''
from agentcycle.evals.scoring import scorer
from agentcycle.evals.types import Score


def cites_a_section(case, output, ctx):
    return Score(value=float("§" in output.text), passed="§" in output.text)


@scorer("short_enough", threshold=1.0)
def short(case, output, ctx, max_chars: int = 80):
    return Score(value=float(len(output.text) <= max_chars), passed=True)
'''


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A distribution 'acplug-demo' as pip would leave it: a package and its dist-info."""
    root = tmp_path_factory.mktemp("site")
    (root / "acplug_demo").mkdir()
    (root / "acplug_demo" / "__init__.py").write_text(PACKAGE)
    (root / "acplug_broken.py").write_text("raise RuntimeError('plugin boom')\n")
    (root / "acplug_needs_dep.py").write_text("import acplug_not_installed  # noqa\n")
    info = root / "acplug_demo-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acplug-demo\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))
    for name in [m for m in sys.modules if m.startswith("acplug_")]:
        del sys.modules[name]


def error_of(fn, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as failure:
        fn(*args, **kwargs)
    message = str(failure.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# -- the loader ----------------------------------------------------------------------

def test_entry_points_of_each_group(site):
    from agentcycle.agents import Agent, Tool
    from agentcycle.evals.scorers import resolve_scorer
    from agentcycle.router.policies import policy_class

    assert "shout" in plugins.entry_point_names(plugins.TOOLS)
    assert {"missing", "reverse"} <= set(plugins.entry_point_names(plugins.POLICIES))
    tool = plugins.load_tool("shout")
    assert isinstance(tool, Tool) and tool.name == "shout" and tool.fn("hi") == "HI"
    assert "text" in tool.parameters["properties"]

    agent = plugins.load_agent_factory("echo")()
    assert isinstance(agent, Agent) and agent.run("ping").answer == "echo: ping"

    bound = resolve_scorer({"name": "has_hello", "threshold": 1.0})
    assert bound.name == "has_hello" and bound.threshold == 1.0
    assert policy_class("reverse").__name__ == "ReverseOrder"
    assert policy_class("reverse").name == "reverse"  # not registered: the entry point's name

    loaded = plugins.entry_point_object(plugins.SCORERS, "has_hello")
    assert loaded is bound.fn
    assert plugins.entry_point_object(plugins.SCORERS, "nope") is None


def test_a_broken_entry_point_is_one_line_naming_it(site):
    assert error_of(plugins.entry_point_objects, plugins.POLICIES) == (
        "entry point 'missing' in agentcycle.policies of acplug-demo: 'acplug_demo' has no "
        "attribute 'Nope' (it has: AgentResult, BaseAgent, EchoAgent, Policy, "
        "ReverseOrder, Score, has_hello, shout)")
    assert error_of(plugins.entry_point_object, plugins.SCORERS, "broken") == (
        "entry point 'broken' in agentcycle.scorers of acplug-demo: cannot import "
        "'acplug_broken' (for 'acplug_broken:anything'): it raised RuntimeError: plugin boom "
        "(at acplug_broken.py:1)")
    assert error_of(plugins.load_tool, "nope") == (
        "unknown tool 'nope' (installed: shout; or write module:name or file.py:name)")
    assert error_of(plugins.load_agent_factory, "nope") == (
        "unknown agent 'nope' (installed: echo; or write module:name or file.py:name)")


def test_references_to_a_module_and_a_file(tmp_path, site):
    (tmp_path / "my_tools.py").write_text("def add(a: int, b: int) -> int:\n"
                                          "    '''Add two numbers.'''\n    return a + b\n\n"
                                          "class Box:\n    class Inner:\n        x = 3\n")
    assert plugins.load_object("acplug_demo:shout")("a") == "A"
    assert plugins.load_object("my_tools.py:add", tmp_path)(1, 2) == 3
    assert plugins.load_object("my_tools.py:Box.Inner.x", tmp_path) == 3
    # Loaded once per version of the file: the config check and the router share classes.
    assert plugins.load_object("my_tools.py:Box", tmp_path) is plugins.load_object(
        str(tmp_path / "my_tools.py") + ":Box")
    assert plugins.load_tool("my_tools.py:add", tmp_path).name == "add"


@pytest.mark.parametrize(("ref", "message"), [
    ("no_colon", "bad reference 'no_colon': write package.module:name or "
                 "path/to/file.py:name"),
    ("acplug_nowhere.sub:f", "cannot import 'acplug_nowhere.sub' (for 'acplug_nowhere.sub:f'): "
                             "no module named 'acplug_nowhere'"),
    ("acplug_needs_dep:f", "cannot import 'acplug_needs_dep' (for 'acplug_needs_dep:f'): "
                           "No module named 'acplug_not_installed'"),
    ("acplug_broken:f", "cannot import 'acplug_broken' (for 'acplug_broken:f'): it raised "
                        "RuntimeError: plugin boom (at acplug_broken.py:1)"),
    ("agentcycle.errors:Nope", "'agentcycle.errors' has no attribute 'Nope' (it has: "
                               "AgentcycleError, ConfigError, DataError"),
    ("nope.py:f", "cannot load 'nope.py:f': no file "),
    ("boom.py:f", "cannot load 'boom.py:f': running boom.py raised ZeroDivisionError: "
                  "division by zero (at boom.py:2)"),
    ("bad.py:f", "cannot load 'bad.py:f': running bad.py raised SyntaxError: invalid syntax "
                 "(at bad.py:1)"),
    ("helper:f", "no module named 'helper' (for the file beside the config, write "
                 "helper.py:f)"),
    ("lib.py:f", "running lib.py raised JSONDecodeError: Expecting value: line 1 column 1 "
                 "(char 0) (at lib.py:2)"),  # the file's own line, not json's
    ("multi.py:f", "running multi.py raised ValueError: first second (at multi.py:1)"),
])
def test_every_failure_is_one_line(tmp_path, site, ref, message):
    (tmp_path / "boom.py").write_text("x = 1\ny = x / 0\n")
    (tmp_path / "bad.py").write_text("def f(:\n")
    (tmp_path / "helper.py").write_text("def f():\n    pass\n")
    (tmp_path / "lib.py").write_text("import json\njson.loads('')\n")
    (tmp_path / "multi.py").write_text("raise ValueError('first\\n  second')\n")
    assert message in error_of(plugins.load_object, ref, tmp_path)


def test_a_file_named_like_a_loaded_module_does_not_replace_it(tmp_path):
    (tmp_path / "json.py").write_text("VALUE = 'mine'\n")
    assert plugins.load_object("json.py:VALUE", tmp_path) == "mine"
    assert sys.modules["json"].dumps([1]) == "[1]"


def test_an_agent_that_is_neither_a_class_nor_a_callable(tmp_path):
    (tmp_path / "agents.py").write_text("NUMBER = 3\n")
    assert "is a int: give an Agent class" in error_of(plugins.load_agent_factory,
                                                       "agents.py:NUMBER", tmp_path)


# -- router configs ------------------------------------------------------------------

def router_yaml(a_url: str, b_url: str, extra: str = "") -> str:
    return textwrap.dedent(f"""\
        backends:
          a: {{model: openai/a, api_base: {a_url}/v1, transport: direct, local: true}}
          b: {{model: openai/b, api_base: {b_url}/v1, transport: direct, local: true}}
        tracing: false
        routes:
          default:
            backends: [a, b]
            policies: [reverse]
          pinned:
            backends: [b, a]
            policies: [{{my_policies.py:Prefer: {{backend: a}}}}]
        """) + extra


@pytest.fixture(scope="module")
def two_backends():
    with BackgroundServer(openai_fake_app(answer="from a")) as a, \
            BackgroundServer(openai_fake_app(answer="from b")) as b:
        yield a.url, b.url


def test_router_uses_an_entry_point_policy_and_a_file_beside_the_config(
        tmp_path, site, two_backends, monkeypatch):
    from agentcycle.router import Router, load_config

    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "my_policies.py").write_text(POLICY_FILE)
    config_file = tmp_path / "conf" / "router.yaml"
    config_file.write_text(router_yaml(*two_backends))
    monkeypatch.chdir(tmp_path)  # the file is found from the config's folder, not the cwd
    config = load_config(config_file)
    router = Router.from_config(config, log_path=False)
    try:
        reversed_ = router.complete(MESSAGES)
        pinned = router.complete(MESSAGES, route="pinned")
    finally:
        router.close()
    assert (reversed_.backend, reversed_.text) == ("b", "from b")
    assert (pinned.backend, pinned.text) == ("a", "from a")
    assert reversed_.reason.startswith("reversed") and pinned.reason.startswith("prefer a")
    assert [p.name for p in router.routes["pinned"].policies] == ["Prefer"]


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("[reverse]", "[revers]", "router.yaml:8: routes.default.policies.0: unknown policy "
                              "'revers' (known: ab, budget, cost_ceiling, fallback, "
                              "least_latency, missing, quality, rate_limit, reverse, tags, "
                              "timeout"),
    ("[reverse]", "[missing]", "router.yaml:8: routes.default.policies.0: entry point "
                               "'missing' in agentcycle.policies of acplug-demo: 'acplug_demo' "
                               "has no attribute 'Nope'"),
    ("[reverse]", "[my_policies.py:Nope]", "router.yaml:8: routes.default.policies.0: "
                                           "'my_policies.py' has no class 'Nope' (it has: "
                                           "Options, Policy, Prefer, PreferOptions, "
                                           "not_a_policy)"),
    ("[reverse]", "[my_policies.py:not_a_policy]",
     "router.yaml:8: routes.default.policies.0: policy 'my_policies.py:not_a_policy' is a "
     "function, not a subclass of agentcycle.router.Policy"),
    ("[reverse]", "[acplug_broken:X]", "router.yaml:8: routes.default.policies.0: cannot "
                                       "import 'acplug_broken' (for 'acplug_broken:X'): it "
                                       "raised RuntimeError: plugin boom"),
    ("{backend: a}", "{backend: a, weight: 2}",
     "router.yaml:11: routes.pinned.policies.0.my_policies.py:Prefer.weight: Extra inputs"),
    ("{my_policies.py:Prefer: {backend: a}}", "{gone.py:Prefer: {backend: a}}",
     "router.yaml:11: routes.pinned.policies.0.gone.py:Prefer: cannot load 'gone.py:Prefer': "
     "no file "),
])
def test_a_bad_user_policy_is_one_line_with_its_line(tmp_path, site, old, new, expected):
    from agentcycle.router import load_config

    (tmp_path / "my_policies.py").write_text(POLICY_FILE)
    text = router_yaml("http://127.0.0.1:9", "http://127.0.0.1:9")
    assert old in text
    (tmp_path / "router.yaml").write_text(text.replace(old, new))
    message = error_of(load_config, tmp_path / "router.yaml")
    assert message.replace(str(tmp_path) + "/", "").startswith(expected), message


def test_a_key_given_twice_in_a_router_config_is_an_error():
    from agentcycle.router import parse_config

    text = "backends:\n  a: {model: openai/a}\n  a: {model: openai/b}\n"
    assert error_of(parse_config, text, "router.yaml") == (
        "router.yaml:3: key 'a' appears twice in the same mapping")


def test_a_key_named_like_a_pydantic_type_keeps_its_place():
    """pydantic adds union members ('str', 'DatasetSpec') to error locations; a backend
    named 'Cloud' is in the file, so it stays in the field and the line."""
    from agentcycle.router import parse_config

    text = "backends:\n  ok: {model: openai/a}\n  Cloud:\n    model: openai/b\n    local: maybe\n"
    assert error_of(parse_config, text, "router.yaml").startswith(
        "router.yaml:5: backends.Cloud.local: Input should be a valid boolean")


def _cli_env(site: Path) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def test_router_serve_uses_user_policies(tmp_path, site, two_backends, isolated_home):
    from agentcycle.serving.server import free_port

    (tmp_path / "my_policies.py").write_text(POLICY_FILE)
    config = tmp_path / "router.yaml"
    config.write_text(router_yaml(*two_backends))
    port = free_port()
    cli = str(Path(sys.executable).parent / "agentcycle")
    proc = subprocess.Popen([cli, "router", "serve", "--config", str(config), "--port",
                             str(port)], env=_cli_env(site), cwd="/")
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        answers = [httpx.post(url + "/v1/chat/completions", timeout=30,
                              json={"model": route, "messages": MESSAGES}).json()
                   for route in ("default", "pinned")]
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    texts = [a["choices"][0]["message"]["content"] for a in answers]
    assert texts == ["from b", "from a"]


def test_router_serve_with_a_bad_policy_is_one_error_line(tmp_path, site):
    (tmp_path / "router.yaml").write_text(router_yaml("http://127.0.0.1:9", "http://127.0.0.1:9")
                                          .replace("[reverse]", "[acplug_broken:X]"))
    result = runner.invoke(app, ["router", "serve", "--config", str(tmp_path / "router.yaml"),
                                 "--port", str(free_port())])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "plugin boom" in lines[0]


# -- suites --------------------------------------------------------------------------

def write_suite(folder: Path, scorers: str) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "my_scorers.py").write_text(SCORER_FILE)
    (folder / "agent.py").write_text(
        "def ask(question):\n    return 'Hello, within 21 days (§ 7).' if 'deposit' in "
        "question else 'No idea.'\n")
    (folder / "suite.yaml").write_text(textwrap.dedent(f"""\
        name: plugins
        cases:
          - {{id: c1, input: "When is the deposit due?"}}
          - {{id: c2, input: "What about pets?"}}
        scorers: {scorers}
        target: python:agent.py:ask
        """))
    return folder / "suite.yaml"


def test_suite_scorers_from_a_file_and_an_entry_point(tmp_path, site):
    from agentcycle.evals import load_suite

    suite = load_suite(write_suite(tmp_path, "[my_scorers.py:cites_a_section, has_hello, "
                                             "{name: my_scorers.py:short, max_chars: 10}]"))
    bound = suite.bound_scorers()
    # A plain function is named after itself; an @scorer keeps its name and threshold.
    assert [(b.name, b.threshold) for b in bound] == [
        ("cites_a_section", 0.5), ("has_hello", 0.5), ("short_enough", 1.0)]
    assert bound[2].options == {"max_chars": 10}


@pytest.mark.parametrize(("scorers", "expected"), [
    ("[keywords, my_scorers.py:nope]", "suite.yaml:5: scorers[1]: 'my_scorers.py' has no "
                                       "function 'nope' (it has: Score, cites_a_section, "
                                       "scorer, short)"),
    ("[hello]", "suite.yaml:5: scorers[0]: unknown scorer 'hello' (known: "),
    ("[{name: my_scorers.py:short, max_char: 3}]", "suite.yaml:5: scorers[0]: scorer "
                                                   "'short_enough': bad options ['max_char']"),
    ("[acplug_broken:x]", "suite.yaml:5: scorers[0]: cannot import 'acplug_broken'"),
    ("[my_scorers.py:Score]", "suite.yaml:5: scorers[0]: scorer 'my_scorers.py:Score' is the "
                              "class Score, not a function (case, output, ctx, **options)"),
])
def test_a_bad_user_scorer_is_one_line_with_its_line(tmp_path, site, scorers, expected):
    from agentcycle.evals import load_suite

    suite = load_suite(write_suite(tmp_path, scorers))
    message = error_of(suite.bound_scorers)
    assert expected in message, message
    if "unknown scorer" in expected:
        assert "has_hello" in message and "keywords" in message


def test_eval_run_scores_with_user_scorers(tmp_path, site, isolated_home):
    """The real CLI in a fresh process: the entry point is found from PYTHONPATH."""
    suite = write_suite(tmp_path, "[my_scorers.py:cites_a_section, has_hello]")
    (tmp_path / "suite.yaml").write_text(suite.read_text() + "gates: ['has_hello.mean>=0.5']\n")
    cli = str(Path(sys.executable).parent / "agentcycle")
    done = subprocess.run([cli, "eval", "run", str(suite), "--no-mlflow", "--json"],
                          env=_cli_env(site), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    run = json.loads(done.stdout[done.stdout.index("{"):])
    assert run["metrics"]["cites_a_section.mean"] == 0.5
    assert run["metrics"]["has_hello.mean"] == 0.5


def test_eval_run_with_a_bad_scorer_is_one_error_line(tmp_path, site):
    suite = write_suite(tmp_path, "[my_scorers.py:nope]")
    result = runner.invoke(app, ["eval", "run", str(suite), "--no-mlflow"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "error: " in lines[0] and "has no function 'nope'" in lines[0]
