"""The router YAML: errors name the file, the line and the field; the example loads."""

from pathlib import Path

import pytest

import agentcycle
from agentcycle.errors import ConfigError
from agentcycle.router import Router, load_config, parse_config

EXAMPLE = Path(agentcycle.__file__).parent / "examples" / "router.yaml"

GOOD = """\
backends:
  local:
    model: openai/base
    api_base: http://127.0.0.1:8000/v1
    local: true
  cloud:
    model: gpt-4o-mini
    api_key_env: TEST_CLOUD_KEY
routes:
  default:
    backends: [local, cloud]
    policies:
      - least_latency
      - budget: {usd_per_day: 1}
"""


def error_of(text: str, monkeypatch=None) -> str:
    with pytest.raises(ConfigError) as failure:
        parse_config(text, "router.yaml")
    return str(failure.value)


@pytest.fixture(autouse=True)
def cloud_key(monkeypatch):
    monkeypatch.setenv("TEST_CLOUD_KEY", "sk-test")


def test_a_good_config_builds_a_router():
    config = parse_config(GOOD, "router.yaml")
    router = Router.from_config(config, log_path=False, tracing=False)
    assert list(router.routes) == ["default"]
    assert [b.name for b in router.routes["default"].backends] == ["local", "cloud"]
    assert [p.name for p in router.routes["default"].policies] == ["least_latency", "budget"]
    assert router.by_name["cloud"].api_key == "sk-test"


@pytest.mark.parametrize(("change", "expected"), [
    (("    local: true", "    local: maybe"),
     "router.yaml:5: backends.local.local: Input should be a valid boolean"),
    (("    api_base: http://127.0.0.1:8000/v1", "    api_bas: x"),
     "router.yaml:4: backends.local.api_bas: Extra inputs are not permitted"),
    (("    model: gpt-4o-mini\n", ""),
     "router.yaml:6: backends.cloud.model: Field required"),
    (("[local, cloud]", "[local, clod]"),
     "router.yaml:11: routes.default.backends.1: unknown backend 'clod' (known: local, cloud)"),
    (("      - least_latency", "      - fastest"),
     "router.yaml:13: routes.default.policies.0: unknown policy 'fastest'"),
    (("    api_key_env: TEST_CLOUD_KEY", "    api_key_env: TEST_CLOUD_KEY\n    transport: direct"),
     "router.yaml:7: backends.cloud: Value error, transport: direct needs an api_base"),
    (("{usd_per_day: 1}", "{usd_per_day: -1}"),
     "router.yaml:14: routes.default.policies.1.budget.usd_per_day: Input should be greater"),
    (("{usd_per_day: 1}", "{usd_per_day: 1, dollars: 1}"),
     "router.yaml:14: routes.default.policies.1.budget.dollars: Extra inputs"),
])
def test_errors_name_the_line_and_the_field(change, expected):
    old, new = change
    assert old in GOOD
    assert error_of(GOOD.replace(old, new)).startswith(expected)


def test_a_missing_key_variable_is_named(monkeypatch):
    monkeypatch.delenv("TEST_CLOUD_KEY")
    assert error_of(GOOD) == ("router.yaml:8: backends.cloud.api_key_env: the environment "
                              "variable TEST_CLOUD_KEY is not set")
    assert parse_config(GOOD, require_keys=False).backends["cloud"].api_key_env


def test_invalid_yaml_and_wrong_shapes():
    assert error_of("backends: [a\nroutes: {}\n").startswith("router.yaml:2: invalid YAML")
    assert "a mapping with `backends:`" in error_of("- just a list\n")
    assert error_of("routes: {}\n").startswith("router.yaml:1: backends: Field required")
    ab = GOOD.replace("      - least_latency", "      - ab: {arms: {local: 1, elsewhere: 1}}")
    assert error_of(ab).startswith("router.yaml:13: routes.default.policies.0.ab.arms.elsewhere:"
                                   " arm 'elsewhere' is not a backend of this route")


def test_a_missing_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="cannot read router config .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_a_binary_file_or_a_bare_policy_needing_options_is_one_line(tmp_path):
    binary = tmp_path / "router.yaml"
    binary.write_bytes(b"\x00\xff\xfe")  # was a UnicodeDecodeError traceback
    with pytest.raises(ConfigError, match="cannot read router config .*: not UTF-8 text"):
        load_config(binary)
    bare = GOOD.replace("      - least_latency", "      - budget")
    assert error_of(bare).startswith("router.yaml:13: routes.default.policies.0: "
                                     "budget.usd_per_day: Field required")


def test_a_missing_quality_model_file_is_a_config_error(tmp_path):
    """It used to pass `router check` and fail every request of the route."""
    missing = GOOD.replace("      - least_latency",
                           f"      - quality: {{model: {tmp_path / 'q.skops'}, strong: [cloud]}}")
    assert error_of(missing).startswith("router.yaml:13: routes.default.policies.0.quality."
                                        "model: no quality router model at ")


def test_the_shipped_example_is_valid(monkeypatch):
    for name in ("AGENTCYCLE_API_KEY", "OPENAI_API_KEY", "AGENTCYCLE_ROUTER_KEY"):
        monkeypatch.setenv(name, "x")
    config = load_config(EXAMPLE)
    assert {"default", "ab"} <= set(config.routes)
    assert config.backends["tuned"].local and not config.backends["cloud"].local
    router = Router.from_config(config, log_path=False, tracing=False)
    assert [b.name for b in router.routes["default"].backends] == ["tuned", "base", "cloud"]


def test_the_public_api_changes_only_on_purpose():
    import agentcycle.router as router

    assert set(router.__all__) == {
        "POLICIES", "AllBackendsFailed", "Backend", "Completion", "Policy", "Route",
        "RouteRequest", "Router", "RouterConfig", "Stream", "StreamInterrupted",
        "default_backends", "load_config", "parse_config", "policy"}
    assert all(hasattr(router, name) for name in router.__all__)
    assert {"fallback", "timeout", "least_latency", "cost_ceiling", "budget", "tags", "ab",
            "quality"} <= set(router.POLICIES)
