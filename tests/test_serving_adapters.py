"""LoRA adapters served unmerged over one base, chosen by model name (real engine, real
PEFT adapters with random non-zero weights so each answers differently)."""

from __future__ import annotations

import json

import httpx
import pytest

from agentcycle.errors import ConfigError, ModelError
from agentcycle.serving import ModelServer
from agentcycle.serving.adapters import adapter_dir, parse_adapter_options, vllm_lora_args

PROMPT = [{"role": "user", "content": "What must a tenant do before moving out?"}]
AUTH = {"Authorization": "Bearer adapter-key"}


def _fake_adapter(folder, rank=8):
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": rank}))
    return folder


def test_adapter_options_are_checked(tmp_path):
    legal = _fake_adapter(tmp_path / "legal")
    tuned = tmp_path / "tuned"
    _fake_adapter(tuned / "adapter")  # what finetune() writes: MODEL/adapter/
    got = parse_adapter_options([f"legal={legal}", f"tools={tuned}"])
    assert got == {"legal": legal.resolve(), "tools": (tuned / "adapter").resolve()}
    with pytest.raises(ConfigError, match="expected NAME=PATH"):
        parse_adapter_options(["legal"])
    with pytest.raises(ConfigError, match="given twice"):
        parse_adapter_options([f"legal={legal}", f"legal={legal}"])
    with pytest.raises(ConfigError, match="base model's name"):
        parse_adapter_options([f"base={legal}"])
    with pytest.raises(ConfigError, match="adapter name"):
        parse_adapter_options([f"a b={legal}"])
    with pytest.raises(ModelError, match="not a directory"):
        adapter_dir(tmp_path / "nope")
    with pytest.raises(ModelError, match="no adapter_config.json"):
        adapter_dir(tmp_path)


def test_vllm_gets_its_lora_flags(tmp_path):
    """vLLM is not installed here: only the generated command line is tested."""
    model = tmp_path / "base"
    model.mkdir()
    (model / "config.json").write_text("{}")
    adapters = {"legal": _fake_adapter(tmp_path / "legal", 12),
                "tools": _fake_adapter(tmp_path / "tools", 4)}
    assert vllm_lora_args(adapters) == [
        "--enable-lora", "--lora-modules", f"legal={adapters['legal']}",
        f"tools={adapters['tools']}", "--max-loras", "2", "--max-lora-rank", "16"]
    server = ModelServer(model, engine="vllm", api_key="k", adapters=adapters)
    cmd = server.command()
    assert cmd[:3] == ["vllm", "serve", str(model.resolve())]
    assert cmd[cmd.index("--served-model-name") + 1] == "base"
    assert "--enable-lora" in cmd and cmd[-2:] == ["--api-key", "k"]
    assert server.model_names == ["base", "legal", "tools"]
    gate = ModelServer(model, engine="transformers", adapters=adapters).command()
    assert f"--adapter=legal={adapters['legal']}" in gate


@pytest.fixture(scope="session")
def adapters(base_model_dir, tmp_path_factory):
    """Two real PEFT LoRA adapters with random (non-zero) A and B: they change the
    answer without training. Different ranks, targets and layers, as real ones differ."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("adapters")
    specs = {"legal": LoraConfig(r=8, lora_alpha=16, init_lora_weights=False,
                                 target_modules=["q_proj", "v_proj", "down_proj"],
                                 layers_to_transform=list(range(24, 30))),
             "tools": LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                 target_modules=["k_proj", "o_proj", "up_proj"])}
    paths = {}
    for seed, (name, config) in enumerate(specs.items()):
        torch.manual_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
        model = get_peft_model(base, config)
        with torch.no_grad():  # random init is small; scale so greedy answers change
            for param_name, param in model.named_parameters():
                if "lora_B" in param_name:
                    param.mul_(4.0)
        model.save_pretrained(root / name)
        paths[name] = root / name
    return paths


@pytest.fixture(scope="session")
def adapter_server(base_model_dir, adapters):
    with ModelServer(base_model_dir, api_key="adapter-key", adapters=adapters) as server:
        yield server


def _reference(base_model_dir, adapter, max_tokens):
    """What the merged model (or the plain base) answers in-process, greedy."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    inputs = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.eval().generate(**inputs, max_new_tokens=max_tokens, do_sample=False,
                                    output_logits=True, return_dict_in_generate=True)
    new = out.sequences[0, inputs["input_ids"].shape[1]:].tolist()
    logprobs = [float(torch.log_softmax(step[0], -1)[t]) for t, step in
                zip(new, out.logits, strict=True)]
    return tokenizer.decode(new, skip_special_tokens=True), logprobs


def _ask(server, model, max_tokens=12, **extra):
    response = httpx.post(f"{server.base_url}/chat/completions", headers=AUTH, timeout=120,
                          json={"model": model, "messages": PROMPT, "max_tokens": max_tokens,
                                "temperature": 0, "logprobs": True, "top_logprobs": 3,
                                **extra})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.slow
def test_each_name_answers_like_its_merged_model(adapter_server, base_model_dir, adapters):
    answers = {}
    for name in ("base", "legal", "tools"):
        data = _ask(adapter_server, name)
        assert data["model"] == name
        text = data["choices"][0]["message"]["content"]
        logprobs = [t["logprob"] for t in data["choices"][0]["logprobs"]["content"]]
        want_text, want_logprobs = _reference(base_model_dir, adapters.get(name), 12)
        assert text == want_text, name
        assert len(logprobs) == len(want_logprobs)
        assert max(abs(a - b) for a, b in zip(logprobs, want_logprobs, strict=True)) < 1e-3, name
        answers[name] = text
    assert len(set(answers.values())) == 3, answers  # the adapters really change the answer


@pytest.mark.slow
def test_models_listing_unknown_name_and_key(adapter_server):
    url = adapter_server.base_url
    listed = httpx.get(f"{url}/models", headers=AUTH, timeout=10).json()
    assert [m["id"] for m in listed["data"]] == ["base", "legal", "tools"]
    body = {"model": "medical", "messages": PROMPT, "max_tokens": 2}
    unknown = httpx.post(f"{url}/chat/completions", headers=AUTH, json=body, timeout=30)
    assert unknown.status_code == 404
    error = unknown.json()["error"]
    assert error["type"] == "invalid_request_error" and "'medical'" in error["message"]
    assert "'legal'" in error["message"]
    assert httpx.post(f"{url}/chat/completions", json={**body, "model": "legal"},
                      timeout=30).status_code == 401


@pytest.mark.slow
def test_streaming_through_an_adapter_equals_the_plain_answer(adapter_server):
    from openai import OpenAI

    client = OpenAI(base_url=adapter_server.base_url, api_key="adapter-key")
    stream = client.chat.completions.create(model="legal", messages=PROMPT, max_tokens=12,
                                            temperature=0, stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert all(c.model == "legal" for c in chunks)
    assert text == _ask(adapter_server, "legal")["choices"][0]["message"]["content"]
