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
# # 04 · A RAG pipeline with Qdrant and LangChain
#
# Retrieval-augmented generation: find the passages that answer a question, then let a
# model answer from them and cite them. This notebook builds each piece with the
# libraries people use for it ([qdrant-client](https://python-client.qdrant.tech/) and
# LangChain), on a real corpus with known answers, and **measures** each choice:
#
# 1. connect to Qdrant and list its collections;
# 2. embeddings (the bundled MiniLM here; the platform's, through LiteLLM, on Thinkube);
# 3. a collection with payload metadata, from the legal example corpus;
# 4. semantic search: top-k with scores, and a metadata filter;
# 5. a LangChain RAG chain (LCEL) that returns its sources;
# 6. hybrid search: dense vectors + BM25 keyword vectors merged by RRF, against dense
#    alone, measured;
# 7. chunking with overlap: what the chunk size changes, measured;
# 8. evaluation: retrieval hit@k / MRR / precision / recall, and answer quality on
#    questions with known answers, tracked as an MLflow run (and in Langfuse when set);
# 9. clean up.
#
# **AI Lab image:** the agent-dev image (any Python 3.11+ kernel with
# `pip install "agentcycle[notebooks]"`).
# **Prerequisites:** none. On Thinkube the kernel has `QDRANT_URL`, `LITELLM_ENDPOINT`
# and `MLFLOW_TRACKING_URI` and the notebook uses them; elsewhere it uses Qdrant's local
# mode (a folder under the data dir), the bundled embedding model (all-MiniLM-L6-v2),
# the bundled chat model (SmolLM2-135M-Instruct, served on 127.0.0.1) and MLflow on a
# local SQLite store. Nothing is downloaded.
#
# The corpus is the Residential Tenancy Act of the (fictional) Free Province of Marvale,
# shipped with agentcycle, with 194 held-out questions whose answer, key facts, section
# and evidence sentence are known: retrieval and answers can be scored, not eyeballed.

# %% tags=["parameters"]
from agentcycle import lab

TOP_K = 4  # passages retrieved per question
N_RETRIEVAL_QUESTIONS = lab.sized(ci=60, full=194)  # scored retrieval (no model calls)
N_ANSWER_QUESTIONS = lab.sized(ci=3, full=20)  # answered by the chat model and scored
MAX_TOKENS = lab.sized(ci=32, full=96)  # per answer
CHUNK_SIZES = lab.sized(ci=[250, 500, 1000], full=[200, 350, 500, 700, 1000, 1500])
# On the platform: the name LiteLLM gives its embedding model (see its /models list).
PLATFORM_EMBEDDING_MODEL = "text-embedding-3-small"

# %% [markdown]
# ## 1. Connect to Qdrant
#
# With `QDRANT_URL` set, a client of the platform's server. Otherwise Qdrant's **local
# mode**: the same client API over a folder, no server. Local mode admits one client per
# folder at a time (it locks it), so this notebook opens one client, shares it with
# LangChain, and closes it at the end (rerunning this cell closes the previous one).

# %%
import contextlib
import json
import os
import re
import time

import numpy as np
from qdrant_client import QdrantClient, models

from agentcycle import Settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the bundled models only: no hub calls
settings = Settings()
lab.show_services(settings)

if "client" in globals():  # a rerun: local mode allows one open client per folder
    client.close()  # noqa: F821
if settings.qdrant_url:
    client = QdrantClient(url=settings.qdrant_url, api_key=settings.qdrant_api_key, timeout=30)
    print(f"Qdrant server at {settings.qdrant_url}")
else:
    qdrant_folder = settings.home / "notebooks" / "04_rag_qdrant"
    client = QdrantClient(path=str(qdrant_folder))
    print(f"Qdrant local mode in {qdrant_folder} (set QDRANT_URL for the platform's server)")

COLLECTION = "lab04-marvale"
print("collections:", [c.name for c in client.get_collections().collections] or "none yet")

# %% [markdown]
# ## 2. Embeddings
#
# An embedding model maps a text to a vector; texts that mean similar things get nearby
# vectors. LangChain's `Embeddings` interface has two methods, `embed_documents` and
# `embed_query`. On the platform the model sits behind LiteLLM's OpenAI-compatible
# `/embeddings` (`langchain_openai.OpenAIEmbeddings`); here the bundled MiniLM runs in
# this process through `agentcycle.models.Embedder` (384 dimensions, unit length, so a
# dot product is the cosine similarity), wrapped in that same interface.

# %%
from langchain_core.embeddings import Embeddings

from agentcycle.models import Embedder, embedding_model_dir


class MiniLMEmbeddings(Embeddings):
    """LangChain's interface over agentcycle's in-process embedder."""

    def __init__(self, embedder: Embedder):
        self.embedder = embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embedder.embed(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embedder.embed([text])[0].tolist()


local_embedder = Embedder(embedding_model_dir(settings))  # also scores answers (section 8)
embeddings: Embeddings = MiniLMEmbeddings(local_embedder)
embedding_source = (f"{settings.embedding_model}, in process" if settings.embedding_model
                    else "the bundled all-MiniLM-L6-v2, in process")
if settings.litellm_endpoint:
    from langchain_openai import OpenAIEmbeddings

    base_url = settings.litellm_endpoint.rstrip("/")
    platform_embeddings = OpenAIEmbeddings(
        model=PLATFORM_EMBEDDING_MODEL, api_key=settings.litellm_master_key or "none",
        base_url=base_url if base_url.endswith("/v1") else base_url + "/v1",
        check_embedding_ctx_length=False)  # no tiktoken download: LiteLLM counts tokens
    try:
        platform_embeddings.embed_query("probe")
        embeddings = platform_embeddings
        embedding_source = f"{PLATFORM_EMBEDDING_MODEL} through LiteLLM at {base_url}"
    except Exception as exc:  # no such model on this LiteLLM: say so, keep MiniLM
        print(f"LiteLLM has no embedding model {PLATFORM_EMBEDDING_MODEL!r} "
              f"({type(exc).__name__}); using the bundled MiniLM")
print("embeddings:", embedding_source)

sentences = ["The deposit may not exceed 1.5 months' rent.",
             "How much security deposit can a landlord ask for?",
             "The landlord must give 48 hours' notice before entering.",
             "Cats and dogs raise the deposit cap."]
started = time.perf_counter()
vectors = np.array(embeddings.embed_documents(sentences))
print(f"{len(sentences)} texts -> {vectors.shape[1]}-dimensional vectors in "
      f"{1000 * (time.perf_counter() - started):.0f} ms\n")
vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
similarity = vectors @ vectors.T
print("cosine similarity " + " ".join(f"{i:>6}" for i in range(len(sentences))))
for i, sentence in enumerate(sentences):
    print(f"{i} {sentence[:16]:16}" + " ".join(f"{s:6.2f}" for s in similarity[i]))

# %% [markdown]
# The question (1) is closest to the sentence that answers it (0) though they share few
# words; (3) is about deposits too and comes next; (2) is about something else.
#
# ## 3. A collection with payload metadata
#
# agentcycle's `load_documents` and `split_documents` read the corpus and cut it into
# chunks along its Markdown sections (each chunk starts with its section heading, so a
# chunk cut out of a long section still says what it is about). Each Qdrant point gets a
# vector and a **payload**: the text and metadata (file, heading, section number) to
# filter on and to cite. The payload uses LangChain's layout (`page_content` and
# `metadata`), so LangChain's `QdrantVectorStore` can read the same collection.
#
# The collection declares two vectors per point: `dense` (the embeddings, cosine) and a
# sparse `keywords` vector, filled in section 6.

# %%
from agentcycle.examples import legal_corpus_dir, legal_split
from agentcycle.rag import load_documents, split_documents

documents = load_documents(legal_corpus_dir())
chunks = split_documents(documents, chunk_size=700, overlap=120)  # agentcycle's defaults


def section_number(heading: str) -> int | None:
    found = re.match(r"§\s*(\d+)", heading)
    return int(found.group(1)) if found else None


payloads = [{"page_content": chunk.text,
             "metadata": {"source": chunk.source, "heading": chunk.heading,
                          "section": section_number(chunk.heading), "chunk": chunk.index}}
            for chunk in chunks]
started = time.perf_counter()
chunk_vectors = embeddings.embed_documents([chunk.text for chunk in chunks])
embed_seconds = time.perf_counter() - started

if client.collection_exists(COLLECTION):  # a rerun starts clean
    client.delete_collection(COLLECTION)
client.create_collection(
    COLLECTION,
    vectors_config={"dense": models.VectorParams(size=len(chunk_vectors[0]),
                                                 distance=models.Distance.COSINE)},
    sparse_vectors_config={"keywords": models.SparseVectorParams()})
point_ids = list(range(len(chunks)))
client.upsert(COLLECTION, points=[
    models.PointStruct(id=pid, vector={"dense": vector}, payload=payload)
    for pid, vector, payload in zip(point_ids, chunk_vectors, payloads, strict=True)])
print(f"{len(documents)} documents -> {len(chunks)} chunks, embedded in {embed_seconds:.1f} s; "
      f"collection {COLLECTION!r} holds {client.count(COLLECTION).count} points")
print(json.dumps(payloads[8], indent=1, ensure_ascii=False)[:400])

# %% [markdown]
# ## 4. Semantic search: top-k with scores
#
# `query_points` embeds nothing itself: we embed the question with the same model and
# ask for the nearest `dense` vectors. The score is the cosine similarity. A **filter**
# on the payload restricts the search (here: Part 3 of the Act only); on a Qdrant server
# a payload index on `metadata.source` makes such filters fast.


# %%
def show_points(points, title: str) -> None:
    print(title)
    for point in points:
        meta = point.payload["metadata"]
        text = point.payload["page_content"].split("\n", 1)[-1]
        print(f"  {point.score:6.3f}  {meta['source'][:18]:18} {meta['heading'][:26]:26} "
              f"{text[:22]}...")


question = "How much can the landlord charge for a set of keys?"
query_vector = embeddings.embed_query(question)
hits = client.query_points(COLLECTION, query=query_vector, using="dense", limit=TOP_K,
                           with_payload=True).points
show_points(hits, f"Q: {question}")

only_rent = models.Filter(must=[models.FieldCondition(
    key="metadata.source", match=models.MatchValue(value="part3_rent.md"))])
question = "When can the rent go up?"
hits = client.query_points(COLLECTION, query=embeddings.embed_query(question), using="dense",
                           query_filter=only_rent, limit=3, with_payload=True).points
show_points(hits, f"\nQ: {question}  (filter: metadata.source = part3_rent.md)")

# %% [markdown]
# ## 5. A LangChain RAG chain with sources
#
# `langchain_qdrant.QdrantVectorStore` wraps the same client and collection; its
# retriever returns LangChain `Document`s with their metadata. The chain is written in
# LCEL (LangChain 1.x: no `RetrievalQA`): retrieve the passages and keep them, number
# them into the prompt, call the model, and return the answer **with** the passages it
# was given, so every answer can be checked against its sources.
#
# The model is the platform's LiteLLM when `LITELLM_ENDPOINT` is set, else the bundled
# SmolLM2-135M served on 127.0.0.1 (started here, stopped in the last cell). The system
# prompt is agentcycle's RAG prompt, the one its `RagAgent` serves and fine-tunes on.

# %%
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnableParallel, RunnablePassthrough
from langchain_openai import ChatOpenAI
from langchain_qdrant import QdrantVectorStore

from agentcycle.rag import SYSTEM_PROMPT

stack = contextlib.ExitStack()  # closed in the last cell: stops the bundled model server
chat = stack.enter_context(lab.chat_endpoint(settings))
llm = ChatOpenAI(**chat.langchain_kwargs(), temperature=0, max_tokens=MAX_TOKENS, timeout=300)

vector_store = QdrantVectorStore(client=client, collection_name=COLLECTION,
                                 embedding=embeddings, vector_name="dense")
dense_retriever = vector_store.as_retriever(search_kwargs={"k": TOP_K})


def numbered_passages(documents) -> str:
    # The corpus is ours; for untrusted text agentcycle's RagAgent also defangs the fence.
    body = "\n\n".join(f"[{i}] {doc.page_content}" for i, doc in enumerate(documents, 1))
    return f"<passages>\n{body}\n</passages>"


prompt = ChatPromptTemplate.from_messages([
    ("system", SYSTEM_PROMPT),
    ("human", "Context:\n{context}\n\nQuestion: {question}")])
generate = (RunnableLambda(lambda x: {"context": numbered_passages(x["documents"]),
                                      "question": x["question"]})
            | prompt | llm | StrOutputParser())


def rag_chain_with(retriever):
    """question -> {"question", "documents", "answer"}"""
    return (RunnableParallel(documents=retriever, question=RunnablePassthrough())
            .assign(answer=generate))


rag_chain = rag_chain_with(dense_retriever)
started = time.perf_counter()
result = rag_chain.invoke("How large a security deposit may a landlord ask for?")
print(f"answer ({time.perf_counter() - started:.1f} s): {result['answer'].strip()}\nsources:")
for i, doc in enumerate(result["documents"], 1):
    print(f"  [{i}] {doc.metadata['source']} {doc.metadata['heading']}")

# %% [markdown]
# ## 6. Hybrid search: dense + keywords, merged by RRF
#
# Dense vectors capture meaning but can miss an exact term: a form number (`T-4`), a
# figure (`60 crowns`), a section (`§ 16`). Keyword search (BM25) is the opposite. A
# **hybrid** search runs both and merges the two rankings.
#
# The keyword side here is BM25 computed locally from the corpus (no model, nothing to
# download): a chunk's **sparse vector** holds, for each of its terms, the term's
# saturated, length-normalised frequency; a query's holds each term's inverse document
# frequency; their dot product, which Qdrant computes over sparse vectors, is the
# chunk's BM25 score. It implements `langchain_qdrant.SparseEmbeddings`, so LangChain's
# hybrid mode can use it too.
#
# **Reciprocal rank fusion** scores each chunk `sum(1 / (k + position))` over the
# rankings it appears in (positions from 0): only ranks count, so cosine scores and BM25
# scores need no calibration against each other. Qdrant does it server side (also in
# local mode) with `Prefetch` + `FusionQuery(RRF)`, with `k = 2`; `RrfQuery(rrf=Rrf(k=60))`
# sets the constant of the original RRF paper, which flattens the ranks: we measure both.

# %%
import math
from collections import Counter

from langchain_qdrant import SparseEmbeddings, SparseVector

STOPWORDS = {"a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for",
             "from", "has", "have", "how", "i", "if", "in", "is", "it", "its", "may", "me",
             "must", "my", "no", "not", "of", "on", "or", "that", "the", "their", "there",
             "this", "to", "was", "what", "when", "which", "who", "will", "with", "within"}


def terms(text: str) -> list[str]:
    """Lower-case words, numbers and form codes: "§ 16" -> "§16", "1,800" -> "1800",
    "Form T-4" -> "form", "t-4"."""
    text = re.sub(r"§\s*(\d+)", r"§\1", text.lower()).replace(",", "")
    return [t for t in re.findall(r"§\d+|[a-z]+-\d+|\d+(?:\.\d+)?|[a-z][a-z'-]*", text)
            if t not in STOPWORDS]


class BM25Sparse(SparseEmbeddings):
    """BM25 as sparse vectors: document side k1/b-weighted term frequencies, query side
    IDF weights, so that Qdrant's sparse dot product is the BM25 score."""

    def __init__(self, corpus: list[str], k1: float = 1.2, b: float = 0.75):
        self.k1, self.b = k1, b
        tokenized = [terms(text) for text in corpus]
        self.vocabulary = {t: i for i, t in enumerate(sorted({t for d in tokenized for t in d}))}
        self.avg_length = sum(map(len, tokenized)) / len(tokenized)
        frequency = Counter(t for d in tokenized for t in set(d))
        n = len(tokenized)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in frequency.items()}

    def embed_documents(self, texts: list[str]) -> list[SparseVector]:
        vectors = []
        for text in texts:
            counts = Counter(t for t in terms(text) if t in self.vocabulary)
            norm = self.k1 * (1 - self.b + self.b * sum(counts.values()) / self.avg_length)
            vectors.append(SparseVector(
                indices=[self.vocabulary[t] for t in counts],
                values=[c * (self.k1 + 1) / (c + norm) for c in counts.values()]))
        return vectors

    def embed_query(self, text: str) -> SparseVector:
        known = sorted({t for t in terms(text) if t in self.vocabulary})
        return SparseVector(indices=[self.vocabulary[t] for t in known],
                            values=[self.idf[t] for t in known])


bm25 = BM25Sparse([chunk.text for chunk in chunks])
client.update_vectors(COLLECTION, points=[
    models.PointVectors(id=pid, vector={"keywords": models.SparseVector(
        indices=sparse.indices, values=sparse.values)})
    for pid, sparse in zip(point_ids, bm25.embed_documents([c.text for c in chunks]),
                           strict=True)])
print(f"BM25 vocabulary: {len(bm25.vocabulary)} terms; sparse vectors added to "
      f"{len(point_ids)} points. The query 'Form T-4 deposit' -> terms {terms('Form T-4 deposit')}")

# %% [markdown]
# Three ways to search the same collection, each returning the ranked chunks:

# %%
def as_sparse(vector: SparseVector) -> models.SparseVector:
    return models.SparseVector(indices=vector.indices, values=vector.values)


def search(mode: str, question: str, k: int = TOP_K, dense_vector=None) -> list:
    dense_vector = dense_vector if dense_vector is not None else embeddings.embed_query(question)
    if mode == "dense":
        request = {"query": dense_vector, "using": "dense"}
    elif mode == "keywords":
        request = {"query": as_sparse(bm25.embed_query(question)), "using": "keywords"}
    else:  # hybrid: both rankings (20 candidates each), fused by reciprocal rank
        fusion = (models.RrfQuery(rrf=models.Rrf(k=60)) if mode == "hybrid k=60"
                  else models.FusionQuery(fusion=models.Fusion.RRF))
        request = {"prefetch": [
            models.Prefetch(query=dense_vector, using="dense", limit=20),
            models.Prefetch(query=as_sparse(bm25.embed_query(question)), using="keywords",
                            limit=20)],
            "query": fusion}
    return client.query_points(COLLECTION, limit=k, with_payload=True, **request).points


question = "Which form does a tenant send to ask for the deposit back?"
for mode in ("dense", "keywords", "hybrid"):
    show_points(search(mode, question), f"{mode}:")

# %% [markdown]
# The fusion is simple enough to check by hand: RRF over the two top-20 lists, computed
# here with Qdrant's default `k = 2`, gives Qdrant's scores.

# %%
dense_ranking = [p.id for p in search("dense", question, k=20)]
keyword_ranking = [p.id for p in search("keywords", question, k=20)]
fused = Counter()
for ranking in (dense_ranking, keyword_ranking):
    for position, pid in enumerate(ranking):
        fused[pid] += 1 / (2 + position)
by_hand = fused.most_common(TOP_K)
by_qdrant = [(p.id, p.score) for p in search("hybrid", question)]
print("by hand:  ", [(pid, round(score, 3)) for pid, score in by_hand])
print("by Qdrant:", [(pid, round(score, 3)) for pid, score in by_qdrant])
same = [round(s, 6) for _, s in by_hand] == [round(s, 6) for _, s in by_qdrant]
print("same scores" if same else "different scores", "(chunks with equal scores may swap)")

# %% [markdown]
# **Measured.** Each held-out test question names the section of the Act that answers
# it. For each search mode: **hit@1** and **hit@k** (a chunk of that section ranked
# first / in the top k), **MRR** (the mean of 1 / rank of the first such chunk, 0 when
# none is in the top k), **precision@k** (`prec@k`: the share of the k chunks that are
# from it; at most 1/k when a section is one chunk) and **recall@k** (the share of its
# chunks that were retrieved), and the time per query.

# %%
with open(legal_split("test")) as lines:
    test_questions = [json.loads(line) for line in lines]
stride = max(1, len(test_questions) // N_RETRIEVAL_QUESTIONS)  # spread over the whole Act
eval_questions = test_questions[::stride][:N_RETRIEVAL_QUESTIONS]
eval_vectors = embeddings.embed_documents([q["question"] for q in eval_questions])


def retrieval_metrics(ranked_sections: list[list[int]], questions: list[dict],
                      chunks_per_section: Counter) -> dict[str, float]:
    hit1 = hitk = mrr = precision = recall = 0.0
    for ranked, q in zip(ranked_sections, questions, strict=True):
        relevant = [i for i, section in enumerate(ranked) if section == q["section"]]
        hit1 += bool(relevant) and relevant[0] == 0
        hitk += bool(relevant)
        mrr += 1 / (relevant[0] + 1) if relevant else 0.0
        precision += len(relevant) / len(ranked) if ranked else 0.0
        recall += len(relevant) / max(1, chunks_per_section[q["section"]])
    n = len(questions)
    return {"hit@1": hit1 / n, f"hit@{TOP_K}": hitk / n, "MRR": mrr / n,
            f"prec@{TOP_K}": precision / n, f"recall@{TOP_K}": recall / n}


chunks_per_section = Counter(p["metadata"]["section"] for p in payloads)
retrieval = {}
for mode in ("dense", "keywords", "hybrid", "hybrid k=60"):
    started = time.perf_counter()
    ranked = [[p.payload["metadata"]["section"] for p in search(mode, q["question"],
                                                                dense_vector=v)]
              for q, v in zip(eval_questions, eval_vectors, strict=True)]
    ms = 1000 * (time.perf_counter() - started) / len(eval_questions)
    retrieval[mode] = {**retrieval_metrics(ranked, eval_questions, chunks_per_section),
                       "ms/query": ms}

columns = list(retrieval["dense"])
print(f"{len(eval_questions)} test questions, {len(chunks)} chunks of 700 characters\n")
print(f"{'mode':11}" + "".join(f"{c:>11}" for c in columns))
for mode, row in retrieval.items():
    print(f"{mode:11}" + "".join(f"{row[c]:11.3f}" for c in columns))

# %%
import matplotlib.pyplot as plt

shown = ["hit@1", f"hit@{TOP_K}", "MRR", f"recall@{TOP_K}"]
fig, ax = plt.subplots(figsize=(7, 3))
width = 0.8 / len(retrieval)
for i, mode in enumerate(retrieval):
    ax.bar(np.arange(len(shown)) + (i - (len(retrieval) - 1) / 2) * width,
           [retrieval[mode][m] for m in shown], width, label=mode)
ax.set_xticks(np.arange(len(shown)), shown)
ax.set_ylim(0, 1.25)
ax.set_title(f"retrieval on {len(eval_questions)} held-out questions")
ax.legend(loc="upper center", ncol=len(retrieval), fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# What to look for: dense search is strong on questions that paraphrase the Act; keyword
# search wins where a question names an exact term (a form, a figure, a section) and
# loses on paraphrases; fusion recovers from either one's misses, which shows in hit@k
# and recall more than in hit@1. A smaller RRF `k` trusts each list's top ranks more.
#
# The same hybrid search through LangChain: `QdrantVectorStore` in `RetrievalMode.HYBRID`
# with our BM25 as its sparse embedding. It issues the same `Prefetch` + RRF query, so
# the chain of section 5 can switch to it by changing only its retriever.

# %%
from langchain_qdrant import RetrievalMode

hybrid_store = QdrantVectorStore(client=client, collection_name=COLLECTION,
                                 embedding=embeddings, vector_name="dense",
                                 sparse_embedding=bm25, sparse_vector_name="keywords",
                                 retrieval_mode=RetrievalMode.HYBRID)
hybrid_retriever = hybrid_store.as_retriever(search_kwargs={"k": TOP_K})
for doc in hybrid_retriever.invoke(question):
    print(f"{doc.metadata['source']:34} {doc.metadata['heading']}")

# %% [markdown]
# ## 7. Chunking with overlap
#
# How the corpus is cut decides what can be found. `RecursiveCharacterTextSplitter`
# (from `langchain_text_splitters`) cuts at the largest separator that keeps a chunk
# under `chunk_size` (paragraph, line, sentence, word) and repeats up to
# `chunk_overlap` characters at each cut, so that what a cut separates is still together
# in one of the chunks. One section (§ 8), cut small:

# %%
from langchain_text_splitters import RecursiveCharacterTextSplitter

section_8 = next(d.text for d in documents if "§ 8." in d.text)
section_8 = section_8.split("## § 8. Deposit cap\n")[1].split("\n## ")[0]
splitter = RecursiveCharacterTextSplitter(chunk_size=250, chunk_overlap=100,
                                          separators=["\n\n", "\n", ". ", " ", ""],
                                          keep_separator="end")
pieces = splitter.split_text(section_8)
for i, piece in enumerate(pieces):
    print(f"[{i}] {piece}\n")
for i, (left, right) in enumerate(zip(pieces, pieces[1:], strict=False)):
    shared = next((left[-n:] for n in range(min(len(left), len(right)), 0, -1)
                   if right.startswith(left[-n:])), "")
    print(f"overlap [{i}]/[{i + 1}]: {shared!r}")

# %% [markdown]
# **Measured.** For each chunk size (overlap a fifth of it), a collection of its own,
# dense search, the same questions. Besides the section hit@k, **evidence@k** asks
# whether the exact sentence that answers the question is *whole* inside one retrieved
# chunk, and **context** is how many characters the k chunks put into the prompt: what
# a bigger chunk costs in tokens and in the model's attention.

# %%
def normalized(text: str) -> str:
    return " ".join(text.split())


# Chunks that come out the same at two sizes (a whole short section) are embedded once.
vector_cache = dict(zip((c.text for c in chunks), chunk_vectors, strict=True))


def embed_cached(texts: list[str]) -> list[list[float]]:
    missing = [t for t in dict.fromkeys(texts) if t not in vector_cache]
    if missing:
        vector_cache.update(zip(missing, embeddings.embed_documents(missing), strict=True))
    return [vector_cache[t] for t in texts]


chunking = {}
for size in CHUNK_SIZES:
    sized_chunks = split_documents(documents, chunk_size=size, overlap=size // 5)
    name = f"lab04-chunks-{size}"
    if client.collection_exists(name):
        client.delete_collection(name)
    client.create_collection(name, vectors_config=models.VectorParams(
        size=len(chunk_vectors[0]), distance=models.Distance.COSINE))
    sized_vectors = embed_cached([c.text for c in sized_chunks])
    client.upsert(name, points=[models.PointStruct(
        id=i, vector=v, payload={"text": c.text, "section": section_number(c.heading)})
        for i, (c, v) in enumerate(zip(sized_chunks, sized_vectors, strict=True))])
    ranked_sections, evidence_found, context_chars = [], 0, 0
    for q, vector in zip(eval_questions, eval_vectors, strict=True):
        points = client.query_points(name, query=vector, limit=TOP_K).points
        ranked_sections.append([p.payload["section"] for p in points])
        texts = [normalized(p.payload["text"]) for p in points]
        evidence_found += any(normalized(q["evidence"]) in t for t in texts)
        context_chars += sum(map(len, texts))
    per_section = Counter(section_number(c.heading) for c in sized_chunks)
    metrics = retrieval_metrics(ranked_sections, eval_questions, per_section)
    chunking[size] = {"chunks": len(sized_chunks), **metrics,
                      f"evidence@{TOP_K}": evidence_found / len(eval_questions),
                      "context": context_chars / len(eval_questions)}
    client.delete_collection(name)

columns = ["chunks", "hit@1", f"hit@{TOP_K}", "MRR", f"evidence@{TOP_K}", "context"]
print(f"{'size':>5}" + "".join(f"{c:>12}" for c in columns))
for size, row in chunking.items():
    print(f"{size:5d}" + "".join(f"{row[c]:12.0f}" if c in ("chunks", "context")
                                 else f"{row[c]:12.3f}" for c in columns))

fig, ax = plt.subplots(figsize=(7, 3))
sizes = list(chunking)
for metric in ("hit@1", "MRR", f"evidence@{TOP_K}"):
    ax.plot(sizes, [chunking[s][metric] for s in sizes], marker="o", label=metric)
ax.set_xlabel("chunk size (characters; overlap = size / 5)")
ax.set_ylim(0, 1.05)
ax.legend(loc="lower right")
context_axis = ax.twinx()
context_axis.plot(sizes, [chunking[s]["context"] for s in sizes], color="gray", ls="--")
context_axis.set_ylabel(f"context chars (top {TOP_K})", color="gray")
context_axis.set_ylim(0, None)
ax.set_title("what the chunk size changes")
plt.tight_layout()
plt.show()

# %% [markdown]
# Read the table from both ends. Small chunks cut evidence sentences apart (evidence@k
# falls) and hand the model fragments; big chunks carry the right section but put more
# text into the prompt (context) than the question needs, which costs tokens and, for a
# small model with a 2k-token window, its attention. agentcycle's splitter never crosses
# a section boundary, so chunks longer than a section (500-800 characters here) change
# nothing more: that is why agentcycle's default is 700 characters with 120 of overlap.
#
# ## 8. Evaluation: answers to questions with known answers
#
# The questions below are answered end to end by the chain of section 5 with the hybrid
# retriever, sent together (the model server batches concurrent requests), and scored
# three ways: **key facts** (every key fact of the reference answer, a figure or a name,
# appears in the answer: agentcycle's `keyword_match`), **similarity** (cosine of the
# MiniLM embeddings of answer and reference), and whether the right section was
# **retrieved**.
#
# Everything is tracked as an MLflow run (parameters, the metrics of sections 6-8, the
# answers as a table), with one trace per answer (agentcycle's `span`). With
# `LANGFUSE_HOST`, `LANGFUSE_PUBLIC_KEY` and `LANGFUSE_SECRET_KEY` set, agentcycle also
# exports those traces to Langfuse (OpenTelemetry), with the scores as attributes.

# %%
from concurrent.futures import ThreadPoolExecutor

import mlflow

from agentcycle.evals.scorers.text import keyword_match
from agentcycle.observe import setup_tracking, span

setup_tracking(settings)
print(f"tracking: MLflow at {settings.tracking_uri}; Langfuse "
      + (f"at {settings.langfuse_host} (traces)" if settings.langfuse_enabled else
         "off (set LANGFUSE_HOST, LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY)"))

hybrid_chain = rag_chain_with(hybrid_retriever)
answer_stride = max(1, len(test_questions) // N_ANSWER_QUESTIONS)
answer_questions = test_questions[::answer_stride][:N_ANSWER_QUESTIONS]


def answer(q: dict) -> dict:
    """One question through the chain, in a trace of its own."""
    with span("rag answer", "CHAIN", inputs={"question": q["question"]},
              settings=settings) as trace_span:
        started = time.perf_counter()
        out = hybrid_chain.invoke(q["question"])
        row = {"id": q["id"], "question": q["question"], "reference": q["answer"],
               "answer": out["answer"].strip(),
               "seconds": round(time.perf_counter() - started, 2),
               "key_facts": keyword_match(out["answer"], q["keywords"]),
               "retrieved": any(d.metadata["section"] == q["section"] for d in out["documents"]),
               "sources": [d.metadata["heading"] for d in out["documents"]]}
        trace_span.set_outputs({"answer": row["answer"], "sources": row["sources"]})
        trace_span.set_attributes({"eval.key_facts": row["key_facts"],
                                   "eval.retrieved": row["retrieved"]})
    return row


# Concurrent requests, as `chain.batch()` would send them: the model server batches
# them (continuous batching), so N answers cost far less than N times one.
started = time.perf_counter()
with ThreadPoolExecutor(max_workers=4) as pool:
    answers = list(pool.map(answer, answer_questions))
wall_seconds = time.perf_counter() - started
for row in answers:
    row["similarity"] = round(local_embedder.similarity(row["answer"], row["reference"]), 3)
request_seconds = [r["seconds"] for r in answers]
print(f"{len(answers)} answers in {wall_seconds:.1f} s of wall time; the requests, overlapping, "
      f"took {min(request_seconds):.1f}-{max(request_seconds):.1f} s each\n")
for row in answers:
    print(f"{row['id']}  {row['question']}\n  model:     {row['answer'][:140]}\n"
          f"  reference: {row['reference']}\n  key facts {'yes' if row['key_facts'] else 'no'}"
          f", similarity {row['similarity']:.2f}, right section retrieved "
          f"{'yes' if row['retrieved'] else 'no'}, {row['seconds']:.1f} s\n")

# %%
answer_metrics = {
    "answer_key_facts": float(np.mean([r["key_facts"] for r in answers])),
    "answer_similarity": float(np.mean([r["similarity"] for r in answers])),
    "answer_retrieved": float(np.mean([r["retrieved"] for r in answers])),
    "answer_seconds": float(np.mean([r["seconds"] for r in answers])),
    "answers_wall_seconds": wall_seconds}


def metric_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


with mlflow.start_run(run_name="04-rag-pipeline") as run:
    mlflow.log_params({"embeddings": embedding_source[:250], "chat_model": chat.model,
                       "chat_source": chat.source, "top_k": TOP_K, "chunk_size": 700,
                       "chunk_overlap": 120, "retriever": "hybrid (dense + BM25, RRF)",
                       "retrieval_questions": len(eval_questions),
                       "answer_questions": len(answers), "max_tokens": MAX_TOKENS})
    for mode, row in retrieval.items():
        mlflow.log_metrics({metric_name(f"{mode}.{k}"): v for k, v in row.items()})
    for size, row in chunking.items():
        mlflow.log_metrics({metric_name(f"chunks{size}.{k}"): v for k, v in row.items()})
    mlflow.log_metrics(answer_metrics)
    mlflow.log_table({key: [r[key] for r in answers] for key in
                      ("id", "question", "reference", "answer", "key_facts", "similarity",
                       "retrieved", "seconds")}, "answers.json")
print(f"MLflow run {run.info.run_id} in experiment {settings.mlflow_experiment!r}")
print(f"{'metric':22} value")
for key, value in answer_metrics.items():
    print(f"{key:22} {value:.3f}")

fig, ax = plt.subplots(figsize=(7, 2.6))
labels = [r["id"] for r in answers]
ax.bar(labels, [r["similarity"] for r in answers],
       color=["tab:green" if r["key_facts"] else "tab:red" for r in answers])
ax.set_ylim(0, 1)
ax.set_ylabel("similarity to reference")
ax.set_title("answers: green = every key fact present, red = a fact missing")
plt.tight_layout()
plt.show()

# %% [markdown]
# What to read from it: retrieval is the part a small model cannot fix, and it is
# measured without any model call, so tune it first (mode, chunking, k). SmolLM2-135M
# then often restates a passage instead of answering, or picks the wrong figure from
# the right passage: the key-fact score is low even when the right section was
# retrieved. A bigger model on the platform's LiteLLM changes only that last column;
# fine-tuning the small model on this domain (the fine-tuning notebooks, `agentcycle
# demo`) is the other way to raise it.
#
# In production, `agentcycle rag ingest` and `agentcycle rag ask` (or
# `agentcycle.rag.RagAgent`) run this pipeline with versioned collections, citations and
# traces, and `agentcycle eval run` scores it on a suite with gates.
#
# ## 9. Clean up
#
# Delete the collection, close the Qdrant client (it releases local mode's folder lock)
# and stop the bundled model server.

# %%
client.delete_collection(COLLECTION)
remaining = [c.name for c in client.get_collections().collections if c.name.startswith("lab04")]
client.close()
stack.close()
print(f"deleted {COLLECTION}; lab04 collections left: {remaining or 'none'}; client closed")
