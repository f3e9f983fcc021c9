"""Helpers for tests/test_sources.py: model files, archives, a hand-made Hub cache, a tiny GGUF, servers."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MODEL_FILES = {
    "config.json": b'{"model_type": "llama"}',
    "model.safetensors": b"safetensors bytes",
    "tokenizer.json": b"{}",
}


def write_files(folder: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def write_archive(path: Path, files: dict[str, bytes], prefix: str = "") -> Path:
    """A .zip or tar archive (compressed by its suffix) of `files`, each under `prefix`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w") as bundle:
            for name, data in files.items():
                bundle.writestr(prefix + name, data)
        return path
    return write_tar(path, [(file_member(prefix + name, data), data) for name, data in files.items()])


def write_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    compressed = path.name.endswith((".gz", ".tgz"))
    with tarfile.open(path, "w:gz") if compressed else tarfile.open(path, "w") as tar:
        for member, data in members:
            tar.addfile(member, io.BytesIO(data) if data is not None else None)
    return path


def write_zeros_archive(path: Path, size: int, name: str = "zeros.bin") -> Path:
    """An archive (of the kind its suffix says) of one file of `size` zero bytes, written as a stream: a
    compression bomb of any size costs no memory to make."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".zip":
        chunk = bytes(1 << 20)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bundle, \
                bundle.open(name, "w", force_zip64=True) as out:
            for start in range(0, size, len(chunk)):
                out.write(chunk[: size - start])
        return path
    compression = {".gz": "gz", ".tgz": "gz", ".bz2": "bz2", ".xz": "xz"}.get(path.suffix, "")
    member = tarfile.TarInfo(name)
    member.size = size
    with tarfile.open(path, f"w:{compression}") as tar, open("/dev/zero", "rb") as zeros:
        tar.addfile(member, zeros)
    return path


def file_member(name: str, data: bytes) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.size = len(data)
    return member


def link_member(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type = kind
    member.linkname = target
    return member


def build_hub_cache(
    cache: Path, repo_id: str, commits: dict[str, dict[str, bytes]], refs: dict[str, str]
) -> Path:
    """A Hugging Face cache as huggingface_hub lays it out: blobs, refs and snapshots of symlinks."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for commit, files in commits.items():
        for name, data in files.items():
            blob = hashlib.sha256(data).hexdigest()
            (repo / "blobs" / blob).write_bytes(data)
            link = repo / "snapshots" / commit / name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(Path("../../blobs") / blob)
    for ref, commit in refs.items():
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return repo


def write_tree_listing(repo: Path, commit: str, names: list[str]) -> None:
    """The listing a real `snapshot_download` saves next to the snapshot (`trees/<commit>.json`)."""
    files = {name: {"size": 1, "blob_id": "0" * 40} for name in names}
    (repo / "trees").mkdir(exist_ok=True)
    (repo / "trees" / f"{commit}.json").write_text(json.dumps({"format_version": 1, "files": files}))


def _byte_level_alphabet() -> list[str]:
    """GPT-2's printable spelling of the 256 bytes, which a "gpt2" GGUF tokenizer is written in."""
    ranges = [("!", "~"), ("¡", "¬"), ("®", "ÿ")]
    printable = [byte for first, last in ranges for byte in range(ord(first), ord(last) + 1)]
    spelled = {byte: chr(byte) for byte in printable}
    others = [byte for byte in range(256) if byte not in spelled]
    spelled.update({byte: chr(256 + index) for index, byte in enumerate(others)})
    return [spelled[byte] for byte in range(256)]


def write_tiny_gguf(path: Path) -> Path:
    """A random one-layer llama with a byte-level tokenizer, in a 32 KB GGUF file transformers can read."""
    import numpy as np
    from gguf import GGUFWriter

    hidden, heads, ffn = 16, 2, 32
    tokens = [*_byte_level_alphabet(), "Ġt", "<|endoftext|>"]
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = GGUFWriter(path, "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(64)
    writer.add_embedding_length(hidden)
    writer.add_block_count(1)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_merges(["Ġ t"])
    writer.add_token_types([1] * (len(tokens) - 1) + [3])  # the last one is a control token
    writer.add_bos_token_id(len(tokens) - 1)
    writer.add_eos_token_id(len(tokens) - 1)
    shapes: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (len(tokens), hidden),
        "output_norm.weight": (hidden,),
        "blk.0.attn_norm.weight": (hidden,),
        "blk.0.ffn_norm.weight": (hidden,),
        **{f"blk.0.attn_{name}.weight": (hidden, hidden) for name in ("q", "k", "v", "output")},
        "blk.0.ffn_gate.weight": (ffn, hidden),
        "blk.0.ffn_up.weight": (ffn, hidden),
        "blk.0.ffn_down.weight": (hidden, ffn),
    }
    rng = np.random.default_rng(0)
    for name, shape in shapes.items():
        writer.add_tensor(name, rng.standard_normal(shape).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 -- the base class's name
        pass


@contextmanager
def http_server(folder: Path) -> Iterator[str]:
    """The base URL of a static file server for `folder` on loopback."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextmanager
def moto_s3_server() -> Iterator[str]:
    """The endpoint URL of moto's S3-compatible server, on a free loopback port."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()
