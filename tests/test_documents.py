import pytest

from agentcycle.errors import DataError
from agentcycle.rag import load_documents, split_documents


def test_chunks_overlap_and_remember_their_heading(tmp_path):
    text = "# Title\n\n## § 1. First\n" + " ".join(f"word{i}" for i in range(300)) + "\n"
    (tmp_path / "a.md").write_text(text)
    chunks = split_documents(load_documents(tmp_path), chunk_size=400, overlap=100)
    assert len(chunks) > 3
    assert all(c.text.startswith("## § 1. First\n") for c in chunks)
    assert all(c.heading == "§ 1. First" for c in chunks)
    assert all(len(c.text) <= 400 + len("## § 1. First\n") for c in chunks)
    first, second = chunks[0].text.split(), chunks[1].text.split()
    assert set(first[-5:]) & set(second[:20]), "neighbouring chunks share text"


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_documents(tmp_path / "nope")


def test_empty_folder(tmp_path):
    (tmp_path / "empty.md").write_text("  \n")
    with pytest.raises(DataError, match="no non-empty"):
        load_documents(tmp_path)


def test_binary_and_non_utf8_files_are_named(tmp_path):
    (tmp_path / "ok.md").write_text("fine")
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9 au lait")
    with pytest.raises(DataError, match=r"bad.txt: not UTF-8"):
        load_documents(tmp_path)
    (tmp_path / "bad.txt").unlink()
    (tmp_path / "blob.md").write_bytes(b"\x89PNG\x00\x00")
    with pytest.raises(DataError, match="blob.md: binary"):
        load_documents(tmp_path)


def test_overlap_must_be_smaller_than_chunks(tmp_path):
    (tmp_path / "a.md").write_text("text")
    with pytest.raises(DataError, match="overlap"):
        split_documents(load_documents(tmp_path), chunk_size=100, overlap=100)
