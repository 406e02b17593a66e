# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Dataset preparation: from raw records to a checked, split, documented dataset
#
# A fine-tune is only as good as its data. This notebook takes the legal example's
# question/answer pairs from raw records to a dataset a trainer can use and a reviewer
# can trust:
#
# 1. the three common record formats (instruction, conversation, system/user/assistant
#    messages) and converting between them;
# 2. loading and inspecting the data, with statistics and a chart;
# 3. the chat template and the special tokens of the model we will train;
# 4. tokenising with the prompt masked out of the labels (only the answer trains);
# 5. quality checks on a deliberately dirty file: duplicates, lengths, empty and
#    malformed records, the label mask, test leakage (`agentcycle data validate`);
# 6. a custom dataset saved in Hugging Face format and loaded back;
# 7. augmentation by paraphrasing with an LLM, filtered by embedding similarity;
# 8. an 80/10/10 split with no fact on two sides, checked for leakage;
# 9. saving the splits with their metadata and a dataset card.
#
# **AI Lab image:** the fine-tuning image; any Python 3.11+ kernel with
# `pip install "agentcycle[notebooks]"` runs it on a CPU.
# **Prerequisites:** none. The data is the legal example shipped with agentcycle
# (questions about the fictional Residential Tenancy Act of Marvale), the tokenizer and
# the paraphrasing model are the bundled SmolLM2-135M-Instruct, the embeddings the bundled
# all-MiniLM-L6-v2. Nothing is downloaded. On the platform, `LITELLM_ENDPOINT` makes the
# paraphraser (and the teacher of section 7) a real model behind LiteLLM.

# %% tags=["parameters"]
from agentcycle import lab

N_FACTS = lab.sized(ci=16, full=208)  # facts of the Act (6 wordings each) in the pool
N_INSPECT = lab.sized(ci=150, full=1248)  # records tokenised for the length statistics
N_PARAPHRASE = lab.sized(ci=3, full=12)  # questions sent to the LLM for paraphrasing
PARAPHRASE_TOKENS = lab.sized(ci=32, full=64)  # max tokens of one paraphrase
MAX_LENGTH = 512  # the trainer's max sequence length (tokens)
KEEP_SIMILARITY = (0.75, 0.97)  # a paraphrase must mean the same thing, but not be a copy
LEAK_THRESHOLD = 0.9  # cosine similarity above which two questions count as the same
SEED = 7

# %%
import contextlib
import hashlib
import html
import json
import os
import random
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # bundled models only: never the Hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline cost map

import datasets
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import HTML, display
from rich.console import Console
from transformers import AutoTokenizer
from transformers.utils import logging as hf_logging

from agentcycle import Settings
from agentcycle.examples.legal import legal_corpus_dir, legal_split
from agentcycle.finetune import read_jsonl, to_examples
from agentcycle.models import Embedder, bundled_embedding_dir, chat_model_dir

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()
datasets.disable_progress_bars()
pd.set_option("display.width", 80)
pd.set_option("display.max_colwidth", 48)
console = Console(width=80)
WORK = Path("dataset-prep")  # everything this notebook writes, under the working directory
WORK.mkdir(exist_ok=True)

settings = Settings()
lab.show_services(settings)
stack = contextlib.ExitStack()  # closed in the last cell

# %% [markdown]
# ## 1. Three record formats, and converting between them
#
# The same training pair travels in three shapes:
#
# - **instruction** (Alpaca): `instruction`, optional `input`, `output`, for
#   single-turn tasks;
# - **conversation** (ShareGPT): `conversations`, a list of `{"from": "human"|"gpt",
#   "value": ...}` turns;
# - **messages** (OpenAI and TRL): `messages`, a list of `{"role": "system"|"user"|
#   "assistant", "content": ...}`. This is what chat templates and `agentcycle finetune`
#   take, so the other two are converted to it.
#
# The legal example is a fourth, domain shape (`question`, `answer`, `keywords`,
# `section`), which `agentcycle.finetune.to_examples` turns into messages with the RAG
# agent's own system prompt.

# %%
SYSTEM = "You answer questions about the Marvale Residential Tenancy Act. Cite the section."
raw = read_jsonl(legal_split("train"))
record = raw[0]


def qa_to_instruction(rec: dict) -> dict:
    return {"instruction": rec["question"], "input": "", "output": rec["answer"]}


def instruction_to_messages(rec: dict, system: str = SYSTEM) -> dict:
    user = rec["instruction"] + (f"\n\n{rec['input']}" if rec.get("input") else "")
    return {"messages": [{"role": "system", "content": system},
                         {"role": "user", "content": user},
                         {"role": "assistant", "content": rec["output"]}]}


_SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system"}


def conversation_to_messages(rec: dict) -> dict:
    return {"messages": [{"role": _SHAREGPT_ROLES[turn["from"]], "content": turn["value"]}
                         for turn in rec["conversations"]]}


def messages_to_conversation(rec: dict) -> dict:
    back = {v: k for k, v in _SHAREGPT_ROLES.items()}
    return {"conversations": [{"from": back[m["role"]], "value": m["content"]}
                              for m in rec["messages"]]}


def messages_to_instruction(rec: dict) -> dict:
    """Only a single-turn conversation fits the instruction format."""
    turns = [m for m in rec["messages"] if m["role"] != "system"]
    if len(turns) != 2:
        raise ValueError(f"{len(turns)} turns: the instruction format holds one exchange")
    return {"instruction": turns[0]["content"], "input": "", "output": turns[1]["content"]}


instruction = qa_to_instruction(record)
messages = instruction_to_messages(instruction)
conversation = messages_to_conversation(messages)
for name, shape in [("instruction", instruction), ("conversation", conversation),
                    ("messages", messages)]:
    print(f"--- {name}\n{json.dumps(shape, ensure_ascii=False, indent=1)[:420]}")
# Round trips lose nothing:
assert conversation_to_messages(conversation) == messages
assert messages_to_instruction(messages) == instruction
print("\nround trips: instruction -> messages -> conversation -> messages -> instruction ok")

# agentcycle's own reader: messages or question/answer become prompt/completion pairs.
example = to_examples([record])[0]
print("\nto_examples ->", [m["role"] for m in example["prompt"]], "->",
      example["completion"][0]["content"])

# %% [markdown]
# ## 2. Load and inspect the data
#
# The legal example ships three splits written by hand: 208 facts of the Act, six
# wordings each in `train.jsonl`, and held-out wordings in `validation.jsonl` and
# `test.jsonl` (the test split is for evaluation only). `agentcycle data generate` makes
# more from the corpus itself with offline rules (one question per fact-bearing
# sentence), shown below with its counts of what it skipped and why.

# %%
from agentcycle.finetune.dataprep import generate_offline

splits = {name: read_jsonl(legal_split(name)) for name in ("train", "validation", "test")}
rows = []
for name, records in splits.items():
    frame = pd.DataFrame(records)
    rows.append({"split": name, "records": len(frame), "facts": frame["fact"].nunique(),
                 "sections": frame["section"].nunique(),
                 "q words": round(frame["question"].str.split().str.len().mean(), 1),
                 "a words": round(frame["answer"].str.split().str.len().mean(), 1),
                 "max a": frame["answer"].str.split().str.len().max()})
print(pd.DataFrame(rows).to_string(index=False))

train_frame = pd.DataFrame(splits["train"])
print("\nwordings of one fact:")
for question in train_frame[train_frame["fact"] == "s01-transition"]["question"]:
    print("  -", question)

generated = generate_offline(legal_corpus_dir())
print(f"\noffline generator: {len(generated.records)} questions from {generated.passages} "
      f"passages; skipped: {dict(generated.skipped)}")
print("  e.g.", generated.records[0]["question"], "->", generated.records[0]["answer"])

fig, axes = plt.subplots(1, 2, figsize=(10, 3))
train_frame["section"].value_counts().sort_index().plot.bar(ax=axes[0], color="tab:blue")
axes[0].set(title="training records per section of the Act", xlabel="section §",
            ylabel="records")
axes[0].tick_params(axis="x", labelsize=6)
train_frame["answer"].str.split().str.len().plot.hist(ax=axes[1], bins=20, color="tab:green")
axes[1].set(title="answer length", xlabel="words", ylabel="records")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Chat templates and special tokens
#
# A chat model was trained on conversations rendered by one template: SmolLM2 wraps each
# turn in `<|im_start|>role ... <|im_end|>` (the ChatML style). Training data must be
# rendered with the *same* template the server will use at inference, or the model
# learns a format it never sees again. The template ships with the tokenizer as Jinja.

# %%
BASE_DIR = chat_model_dir(settings)  # converted once from the bundled GGUF, then cached
tokenizer = AutoTokenizer.from_pretrained(BASE_DIR)
print("chat template (Jinja), first 500 characters:\n")
print(tokenizer.chat_template[:500], "...\n")
special = {name: (value, tokenizer.convert_tokens_to_ids(value))
           for name, value in tokenizer.special_tokens_map.items() if isinstance(value, str)}
print(pd.DataFrame([{"role": k, "token": v[0], "id": v[1]} for k, v in special.items()])
      .to_string(index=False))
print("all special tokens:", tokenizer.all_special_tokens,
      f"({len(tokenizer)} tokens in the vocabulary)")

rendered = tokenizer.apply_chat_template(messages["messages"], tokenize=False)
print("\nthe messages record of section 1, rendered:\n")
print(rendered)
print("the prompt as a server renders it for generation ends with the assistant marker:")
print(repr(tokenizer.apply_chat_template(messages["messages"][:-1], tokenize=False,
                                         add_generation_prompt=True)[-40:]))

# %% [markdown]
# ## 4. Tokenising with the prompt masked out of the labels
#
# The model should learn to *answer*, not to reproduce system prompts and questions.
# `agentcycle.finetune.tokenize_example` renders the prompt with the generation marker
# and the full conversation, and sets the label of every prompt token to -100 (the value
# PyTorch's cross-entropy skips): only the answer tokens carry a loss. A template with
# no assistant marker to split on, or an answer cut away by truncation, is refused
# instead of silently training on the wrong tokens. Grey: masked; green: trained.

# %%
from agentcycle.errors import DataError
from agentcycle.finetune import tokenize_example
from agentcycle.finetune.tokenize import IGNORE_INDEX

tokenized = tokenize_example(tokenizer, to_examples([messages])[0], max_length=MAX_LENGTH)
tokens = tokenizer.convert_ids_to_tokens(tokenized.input_ids)
print(f"{len(tokenized)} tokens: {len(tokenized) - tokenized.answer_tokens} masked (prompt), "
      f"{tokenized.answer_tokens} trained (answer)")


def _cell(token: str, trained: bool) -> str:
    text = html.escape(token.replace("Ġ", " ").replace("Ċ", "\\n"))
    colour = "#b7f0b1" if trained else "#e4e4e4"
    return f'<span style="background:{colour};margin:1px;padding:0 2px">{text}</span>'


coloured = "".join(_cell(token, label != IGNORE_INDEX)
                   for token, label in zip(tokens, tokenized.labels, strict=True))
display(HTML(f"<div style='font-family:monospace;line-height:1.9'>{coloured}</div>"))

boundary = len(tokenized) - tokenized.answer_tokens
table = pd.DataFrame({"token": tokens, "id": tokenized.input_ids, "label": tokenized.labels})
table["trains"] = table["label"] != IGNORE_INDEX
print(table.iloc[boundary - 4: boundary + 6].to_string())  # around the mask boundary

try:
    tokenize_example(tokenizer, to_examples([messages])[0], max_length=40, where="short")
except DataError as refused:
    print("\nmax_length 40:", refused)

# %% [markdown]
# ## 5. Quality checks on a deliberately dirty dataset
#
# `agentcycle.finetune.dataprep.validate_dataset` (the library behind
# `agentcycle data validate`) reads every line, collects *all* problems with their line
# numbers instead of stopping at the first, and checks what training will do: lengths
# in tokens, the trainer's own label mask, duplicates after normalising case and
# punctuation, and leakage against the test split (exact, or a paraphrase by MiniLM
# cosine similarity). Below, a file with one of each mistake.

# %%
from agentcycle.finetune.dataprep import report_tables, validate_dataset

embedder = Embedder(bundled_embedding_dir())
test_path = legal_split("test")
clean = splits["train"][:4]
test_question = splits["test"][0]["question"]
dirty_lines = [json.dumps({k: r[k] for k in ("question", "answer")}) for r in clean] + [
    json.dumps({"question": clean[0]["question"].upper() + "!!", "answer": clean[0]["answer"]}),
    json.dumps({"question": "How long is the notice period?", "answer": "   "}),
    '{"question": "What is the deposit cap?", "answer": "Two months\' rent (§ 9)."',
    json.dumps({"messages": [{"role": "user", "content": "Hello?"}]}),
    json.dumps({"messages": [{"role": "user", "content": "Hi"},
                             {"role": "bot", "content": "Hello"}]}),
    json.dumps({"question": "deposit " * 600, "answer": "Long prompts lose their answer."}),
    json.dumps({"question": test_question, "answer": "copied from the test split"}),
    json.dumps({"question": test_question.replace("older", "earlier").replace("still ", ""),
                "answer": "a near-copy of a test question"}),
    json.dumps(["not", "an", "object"]),
]
dirty_path = WORK / "dirty.jsonl"
dirty_path.write_text("\n".join(dirty_lines) + "\n")
dirty = validate_dataset(dirty_path, tokenizer, against=test_path, embedder=embedder,
                         max_length=MAX_LENGTH, threshold=LEAK_THRESHOLD)
for table in report_tables(dirty):
    console.print(table)

# %% [markdown]
# The clean training split, for contrast, with its length histogram in tokens (what the
# trainer's `max_length` is compared with) and the answer tokens left after masking.

# %%
inspect_path = WORK / "inspect.jsonl"
inspect_path.write_text("".join(
    json.dumps({k: r[k] for k in ("question", "answer")}) + "\n"
    for r in splits["train"][:N_INSPECT]))
report = validate_dataset(inspect_path, tokenizer, max_length=MAX_LENGTH)
for table in report_tables(report):
    console.print(table)

fig, axes = plt.subplots(1, 2, figsize=(10, 3))
axes[0].hist(report.lengths, bins=20, color="tab:blue")
axes[0].axvline(MAX_LENGTH, color="red", linestyle="--", label=f"max_length {MAX_LENGTH}")
axes[0].set(title="example length (prompt + answer)", xlabel="tokens", ylabel="records")
axes[0].legend()
axes[1].hist(report.answer_tokens, bins=20, color="tab:green")
axes[1].set(title="trained (answer) tokens per example", xlabel="tokens")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 6. A custom dataset in Hugging Face format
#
# `datasets` is what TRL and most training code read. A dataset in messages format with
# its metadata columns (fact, section, keywords) is saved with `save_to_disk` (Arrow
# files plus a JSON description) and loaded back unchanged; `map` adds the tokenised
# columns with the same label mask as above.

# %%
from datasets import Dataset, load_from_disk

pool = [r for r in splits["train"] if r["fact"] in
        list(dict.fromkeys(x["fact"] for x in splits["train"]))[:N_FACTS]]
hf_records = [{**instruction_to_messages(qa_to_instruction(r)), "id": r["id"],
               "fact": r["fact"], "section": r["section"], "keywords": r["keywords"]}
              for r in pool]
dataset = Dataset.from_list(hf_records)


def add_labels(row: dict) -> dict:
    pair = to_examples([{"messages": row["messages"]}])[0]
    done = tokenize_example(tokenizer, pair, max_length=MAX_LENGTH)
    return {"input_ids": done.input_ids, "labels": done.labels}


dataset = dataset.map(add_labels)
dataset.save_to_disk(WORK / "legal-hf")
reloaded = load_from_disk(WORK / "legal-hf")
print(reloaded)
print("on disk:", sorted(p.name for p in (WORK / "legal-hf").iterdir()))
assert reloaded[0]["messages"] == dataset[0]["messages"]
assert reloaded[0]["labels"] == dataset[0]["labels"]
print("reloaded row 0 equals the saved one; features:", list(reloaded.features))

# %% [markdown]
# ## 7. Augmentation: paraphrasing with an LLM, filtered by embedding similarity
#
# More wordings of the same question teach the model the fact rather than one sentence.
# An LLM rewrites each question; a paraphrase is kept only when its MiniLM cosine
# similarity to the original lies in a band: below it the meaning drifted (a different
# question with the old answer would teach a falsehood), above it the "paraphrase" is a
# copy that adds nothing; and it must still be a question (a small model often answers
# it instead, which scores high on similarity). The bundled 135M model paraphrases
# poorly, so expect most of its attempts to be rejected: the filter is the lesson. On
# the platform, LiteLLM (`LITELLM_ENDPOINT`) puts a capable model behind the same code.

# %%
chat = stack.enter_context(lab.chat_endpoint(settings))
from openai import OpenAI

client = OpenAI(**chat.openai_kwargs())
PARAPHRASE_PROMPT = ("Rewrite the question below with different words, keeping its exact "
                     "meaning. Reply with the new question only.\n\nQuestion: {question}")
originals = random.Random(SEED).sample(pool, N_PARAPHRASE)
attempts = []
for rec in originals:
    reply = client.chat.completions.create(
        model=chat.model, max_tokens=PARAPHRASE_TOKENS, temperature=0.7,
        messages=[{"role": "user", "content": PARAPHRASE_PROMPT.format(question=rec["question"])}])
    text = (reply.choices[0].message.content or "").strip().split("\n")[0].strip()
    attempts.append((rec, text))

vectors = embedder.embed([r["question"] for r, _ in attempts] + [t or "-" for _, t in attempts])
low, high = KEEP_SIMILARITY
judged, augmented = [], []
for i, (rec, text) in enumerate(attempts):
    similarity = float(vectors[i] @ vectors[len(attempts) + i])
    if not text:
        verdict = "rejected: empty"
    elif not text.endswith("?"):
        verdict = "rejected: not a question"  # small models often answer instead
    elif similarity < low:
        verdict = f"rejected: drifted (< {low})"
    elif similarity >= high:
        verdict = f"rejected: a copy (>= {high})"
    else:
        verdict = "kept"
        augmented.append({**rec, "id": rec["id"] + "-para", "question": text,
                          "generator": f"paraphrase:{chat.model}"})
    judged.append({"original": rec["question"], "paraphrase": text,
                   "cosine": round(similarity, 3), "verdict": verdict})
for row in judged:
    print(f"[{row['verdict']}] cosine {row['cosine']}\n  original:   {row['original']}\n"
          f"  paraphrase: {row['paraphrase'][:150]}")
print(f"\nkept {len(augmented)} of {len(attempts)} paraphrases")

# %% [markdown]
# **A teacher for whole new questions.** `agentcycle data generate --teacher MODEL`
# (`generate_with_teacher`) asks a model for N question/answer pairs per passage of the
# corpus, as JSON, and keeps a pair only when its key facts are copied from the passage
# and stated in its answer; everything else is counted by reason. It needs a capable
# model: with `LITELLM_ENDPOINT` set the cell below runs it against the platform's
# LiteLLM on one section; here, without one, it says so (the 135M model cannot write
# valid JSON pairs reliably, so running it would only show rejections).

# %%
from agentcycle.finetune.dataprep import generate_with_teacher

if settings.litellm_endpoint:
    import shutil

    from agentcycle.router import Router
    from agentcycle.router.backends import Backend

    one_section = WORK / "one-section"
    one_section.mkdir(exist_ok=True)
    shutil.copy(sorted(legal_corpus_dir().glob("*.md"))[1], one_section)
    teacher = Router([Backend("teacher", chat.litellm_model(), api_base=chat.base_url,
                              api_key=chat.api_key)], log_path=False, tracing=False)
    taught = generate_with_teacher(one_section, teacher, per_passage=2)
    print(f"teacher {chat.model}: {len(taught.records)} pairs from {taught.passages} "
          f"passages, skipped {dict(taught.skipped)}, cost ${taught.cost_usd:.4f}")
    for pair in taught.records[:3]:
        print("  -", pair["question"], "->", pair["answer"])
else:
    print("no teacher: LITELLM_ENDPOINT is not set (the platform's LiteLLM would be the "
          "teacher); the offline generator of section 2 is the model-free alternative")

# %% [markdown]
# ## 8. An 80/10/10 split without leakage
#
# Six wordings of one fact split at random put some in training and others in test:
# the test then measures memory of a sentence, not knowledge. `split_records(by="fact")`
# keeps every record about one fact (same key facts and section, or the same answer) and
# every copy of one question on the same side; the kept paraphrases above share their
# original's fact and follow it. The check afterwards is `find_leaks`: exact matches
# after normalising, and near-paraphrases by embedding similarity. The naive split
# (`by="record"`) is shown beside it. The embedding check only catches near-copies
# (cosine >= 0.9): the hand-written wordings of one fact are further apart than that,
# which is why the split itself must group by fact ("shared facts" below).

# %%
from agentcycle.finetune.dataprep import find_leaks, split_records

records = pool + augmented


def three_way(items: list[dict], by: str) -> dict[str, list[dict]]:
    rest, test = split_records(items, 0.1, by=by, seed=SEED)
    train, validation = split_records(rest, 1 / 9, by=by, seed=SEED)  # 10% of the whole
    return {"train": train, "validation": validation, "test": test}


def leak_counts(parts: dict[str, list[dict]]) -> dict[str, int]:
    test = [r["question"] for r in parts["test"]]
    counts = {}
    for name in ("train", "validation"):
        leaks = find_leaks([r["question"] for r in parts[name]], test, embedder,
                           LEAK_THRESHOLD)
        counts[f"{name} exact"] = sum(leak.kind == "exact" for leak in leaks)
        counts[f"{name} paraphrase"] = sum(leak.kind == "paraphrase" for leak in leaks)
        facts = {r["fact"] for r in parts[name]} & {r["fact"] for r in parts["test"]}
        counts[f"{name} shared facts"] = len(facts)
    return counts


comparison = []
for by in ("record", "fact"):
    parts = three_way(records, by)
    comparison.append({"split by": by, **{k: len(v) for k, v in parts.items()},
                       **leak_counts(parts)})
print(pd.DataFrame(comparison).set_index("split by").T.to_string())
final = three_way(records, "fact")
naive = three_way(records, "record")
shared = sorted({r["fact"] for r in naive["train"]} & {r["fact"] for r in naive["test"]})
if shared:
    print(f"\nthe naive split puts fact {shared[0]!r} on both sides:")
    for name in ("train", "test"):
        for r in [r for r in naive[name] if r["fact"] == shared[0]][:2]:
            print(f"  {name:5}  {r['question']}")

# %% [markdown]
# ## 9. Save with metadata and a dataset card
#
# Each split is written atomically (`write_jsonl`: a temp file renamed into place, never
# an empty or half-written file), the same splits as a Hugging Face `DatasetDict`, a
# `metadata.json` with what a later reader needs to reproduce or trust it (source,
# seed, split method, counts, checksums, the leakage result), and a dataset card from
# the validation report (`write_card`, what `agentcycle data validate --card` writes).

# %%
from datasets import DatasetDict

from agentcycle.finetune.dataprep import write_card, write_jsonl

out = WORK / "legal-sft"
paths = {name: write_jsonl(out / f"{name}.jsonl", part) for name, part in final.items()}
DatasetDict({name: Dataset.from_list([{k: v for k, v in r.items() if k != "_line"}
                                      for r in part])
             for name, part in final.items()}).save_to_disk(out / "hf")

checked = validate_dataset(paths["train"], tokenizer, against=paths["test"],
                           embedder=embedder, max_length=MAX_LENGTH, threshold=LEAK_THRESHOLD)
metadata = {
    "created": datetime.now(UTC).isoformat(timespec="seconds"),
    "source": "agentcycle legal example (Residential Tenancy Act of Marvale), "
              f"{N_FACTS} facts, + {len(augmented)} LLM paraphrases ({chat.model})",
    "format": "question/answer with keywords, section, fact (agentcycle finetune reads it)",
    "split": {"method": "split_records(by='fact')", "fractions": [0.8, 0.1, 0.1],
              "seed": SEED},
    "counts": {name: len(part) for name, part in final.items()},
    "sha256": {name: hashlib.sha256(path.read_bytes()).hexdigest()
               for name, path in paths.items()},
    "tokenizer": str(BASE_DIR.name), "max_length": MAX_LENGTH,
    "leakage": {"threshold": LEAK_THRESHOLD, "train_vs_test": len(checked.leaks)},
    "paraphrase_filter": {"cosine_band": list(KEEP_SIMILARITY), "tried": len(attempts),
                          "kept": len(augmented)},
}
(out / "metadata.json").write_text(json.dumps(metadata, indent=1) + "\n")
card = write_card(checked, source=metadata["source"], license="CC0 (written for agentcycle)",
                  splits=metadata["counts"],
                  notes=f"Split by fact (seed {SEED}); paraphrases kept in the cosine band "
                        f"{KEEP_SIMILARITY}. See metadata.json for checksums.")
print(card.read_text())
print("written:", sorted(str(p.relative_to(out)) for p in out.iterdir()))

# %% [markdown]
# ## What changes on the platform, and clean up
#
# - `LITELLM_ENDPOINT` set: the paraphraser and the teacher are the platform's models;
#   more paraphrases pass the similarity band and `generate_with_teacher` adds new
#   questions per passage. Keep the band and the leakage check: a capable model drifts
#   less, but it still drifts.
# - The same steps from a shell: `agentcycle data generate`, `data validate --against
#   test.jsonl --tokenizer MODEL --card`, `data split --by fact`.
# - Next: `04_evaluation_deployment` trains on data like this and evaluates the result.

# %%
stack.close()  # stops the bundled model server (if this notebook started one)
print("closed")
