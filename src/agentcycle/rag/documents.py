"""Load a folder of Markdown/text files and split it into overlapping chunks."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from agentcycle.errors import DataError

SUFFIXES = (".md", ".markdown", ".txt")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Document:
    source: str  # path relative to the ingested folder
    text: str


@dataclass(frozen=True)
class Chunk:
    text: str
    source: str
    index: int
    heading: str = ""
    metadata: dict = field(default_factory=dict)

    @property
    def citation(self) -> str:
        return f"{self.source} {self.heading}".strip()


def load_documents(folder: str | Path) -> list[Document]:
    """Every .md/.txt file under ``folder``; fails on the first unreadable one."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"corpus folder not found: {folder}")
    documents = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in SUFFIXES):
        raw = path.read_bytes()
        if b"\x00" in raw:
            raise DataError(f"{path}: binary file in the corpus (only UTF-8 text is ingested)")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
        if text.strip():
            documents.append(Document(str(path.relative_to(root)), text))
    if not documents:
        raise DataError(f"no non-empty .md or .txt files in {folder}")
    return documents


def split_documents(
    documents: list[Document], chunk_size: int = 700, overlap: int = 120
) -> list[Chunk]:
    """Split on Markdown structure first, then by size, keeping ``overlap`` characters.

    Each chunk remembers the nearest heading above it, so citations can name the
    section (``part2.md § 7. Deposit cap``) rather than a chunk number.
    """
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    if overlap >= chunk_size:
        raise DataError(f"chunk overlap ({overlap}) must be smaller than chunk size ({chunk_size})")
    splitter = RecursiveCharacterTextSplitter(
        chunk_size=chunk_size,
        chunk_overlap=overlap,
        separators=["\n## ", "\n### ", "\n\n", "\n", ". ", " ", ""],
        keep_separator="start",
        add_start_index=True,
    )
    chunks = []
    for doc in documents:
        headings = [(m.start(), m.group(1)) for m in _HEADING.finditer(doc.text)]
        for i, piece in enumerate(splitter.create_documents([doc.text])):
            start = piece.metadata["start_index"]
            text = piece.page_content.strip()
            # The heading a chunk falls under: the last one starting at or before its
            # first line (a chunk that opens with a heading is under that heading).
            first_line_end = start + len(text.split("\n", 1)[0]) + 1
            heading = next((h for pos, h in reversed(headings) if pos <= first_line_end), "")
            chunks.append(Chunk(text=text, source=doc.source, index=i, heading=heading))
    return chunks
