"""Routing policies: each orders or filters a route's candidate backends and says why.

A route applies its policies in the order written; the router then tries the
surviving candidates in order (fallback). Policies are registered by name with
``@policy`` so users can add their own the same way the built-ins are added; a route
may also name a Policy subclass by an entry point of the ``agentcycle.policies`` group
or by ``module:Class`` / ``file.py:Class`` (see :mod:`agentcycle.plugins`).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentcycle import plugins
from agentcycle.errors import ConfigError
from agentcycle.router._litellm import import_litellm
from agentcycle.router.backends import Backend
from agentcycle.router.pricing import prices_per_1k
from agentcycle.router.state import RouterState

Loc = tuple[str | int, ...]
ErrorKind = Literal["error", "timeout", "rate_limit", "context_window", "bad_request"]
ALL_KINDS: frozenset[str] = frozenset(
    {"error", "timeout", "rate_limit", "context_window", "bad_request"})


@dataclass
class RouteRequest:
    """One request on its way through a route's policies."""

    route: str
    messages: list[dict[str, Any]]
    params: dict[str, Any]
    key: str | None = None  # sticky A/B key: the user or session
    tags: list[str] = field(default_factory=list)
    arm: str | None = None
    timeout_s: float | None = None
    fallback_on: frozenset[str] = ALL_KINDS
    max_attempts: int | None = None
    context_skipped: bool = False  # a backend was skipped: the prompt exceeds its window
    retry_after_s: float | None = None  # set by rate_limit: refused (429) for this long
    _prompt_tokens: int | None = None

    def max_tokens_upper_bound(self) -> int:
        """Prompt plus output tokens can't exceed this (a token is at least a character):
        when it fits every window, the exact count (~150 us) is not needed."""
        chars = sum(len(str(m.get("content") or "")) + 8 for m in self.messages)
        return chars + int(self.params.get("max_tokens") or 0)

    def prompt_tokens(self) -> int:
        """Estimated with LiteLLM's counter, once, only for policies that need it."""
        if self._prompt_tokens is None:
            try:
                self._prompt_tokens = int(import_litellm().token_counter(messages=self.messages))
            except Exception:  # odd content parts: a rough estimate beats failing the call
                chars = sum(len(str(m.get("content", ""))) for m in self.messages)
                self._prompt_tokens = chars // 4
        return self._prompt_tokens


class PolicyOptionError(Exception):
    """A policy entry is wrong; ``loc`` is relative to the entry."""

    def __init__(self, loc: Loc, message: str):
        super().__init__(message)
        self.loc = loc
        self.message = message


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Policy:
    """Base class: ``apply`` returns the candidates to try, in order, and a reason (or None)."""

    name: ClassVar[str] = ""
    Options: ClassVar[type[Options]] = Options

    def __init__(self, options: Options, route_backends: list[str]):
        self.options = options
        self.route_backends = route_backends
        self.check()

    def check(self) -> None:
        """Raise PolicyOptionError for options that contradict the route."""

    def check_resources(self) -> None:
        """Raise PolicyOptionError for what the options name but is missing (a model
        file). Run by load_config, so `router check` and `serve` fail at start-up rather
        than on the first request; policies built in code may fill it in later."""

    async def apply(self, candidates: list[Backend], request: RouteRequest,
                    state: RouterState) -> tuple[list[Backend], str | None]:
        raise NotImplementedError


POLICIES: dict[str, type[Policy]] = {}


def policy(name: str):
    """Register a Policy subclass under the name a route's YAML uses."""

    def register(cls: type[Policy]) -> type[Policy]:
        cls.name = name
        POLICIES[name] = cls
        return cls

    return register


def policy_class(name: str, base_dir: str | Path | None = None) -> type[Policy]:
    """A registered name, an entry point of ``agentcycle.policies``, or ``module:Class`` /
    ``file.py:Class`` (relative to ``base_dir``) -> the Policy subclass; ConfigError if not."""
    cls = POLICIES.get(name)
    if cls is not None:
        return cls
    if plugins.is_reference(name):
        found = plugins.load_object(name, base_dir, kind="class")
    else:
        found = plugins.entry_point_object(plugins.POLICIES, name)
        if found is None:
            known = sorted({*POLICIES, *plugins.entry_point_names(plugins.POLICIES)})
            raise ConfigError(f"unknown policy '{name}' (known: {', '.join(known)}; or "
                              "module:Class, file.py:Class)")
    if not (isinstance(found, type) and issubclass(found, Policy)):
        what = f"the class {found.__name__}" if isinstance(found, type) else (
            f"a {type(found).__name__}")
        raise ConfigError(f"policy '{name}' is {what}, not a subclass of "
                          "agentcycle.router.Policy")
    if not found.name:  # not registered with @policy: known by what the config calls it
        found.name = name.rpartition(":")[2]
    return found


def validate_policy(item: str | dict[str, Any], route_backends: list[str],
                    base_dir: str | Path | None = None) -> Policy:
    """Build one policy from its YAML entry (a name, or ``{name: {options}}``)."""
    if isinstance(item, dict):
        if len(item) != 1:
            raise PolicyOptionError((), "write a policy as `name` or `{name: {options}}`")
        [(name, raw)] = item.items()
    else:
        name, raw = item, None
    try:
        cls = policy_class(str(name), base_dir)
    except ConfigError as exc:
        raise PolicyOptionError((name,) if isinstance(item, dict) else (), str(exc)) from None
    try:
        options = cls.Options.model_validate(raw or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        if not isinstance(item, dict):  # a bare name has no YAML node to point into
            where = ".".join(str(part) for part in (name, *first["loc"]))
            raise PolicyOptionError((), f"{where}: {first['msg']} (give its options: "
                                    f"`{{{name}: {{...}}}}`)") from None
        raise PolicyOptionError((name, *first["loc"]), first["msg"]) from None
    return cls(options, route_backends)


# -- the built-in policies ------------------------------------------------------------

class FallbackOptions(Options):
    errors: list[ErrorKind] = sorted(ALL_KINDS)  # (not `on`: YAML reads it as true)
    max_attempts: int | None = Field(None, ge=1)


@policy("fallback")
class Fallback(Policy):
    """Which failures move on to the next backend (all of them when not configured)."""

    Options = FallbackOptions

    async def apply(self, candidates, request, state):
        request.fallback_on = frozenset(self.options.errors)
        request.max_attempts = self.options.max_attempts
        return candidates, None


class TimeoutOptions(Options):
    seconds: float = Field(gt=0)


@policy("timeout")
class Timeout(Policy):
    """A per-route timeout for each backend attempt (overrides the backend's timeout_s)."""

    Options = TimeoutOptions

    async def apply(self, candidates, request, state):
        request.timeout_s = self.options.seconds
        return candidates, None


@policy("least_latency")
class LeastLatency(Policy):
    """Fastest first by moving-average latency; an unmeasured backend goes first once."""

    async def apply(self, candidates, request, state):
        ordered = sorted(candidates, key=lambda b: state.latency_ms.get(b.name, 0.0))
        first = ordered[0].name if ordered else None
        measured = state.latency_ms.get(first) if first else None
        why = f"least latency ({measured:.0f} ms avg)" if measured else "least latency (unmeasured)"
        return ordered, why


class CostCeilingOptions(Options):
    max_usd_per_request: float = Field(gt=0)
    assumed_output_tokens: int = Field(256, gt=0)
    cheapest_first: bool = False


@policy("cost_ceiling")
class CostCeiling(Policy):
    """Drop backends whose estimated cost for this request is over the ceiling."""

    Options = CostCeilingOptions

    def estimate(self, backend: Backend, request: RouteRequest) -> float:
        usd_in, usd_out = prices_per_1k(backend)
        if not (usd_in or usd_out):
            return 0.0
        output = request.params.get("max_tokens") or self.options.assumed_output_tokens
        return (usd_in * request.prompt_tokens() + usd_out * int(output)) / 1000

    async def apply(self, candidates, request, state):
        cost = {b.name: self.estimate(b, request) for b in candidates}
        kept = [b for b in candidates if cost[b.name] <= self.options.max_usd_per_request]
        if self.options.cheapest_first:
            kept.sort(key=lambda b: cost[b.name])
        dropped = [b.name for b in candidates if b not in kept]
        return kept, (f"cost ceiling dropped {', '.join(dropped)}" if dropped else None)


class BudgetOptions(Options):
    usd_per_day: float = Field(ge=0)


@policy("budget")
class Budget(Policy):
    """Once the route has spent its daily budget (UTC day), only local backends remain."""

    Options = BudgetOptions

    async def apply(self, candidates, request, state):
        spent = await state.aspent_today(request.route)
        if spent < self.options.usd_per_day:
            return candidates, None
        local = [b for b in candidates if b.local]
        budget = self.options.usd_per_day
        return local, f"budget spent (${spent:.4f} of ${budget:g} today): local only"


class TagOptions(Options):
    require: list[str] = []
    prefer: list[str] = []


@policy("tags")
class Tags(Policy):
    """Keep backends carrying the required tags (the route's and the request's)."""

    Options = TagOptions

    async def apply(self, candidates, request, state):
        required = set(self.options.require) | set(request.tags)
        kept = [b for b in candidates if required <= set(b.tags)]
        prefer = set(self.options.prefer)
        kept.sort(key=lambda b: not prefer & set(b.tags))
        return kept, (f"tags {','.join(sorted(required))}" if required else None)


class ABOptions(Options):
    arms: dict[str, float] = Field(min_length=2, description="backend -> weight")
    sticky: bool = True


@policy("ab")
class ABSplit(Policy):
    """Weighted A/B split; the same user or session key always lands on the same arm."""

    Options = ABOptions

    def check(self) -> None:
        for arm, weight in self.options.arms.items():
            if arm not in self.route_backends:
                raise PolicyOptionError(("ab", "arms", arm), f"arm '{arm}' is not a backend "
                                        "of this route")
            if weight < 0:
                raise PolicyOptionError(("ab", "arms", arm), "weights must be >= 0")
        if not 0 < sum(self.options.arms.values()) < float("inf"):
            raise PolicyOptionError(("ab", "arms"), "at least one weight must be > 0")

    def assign(self, route: str, key: str | None) -> str:
        if key and self.options.sticky:
            # A hash, not a table: the assignment survives restarts and needs no storage.
            digest = hashlib.sha256(f"{route}\0{key}".encode()).digest()
            point = int.from_bytes(digest[:8], "big") / 2**64
        else:
            point = random.random()
        total = sum(self.options.arms.values())
        for arm, weight in self.options.arms.items():
            point -= weight / total
            if point < 0:
                return arm
        return next(arm for arm, w in reversed(self.options.arms.items()) if w > 0)

    async def apply(self, candidates, request, state):
        arm = self.assign(request.route, request.key)
        if request.key and self.options.sticky:  # a shared state keeps the first arm
            arm = await state.asticky_arm(request.route, request.key, arm,
                                          [a for a, w in self.options.arms.items() if w > 0])
        request.arm = arm
        ordered = sorted(candidates, key=lambda b: b.name != arm)
        return ordered, f"a/b arm {arm}" + (" (sticky)" if request.key else "")


class QualityOptions(Options):
    model: str = Field(description="A QualityRouter file (agentcycle router train-quality).")
    strong: list[str] = Field(min_length=1)
    strong_share: float | None = Field(
        None, gt=0, lt=1, description="Recalibrate the threshold for this route's share of "
                                      "strong calls (default: the share it was trained for).")


@policy("quality")
class Quality(Policy):
    """Send the request to a strong backend when the learned router predicts the cheap
    one would fail it; otherwise the cheap backends go first."""

    Options = QualityOptions

    def check(self) -> None:
        for i, name in enumerate(self.options.strong):
            if name not in self.route_backends:
                raise PolicyOptionError(("quality", "strong", i),
                                        f"'{name}' is not a backend of this route")
        self._model: Any = None

    def check_resources(self) -> None:
        if not Path(self.options.model).expanduser().is_file():
            raise PolicyOptionError(("quality", "model"), f"no quality router model at "
                                    f"{self.options.model} (train one: agentcycle router "
                                    "train-quality)")

    def predictor(self) -> Any:
        if self._model is None:  # loading embeds a model: only when a request needs it
            from agentcycle.router.quality import QualityRouter

            model = QualityRouter.load(self.options.model)
            share = self.options.strong_share
            # One trained scorer serves routes with different budgets for strong calls.
            self._model = model.calibrate(share) if share is not None else model
        return self._model

    async def apply(self, candidates, request, state):
        # Embedding the prompt is CPU work: keep it off the event loop.
        use_strong, p_fail = await asyncio.to_thread(
            lambda: self.predictor().predict(request.messages))
        strong = set(self.options.strong)
        ordered = sorted(candidates, key=lambda b: (b.name in strong) != use_strong)
        return ordered, f"quality p_fail={p_fail:.2f} -> {'strong' if use_strong else 'cheap'}"


def build_policies(items: list[str | dict[str, Any]], route_backends: list[str]) -> list[Policy]:
    return [validate_policy(item, route_backends) for item in items]
