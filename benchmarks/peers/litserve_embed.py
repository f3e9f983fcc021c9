"""LitServe with dynamic batching (up to 32 requests, 10 ms timeout) over the same sentence-transformers model:
`python -m benchmarks.peers.litserve_embed`.

No `from __future__ import annotations` here: LitServe reads the annotations of `decode_request` and
`encode_response` at run time to build its FastAPI route, and needs them as real types.
"""

import argparse
from typing import Any

import litserve as ls
from sentence_transformers import SentenceTransformer

from benchmarks.peers import EMBEDDING_ROUTE

MAX_BATCH_SIZE = 32
BATCH_TIMEOUT_S = 0.01


class EmbeddingAPI(ls.LitAPI):
    """`{"inputs": str}` -> `{"embeddings": [float]}`, encoding each batch LitServe gathers in one call."""

    def __init__(self, model_dir: str) -> None:
        super().__init__(max_batch_size=MAX_BATCH_SIZE, batch_timeout=BATCH_TIMEOUT_S, api_path=EMBEDDING_ROUTE)
        self.model_dir = model_dir

    def setup(self, device: str) -> None:
        self.model = SentenceTransformer(self.model_dir, device="cpu")
        self.model.encode("warm up")

    def decode_request(self, request: dict[str, Any]) -> str:
        return str(request["inputs"])

    def predict(self, texts: list[str]) -> list[list[float]]:
        return self.model.encode(texts, batch_size=MAX_BATCH_SIZE, show_progress_bar=False).tolist()

    def encode_response(self, output: list[float]) -> dict[str, Any]:
        return {"embeddings": output}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="a sentence-transformers folder")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = ls.LitServer(EmbeddingAPI(args.model), accelerator="cpu", workers_per_device=1)
    server.run(host="127.0.0.1", port=args.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
