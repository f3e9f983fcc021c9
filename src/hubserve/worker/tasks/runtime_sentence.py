"""sentence-transformers models over a runtime session (ONNX Runtime): a bi-encoder (Transformer, Pooling, Normalize)
and a cross-encoder (a sequence classifier and its activation), tokenized, pooled and normalised in numpy as the
library does, behind the library's own calls for what the adapters ask (`encode`, `predict`). `bi_encoder_modules`
and `cross_encoder_modules` read a model folder's modules, or say why it needs the library (and torch)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers.normalizers import Lowercase
from tokenizers.normalizers import Sequence as NormalizerSequence

from hubserve.worker.backends import Export, RuntimeSession
from hubserve.worker.tasks.runtime_pipelines import RuntimeModel

POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
LEGACY_POOLING_KEYS = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
                       "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                       "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
# Keys of a Transformer module's config that change nothing for text models when at these values.
PLAIN_TRANSFORMER_KEYS = {"modality_config", "module_output_name", "unpad_inputs", "backend", "cache_dir",
                          "query_length", "document_length", "query_expansion", "max_seq_length", "do_lower_case"}
EXTRA_ARGUMENT_KEYS = ("model_args", "model_kwargs", "tokenizer_args", "processor_kwargs", "config_args",
                       "config_kwargs", "processing_kwargs")
# Cross-encoder activations (as sentence-transformers names them in a model's config) in numpy.
ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "Sigmoid": lambda scores: 1.0 / (1.0 + np.exp(-scores)),
    "Identity": lambda scores: scores,
    "Tanh": np.tanh,
}


class Unsupported(Exception):
    """A model whose modules only the library runs; the message names what."""


@dataclass(frozen=True)
class TransformerModule:
    """A sentence-transformers Transformer module: its folder and how it tokenizes."""

    path: Path
    max_seq_length: int | None
    do_lower_case: bool


@dataclass(frozen=True)
class BiEncoderModules:
    """Transformer -> Pooling (-> Normalize): what a runtime bi-encoder runs."""

    transformer: TransformerModule
    pooling_modes: tuple[str, ...]
    include_prompt: bool
    normalize: bool
    prompts: dict[str, str]
    default_prompt_name: str | None

    @property
    def pooling(self) -> str:
        """The pooling's name as sentence-transformers shows it (TEI's `pooling`)."""
        return self.pooling_modes[0] if len(self.pooling_modes) == 1 else str(self.pooling_modes)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else {}


def _modules(model_dir: Path) -> list[tuple[str, Path]]:
    """(module type's class name, folder) of each module in modules.json."""
    return [(str(module["type"]).rsplit(".", 1)[-1], model_dir / str(module.get("path", "")))
            for module in _read_json(model_dir / "modules.json") or []]


def transformer_module(path: Path, task: str) -> TransformerModule:
    """The Transformer module in `path` (its sentence_bert_config.json), or Unsupported when its settings are more
    than a text model's length and casing."""
    config = _read_json(path / "sentence_bert_config.json")
    if config.get("transformer_task", task) != task:
        raise Unsupported(f"a {config['transformer_task']} Transformer module")
    extra = [key for key in EXTRA_ARGUMENT_KEYS if config.get(key)]
    unknown = sorted(set(config) - PLAIN_TRANSFORMER_KEYS - set(EXTRA_ARGUMENT_KEYS) - {"transformer_task"})
    modalities = set(config.get("modality_config") or {"text": None})
    if extra or unknown or modalities != {"text"} or config.get("query_expansion"):
        raise Unsupported(f"Transformer module settings {', '.join(extra + unknown) or 'beyond text'}")
    return TransformerModule(path, config.get("max_seq_length"), bool(config.get("do_lower_case", False)))


def model_prompts(model_dir: Path) -> tuple[dict[str, str], str | None]:
    """The prompts a model names (sentence-transformers' empty query and document ones first) and its default."""
    config = _read_json(model_dir / "config_sentence_transformers.json")
    prompts = {"query": "", "document": "", **{name: prompt or "" for name, prompt
                                                in (config.get("prompts") or {}).items()}}
    return prompts, config.get("default_prompt_name")


def bi_encoder_modules(model_dir: Path) -> BiEncoderModules:
    """The modules of a sentence-transformers bi-encoder folder, or Unsupported naming the module that is not
    Transformer, Pooling or a last Normalize."""
    modules = _modules(model_dir)
    kinds = [kind for kind, _ in modules]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        other = next((kind for kind in kinds if kind not in ("Transformer", "Pooling", "Normalize")), None)
        raise Unsupported(f"the {other} module" if other else f"modules {' -> '.join(kinds) or 'unknown'}")
    pooling = _read_json(modules[1][1] / "config.json")
    modes = pooling.get("pooling_mode") or [mode for key, mode in LEGACY_POOLING_KEYS.items() if pooling.get(key)]
    modes = (modes,) if isinstance(modes, str) else tuple(modes or ("mean",))
    if not set(modes) <= set(POOLING_MODES):
        raise Unsupported(f"pooling {modes}")
    prompts, default_prompt_name = model_prompts(model_dir)
    return BiEncoderModules(transformer_module(modules[0][1], "feature-extraction"), modes,
                            bool(pooling.get("include_prompt", True)), len(kinds) == 3, prompts, default_prompt_name)


def cross_encoder_modules(model_dir: Path, config: Any) -> tuple[TransformerModule, Callable[..., np.ndarray]]:
    """The Transformer module of a sentence-transformers cross-encoder folder (a sequence classifier) and its
    activation, or Unsupported."""
    modules = _modules(model_dir)
    if modules and [kind for kind, _ in modules] != ["Transformer"]:
        raise Unsupported(f"modules {' -> '.join(kind for kind, _ in modules)}")
    if any(str(name).endswith("ForCausalLM") for name in config.architectures or []):
        raise Unsupported("a causal language model reranker")
    if model_prompts(model_dir)[1] is not None:
        raise Unsupported("a default prompt")
    settings = getattr(config, "sentence_transformers", None) or {}
    path = settings.get("activation_fn") or getattr(config, "sbert_ce_default_activation_function", None)
    name = str(path).rsplit(".", 1)[-1] if path else ("Sigmoid" if config.num_labels == 1 else "Identity")
    if name not in ACTIVATIONS:
        raise Unsupported(f"the activation {path}")
    return transformer_module(modules[0][1] if modules else model_dir, "sequence-classification"), ACTIVATIONS[name]


def module_tokenizer(export: Export, module: TransformerModule) -> Any:
    """The export's tokenizer set up as the Transformer module sets up its own: its length (the module's
    max_seq_length, else the tokenizer's capped at the model's positions) and lowercasing."""
    tokenizer = export.tokenizer
    if module.max_seq_length is not None:
        tokenizer.model_max_length = module.max_seq_length
    elif getattr(export.config, "max_position_embeddings", -1) != -1:
        tokenizer.model_max_length = min(tokenizer.model_max_length, export.config.max_position_embeddings)
    if module.do_lower_case:  # (a normalizer that lowercases already lowercases the same, twice)
        normalizer: Any = tokenizer.backend_tokenizer.normalizer
        others = list(iter(normalizer)) if isinstance(normalizer, NormalizerSequence) else [normalizer]
        tokenizer.backend_tokenizer.normalizer = NormalizerSequence([Lowercase(), *filter(None, others)])
    return tokenizer


def _length_order(lengths: list[int]) -> np.ndarray:
    """Input indices, longest first (as sentence-transformers batches them)."""
    return np.argsort([-length for length in lengths])


class RuntimeSentenceTransformer:
    """A bi-encoder over a runtime session, with `SentenceTransformer.encode`'s arguments and answers for text."""

    def __init__(self, session: RuntimeSession, tokenizer: Any, modules: BiEncoderModules, dimension: int) -> None:
        self.session = session
        self.tokenizer = tokenizer
        self.modules = modules
        self.dimension = dimension
        self.prompts = modules.prompts
        self.default_prompt_name = modules.default_prompt_name
        self._prompt_lengths: dict[str, int] = {}

    @classmethod
    def load(cls, session: RuntimeSession, export: Export, modules: BiEncoderModules) -> RuntimeSentenceTransformer:
        """Over the export of the Transformer module: its tokenizer as the module sets it up."""
        dimension = int(export.config.hidden_size) * len(modules.pooling_modes)
        return cls(session, module_tokenizer(export, modules.transformer), modules, dimension)

    @property
    def max_seq_length(self) -> int:
        return int(self.tokenizer.model_max_length)

    def get_embedding_dimension(self) -> int:
        return self.dimension

    def unnormalized(self) -> RuntimeSentenceTransformer:
        """The same model without its Normalize module: the pooled vectors."""
        return RuntimeSentenceTransformer(self.session, self.tokenizer, replace(self.modules, normalize=False),
                                          self.dimension)

    def encode(self, sentences: str | list[str], prompt_name: str | None = None, prompt: str | None = None,
               batch_size: int = 32, normalize_embeddings: bool = False, truncate_dim: int | None = None,
               output_value: str | None = "sentence_embedding", convert_to_numpy: bool = True,
               show_progress_bar: bool | None = None) -> Any:
        """One vector per text (a 2-D array; 1-D for a single string), or with `output_value=None` a dict per text
        of its `sentence_embedding` and `attention_mask`."""
        texts = [sentences] if isinstance(sentences, str) else list(sentences)
        prompt = self._prompt(prompt, prompt_name)
        order = _length_order([len(text) for text in texts])
        found: list[Any] = [None] * len(texts)
        for start in range(0, len(texts), batch_size):
            batch = order[start:start + batch_size]
            vectors, mask = self._embed([prompt + texts[index] for index in batch], prompt)
            if truncate_dim is not None:
                vectors = vectors[:, :truncate_dim]
            if normalize_embeddings:
                vectors = normalized(vectors)
            for index, vector, row in zip(batch, vectors, mask, strict=True):
                found[index] = vector if output_value else {"sentence_embedding": vector, "attention_mask": row}
        if output_value is None:
            return found
        stacked = np.stack(found) if found else np.empty((0, self.dimension), dtype=np.float32)
        return stacked[0] if isinstance(sentences, str) else stacked

    def _prompt(self, prompt: str | None, prompt_name: str | None) -> str:
        if prompt is None:
            name = prompt_name if prompt_name is not None else self.default_prompt_name
            if prompt_name is not None and prompt_name not in self.prompts:
                raise ValueError(f"Prompt name '{prompt_name}' not found in the configured prompts dictionary "
                                 f"with keys {list(self.prompts)!r}.")
            prompt = self.prompts.get(name, "") if name is not None else ""
        return prompt

    def _embed(self, texts: list[str], prompt: str) -> tuple[np.ndarray, np.ndarray]:
        """The pooled (then, with a Normalize module, normalised) vectors of texts, and their attention mask."""
        encoding = self.tokenizer(texts, padding=True, truncation="longest_first", return_tensors="np")
        mask = encoding["attention_mask"]
        tokens = self.session.run(encoding)["last_hidden_state"]
        prompt_length = self._prompt_length(prompt) if prompt and not self.modules.include_prompt else 0
        vectors = np.concatenate([pooled(tokens, mask, mode, prompt_length) for mode in self.modules.pooling_modes],
                                 axis=-1)
        return (normalized(vectors) if self.modules.normalize else vectors), mask

    def _prompt_length(self, prompt: str) -> int:
        """The prompt's tokens (with the leading special tokens, without a trailing one), as the library counts."""
        if prompt not in self._prompt_lengths:
            ids = list(self.tokenizer([prompt], truncation="longest_first")["input_ids"][0])
            self._prompt_lengths[prompt] = len(ids) - (ids[-1] in self.tokenizer.all_special_ids)
        return self._prompt_lengths[prompt]


def pooled(tokens: np.ndarray, mask: np.ndarray, mode: str, prompt_length: int = 0) -> np.ndarray:
    """sentence-transformers' Pooling of token vectors (batch x tokens x dim) under an attention mask; the first
    `prompt_length` real tokens left out where the model pools without its prompt."""
    original = mask
    if prompt_length:
        starts = mask.argmax(axis=1)  # the padding on the left, if any
        mask = np.where(np.arange(mask.shape[1])[None, :] < (starts + prompt_length)[:, None], 0, mask)
    weights = mask[..., None].astype(np.float32)
    if mode == "cls":
        return tokens[np.arange(len(tokens)), mask.argmax(axis=1)]
    if mode == "max":
        return np.where(weights > 0, tokens, -np.inf).max(axis=1).astype(np.float32)
    if mode in ("mean", "mean_sqrt_len_tokens"):
        counts = np.maximum(weights.sum(axis=1), 1e-9)
        return (tokens * weights).sum(axis=1) / (counts if mode == "mean" else np.sqrt(counts))
    if mode == "weightedmean":
        positions = np.arange(1, tokens.shape[1] + 1, dtype=np.float32)[None, :, None]
        weighted = weights * (positions - original.argmax(axis=1)[:, None, None])
        return (tokens * weighted).sum(axis=1) / np.maximum(weighted.sum(axis=1), 1e-9)
    # lasttoken: the last real token (a row without any: the first position, as the library's gather has it)
    from_end = np.where(mask.any(axis=1), mask[:, ::-1].argmax(axis=1), mask.shape[1] - 1)
    return (tokens * weights)[np.arange(len(tokens)), mask.shape[1] - 1 - from_end]


def normalized(vectors: np.ndarray) -> np.ndarray:
    """Each row over its L2 norm (torch's `normalize`: at least 1e-12)."""
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


class RuntimeCrossEncoder:
    """A cross-encoder over a runtime session, with `CrossEncoder.predict`'s arguments and answers for text
    pairs; `model.config` is the classifier's."""

    def __init__(self, session: RuntimeSession, export: Export, module: TransformerModule,
                 activation: Callable[[np.ndarray], np.ndarray]) -> None:
        self.session = session
        self.model = RuntimeModel(export.config)
        self.tokenizer = module_tokenizer(export, module)
        self.activation = activation

    @property
    def max_seq_length(self) -> int:
        return int(self.tokenizer.model_max_length)

    def predict(self, inputs: list[Any], batch_size: int = 32, apply_softmax: bool | None = False,
                show_progress_bar: bool | None = None, convert_to_numpy: bool = True) -> np.ndarray:
        """One score per (query, text) pair (a row of scores for a classifier of several labels)."""
        pairs = [list(pair) for pair in inputs]
        order = _length_order([len(first) + len(second) for first, second in pairs])
        found: list[Any] = [None] * len(pairs)
        for start in range(0, len(pairs), batch_size):
            batch = order[start:start + batch_size]
            encoding = self.tokenizer([pairs[index][0] for index in batch], [pairs[index][1] for index in batch],
                                      padding=True, truncation="longest_first", return_tensors="np")
            scores = self.activation(self.session.run(encoding)["logits"].astype(np.float32))
            if self.model.config.num_labels == 1:
                scores = scores[:, 0]
            elif apply_softmax:
                shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
                scores = shifted / shifted.sum(axis=1, keepdims=True)
            for index, score in zip(batch, scores, strict=True):
                found[index] = score
        return np.stack(found).astype(np.float32) if found else np.array([])
