"""LLM-as-judge: a model grades the answer against a rubric; its verdict is parsed robustly.

The judge is reached through ``ctx.judge``, an async ``(messages, model) -> text``
callable: build one from the agentcycle router (``router_judge``) or from any
OpenAI-compatible endpoint (``openai_judge``). Small local judges are weak graders; the
explanation says so when ``ctx.judge_is_small_local`` is set.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from agentcycle.errors import ConfigError, ServiceError
from agentcycle.evals.scoring import ScoreContext, scorer
from agentcycle.evals.types import Case, Output, Score

JudgeFn = Callable[[list[dict[str, Any]], str | None], Awaitable[str]]

DEFAULT_RUBRIC = ("The answer is correct: it states the same facts as the reference answer "
                  "(figures, deadlines, names) and adds nothing that contradicts it.")

_SYSTEM = ("You are a strict grader. Grade the answer against the rubric. Reply with JSON "
           'only: {"score": N, "reason": "..."}, where N is an integer from 1 (fails the '
           "rubric) to 5 (fully meets it).")

_NUMBER = r"[-+]?\d+(?:\.\d+)?"
_SHORT_REPLY_WORDS = 12
_JSON_KEYS = ("score", "rating", "grade", "value", "verdict", "result", "pass", "passed",
              "correct", "faithful", "label")
_PASS_WORDS = r"pass(?:ed|es)?|correct|true|faithful|supported|grounded|accept(?:ed)?"
_FAIL_WORDS = (r"fail(?:ed|s)?|incorrect|not correct|wrong|false|unfaithful|"
               r"not supported|unsupported|not grounded|not faithful|reject(?:ed)?|"
               r"does not meet|doesn't meet|not (?:a )?valid|invalid")


def _scaled(number: float, scale: float, *, had_point: bool) -> float:
    """A bare score on the judge's scale -> [0, 1]. ``0.8`` is read as a fraction already;
    an integer (``4``) as points on the 1..scale scale."""
    if had_point and 0.0 <= number <= 1.0:
        return number
    return min(1.0, max(0.0, number / scale))


def _word_verdict(text: str) -> float | None:
    """PASS/FAIL, correct/incorrect (the first verdict word wins); yes/no only as the
    reply's first word, since "no" is common in a reasoning ("no errors")."""
    first = re.match(r"\W*(yes|no)\b", text, re.I)
    if first:
        return 1.0 if first.group(1).lower() == "yes" else 0.0
    match = re.search(rf"\b(?:(?P<fail>{_FAIL_WORDS})|(?P<pass>{_PASS_WORDS}))\b", text, re.I)
    if match is None:
        return None
    return 0.0 if match.group("fail") else 1.0


def _from_json_value(value: Any, scale: float) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return _scaled(float(value), scale, had_point=isinstance(value, float))
    if isinstance(value, str):
        return parse_verdict(value, scale)[0]
    return None


def _from_json(text: str, scale: float) -> tuple[float, str] | None:
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            data = decoder.raw_decode(text, match.start())[0]
        except ValueError:
            continue
        if not isinstance(data, dict):
            continue
        lowered = {str(k).lower(): v for k, v in data.items()}
        reason = str(lowered.get("reason") or lowered.get("explanation") or "")
        for key in _JSON_KEYS:
            if key in lowered:
                value = _from_json_value(lowered[key], scale)
                if value is not None:
                    return value, reason
    return None


def parse_verdict(text: str, scale: float = 5.0) -> tuple[float | None, str]:
    """Read a judge's reply: JSON ``{"score": ..}``, "Score: 4/5", "8 out of 10", "80%",
    PASS/FAIL, yes/no, or a bare number, with any noise around it.

    Returns ``(value in [0, 1], reason)``, or ``(None, why)`` when no verdict is found.
    """
    if not text or not text.strip():
        return None, "the judge replied with nothing"
    found = _from_json(text, scale)
    if found is not None:
        return found[0], found[1] or "parsed from JSON"
    label = r"\b(?:score|rating|grade|verdict)\b\W{0,3}"
    ratio = (re.search(rf"{label}({_NUMBER})\s*(?:/|out of)\s*({_NUMBER})", text, re.I)
             or re.search(rf"({_NUMBER})\s*(?:/|out of)\s*({_NUMBER})", text, re.I))
    labelled = re.search(rf"{label}({_NUMBER})(%?)", text, re.I)
    if ratio and (labelled is None or ratio.start() <= labelled.start()) and float(
            ratio.group(2)) > 0:
        value = float(ratio.group(1)) / float(ratio.group(2))
        return min(1.0, max(0.0, value)), "parsed a ratio"
    if labelled:
        number = float(labelled.group(1))
        if labelled.group(2):
            return min(1.0, max(0.0, number / 100)), "parsed a labelled percentage"
        return _scaled(number, scale, had_point="." in labelled.group(1)), "parsed a score"
    percent = re.search(rf"({_NUMBER})\s*%", text)
    if percent:
        return min(1.0, max(0.0, float(percent.group(1)) / 100)), "parsed a percentage"
    word = _word_verdict(text)
    if word is not None:
        return word, "parsed a verdict word"
    # A bare number is a verdict only in a short reply, standing alone ("4", "I'd say 4."),
    # on the scale: not "Form T-9" or "within 21 days" in a reply that restates the answer.
    number = re.search(r"(?<![\w§-])(\d+(?:\.\d+)?)(?![\w-]|\.\d|\s*(?:%|[a-z]))", text)
    if number and len(text.split()) <= _SHORT_REPLY_WORDS and float(number.group(1)) <= scale:
        return _scaled(float(number.group(1)), scale,
                       had_point="." in number.group(1)), "parsed a bare number"
    return None, f"no verdict found in {text.strip()[:80]!r}"


def judge_messages(question: str, answer: str, rubric: str,
                   reference: str | None = None, context: str | None = None) -> list[dict]:
    parts = [f"Rubric: {rubric}", f"Question: {question}"]
    if context:
        parts.append(f"Context:\n{context}")
    if reference:
        parts.append(f"Reference answer: {reference}")
    parts.append(f"Answer to grade: {answer}")
    parts.append('Reply with JSON only: {"score": N, "reason": "<one sentence>"}')
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


async def ask_judge(ctx: ScoreContext, messages: list[dict], model: str | None,
                    scale: float = 5.0) -> Score:
    """Send ``messages`` to the judge and turn its reply into a Score (never raises on
    an unreadable reply: value 0 with the reason)."""
    if ctx.judge is None:
        raise ConfigError("the LLM judge needs a model: give the runner a judge (the router "
                          "or an OpenAI-compatible endpoint), e.g. router_judge(router)")
    model = model or ctx.judge_model
    try:
        reply = await ctx.judge(messages, model)
    except ConfigError:
        raise
    except Exception as exc:  # the judge's endpoint failed: say which, in one line
        detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
        raise ServiceError(f"the LLM judge ({model or 'default'}) failed: {detail}") from exc
    value, reason = parse_verdict(str(reply or ""), scale)
    note = " [judge: small local model, weak grader]" if ctx.judge_is_small_local else ""
    if value is None:
        return Score(value=0.0, passed=False, explanation=f"unparseable verdict: {reason}{note}")
    # Without a reason of the judge's own, show what it said.
    heard = f" from {str(reply).strip()[:80]!r}" if reason.startswith("parsed") else ""
    return Score(value=value, passed=value >= 0.6, explanation=f"{reason[:200]}{heard}{note}")


@scorer("llm_judge", threshold=0.6)
async def llm_judge(case: Case, output: Output, ctx: ScoreContext, *,
                    rubric: str = DEFAULT_RUBRIC, model: str | None = None,
                    scale: float = 5.0, with_context: bool = False) -> Score:
    """A judge model grades the answer on ``rubric`` (1-5, scaled to [0, 1]), given the
    question, the reference and, with ``with_context``, the retrieved passages."""
    context = "\n".join(c.text for c in output.contexts) if with_context else None
    messages = judge_messages(case.question, output.text, rubric, case.reference, context)
    return await ask_judge(ctx, messages, model, scale)


def router_judge(router, *, max_tokens: int = 96) -> JudgeFn:
    """A judge callable over an agentcycle ``Router``; ``model`` picks a backend by name
    or served model (default: the router's own order, with fallback)."""
    from agentcycle.router import Router

    routers: dict[str | None, Any] = {None: router}

    def pick(model: str | None):
        if model not in routers:
            chosen = [b for b in router.backends if model in (b.name, b.model, b.served_model)]
            if not chosen:
                raise ConfigError(f"judge model '{model}' is not one of the router's backends")
            routers[model] = Router(chosen, cooldown_s=router.cooldown_s)
        return routers[model]

    async def judge(messages: list[dict[str, Any]], model: str | None = None) -> str:
        target = pick(model)
        completion = await asyncio.to_thread(target.complete, messages,
                                             max_tokens=max_tokens, temperature=0)
        return completion.text

    return judge


def openai_judge(base_url: str, model: str, api_key: str | None = None, *,
                 max_tokens: int = 96, timeout_s: float = 120.0) -> JudgeFn:
    """A judge callable over any OpenAI-compatible ``/chat/completions`` endpoint."""
    import httpx

    url = base_url.rstrip("/") + "/chat/completions"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def judge(messages: list[dict[str, Any]], chosen: str | None = None) -> str:
        body = {"model": chosen or model, "messages": messages, "max_tokens": max_tokens,
                "temperature": 0}
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            response = await client.post(url, json=body, headers=headers)
            response.raise_for_status()
        return response.json()["choices"][0]["message"]["content"] or ""

    return judge
