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
    if root.is_file():
        raise DataError(f"{folder} is a file; give the folder of .md/.txt documents")
    if not root.is_dir():
        raise DataError(f"corpus folder not found: {folder}")
    documents = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in SUFFIXES):
        if not path.is_file():  # a folder named x.md, a link loop or a dangling one, a FIFO
            continue
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise DataError(f"{path}: cannot be read ({exc.strerror})") from None
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
    """Split each document into its Markdown sections, then each section by size.

    Every chunk starts with its section's heading, so a chunk cut from the middle of a
    long section still says what it is about (for retrieval, and for citations).
    """
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    if overlap >= chunk_size:
        raise DataError(f"chunk overlap ({overlap}) must be smaller than chunk size ({chunk_size})")
    splitter = RecursiveCharacterTextSplitter(
        chunk_size=chunk_size, chunk_overlap=overlap,
        separators=["\n\n", "\n", ". ", " ", ""], keep_separator="end",
    )
    chunks = []
    for doc in documents:
        index = 0
        for heading, body in _sections(doc.text):
            for piece in splitter.split_text(body) if body.strip() else []:
                text = f"{heading}\n{piece.strip()}" if heading else piece.strip()
                chunks.append(Chunk(text=text, source=doc.source, index=index,
                                    heading=heading.lstrip("#").strip()))
                index += 1
    return chunks


def _sections(text: str) -> list[tuple[str, str]]:
    """(heading line, body) pairs; text before the first heading has an empty heading."""
    matches = list(_HEADING.finditer(text))
    if not matches:
        return [("", text)]
    sections = [("", text[: matches[0].start()])]
    for match, following in zip(matches, [*matches[1:], None], strict=True):
        end = following.start() if following else len(text)
        sections.append((match.group(0).strip(), text[match.end() : end]))
    return sections
