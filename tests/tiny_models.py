"""Tiny random Hugging Face models for tests: built locally in about a second, deterministic (fixed seeds).

`build_tiny_model(task, path)` saves a model of the right architecture, with its tokenizer or processor and a
model card whose `pipeline_tag` is the task, into `path`; `TINY_MODEL_TASKS` lists the tasks it knows. The causal LM
takes `max_positions`: its context (512 tokens by default).
"""

from __future__ import annotations

import io
import json
import math
import wave
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    BertConfig,
    BertForMaskedLM,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    BertTokenizerFast,
    GenerationConfig,
    GPT2TokenizerFast,
    LlamaConfig,
    LlamaForCausalLM,
    M2M100Config,
    M2M100ForConditionalGeneration,
    NllbTokenizerFast,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    RobertaTokenizerFast,
    TapasConfig,
    TapasForQuestionAnswering,
    TapasTokenizer,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessor,
    ViTModel,
    Wav2Vec2Config,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForCTC,
    Wav2Vec2ForSequenceClassification,
    Wav2Vec2Processor,
    YolosConfig,
    YolosForObjectDetection,
    YolosImageProcessor,
)

SEED = 0
SAMPLING_RATE = 16_000
# The file `build_tiny_model("text-generation-gguf", path)` writes: load it with `gguf_file=TINY_GGUF_FILE`.
TINY_GGUF_FILE = "tiny-llama-F32.gguf"

# Common English words used by tests; any other lowercase word still tokenizes through the letter pieces.
_WORD_TEXT = (
    "the a an and or but not no yes is are was were be been am do does did have has had will would can "
    "could i you he she it we they me him her us them my your his its our their this that these those "
    "there here what who whom where when why how which of in on at to from by for with about as into over "
    "under after before up down out off again very more most some any all each every other such only own "
    "same so than too just now then also my name john mary paul sarah clara wolfgang paris london berlin "
    "new york city france germany england country capital lives live work works worked company google "
    "apple microsoft river world people man woman child day night year time today tomorrow week good bad "
    "great terrible awful nice happy sad love loved hate hated like liked movie film book story music "
    "song food dinner restaurant weather sunny rain cold hot warm big small long short old young best "
    "worst fine really amazing boring think know see say said go went come came make made take took get "
    "got give gave find found tell told ask asked feel felt try tried leave call good-bye hello hi thanks "
    "thank please sorry question answer text sentence word words language english french german translate "
    "summarize summary politics sports technology science economy health business travel cat dog bird car "
    "house tree water fire blue red green black white one two three four five ten hundred first last next"
)
WORDS = _WORD_TEXT.split()
PUNCTUATION = tuple(".,;:!?'\"()[]{}-_/\\@#$%&*+=<>|~`^")
LETTERS = tuple("abcdefghijklmnopqrstuvwxyz")
DIGITS = tuple("0123456789")

# A fixed corpus to train the byte-level BPE tokenizers of the generation models.
CORPUS = [" ".join(WORDS[i : i + 12]) for i in range(0, len(WORDS), 12)] + [
    "My name is Sarah and I live in London.",
    "Paris is the capital of France.",
    "I love this movie, it is really great!",
    "The weather is cold today, tomorrow will be sunny.",
    "What is the capital of Germany? Berlin is the capital of Germany.",
    "Hello, how are you? I am fine, thanks.",
]

SENTIMENT_LABELS = ("NEGATIVE", "POSITIVE")
NER_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
NLI_LABELS = ("contradiction", "neutral", "entailment")
IMAGE_LABELS = ("cat", "dog", "bird", "car", "tree")
AUDIO_LABELS = ("yes", "no", "up", "down", "silence")
LANGUAGE_CODES = ("eng_Latn", "fra_Latn", "deu_Latn")

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

# Small enough to build and run in milliseconds, big enough for the pipelines' shape assumptions.
TINY_TRANSFORMER = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 37,
}


def wordpiece_tokenizer() -> BertTokenizerFast:
    """A lowercasing BERT WordPiece tokenizer over `WORDS`, with [CLS] [SEP] [PAD] [MASK] [UNK]."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces = [*specials, *PUNCTUATION, *DIGITS, *LETTERS, *(f"##{c}" for c in LETTERS + DIGITS)]
    pieces += [w for w in dict.fromkeys(WORDS) if w not in pieces]
    vocab = {piece: i for i, piece in enumerate(pieces)}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return BertTokenizerFast(tokenizer_object=backend, vocab=vocab, model_max_length=512)


def _train_bpe(
    pre_tokenizer: pre_tokenizers.PreTokenizer, specials: list[str], vocab_size: int, **trainer: object
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges of a BPE trained on `CORPUS` (deterministic)."""
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizer
    bpe = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False, **trainer)
    backend.train_from_iterator(CORPUS, bpe)
    state = json.loads(backend.to_str())["model"]
    return state["vocab"], [tuple(pair) for pair in state["merges"]]


def _byte_level_bpe(specials: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    return _train_bpe(byte_level, specials, 600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())


def chat_tokenizer(model_max_length: int = 512) -> GPT2TokenizerFast:
    """A byte-level BPE with <s> </s> <pad> <unk> and a chat template, for the causal LM."""
    vocab, merges = _byte_level_bpe(["<pad>", "<s>", "</s>", "<unk>"])
    return GPT2TokenizerFast(
        vocab=vocab,
        merges=merges,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=model_max_length,
    )


def bart_tokenizer() -> RobertaTokenizerFast:
    """BART's byte-level BPE (<s> X </s>), trained on `CORPUS`."""
    vocab, merges = _byte_level_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    return RobertaTokenizerFast(vocab=vocab, merges=merges, model_max_length=512)


def nllb_tokenizer() -> NllbTokenizerFast:
    """An NLLB-style (Metaspace BPE) tokenizer with a few language codes, so src_lang/tgt_lang work; it
    translates eng_Latn to fra_Latn unless told otherwise."""
    vocab, merges = _train_bpe(pre_tokenizers.Metaspace(), ["<s>", "<pad>", "</s>", "<unk>"], 400)
    return NllbTokenizerFast(
        vocab=vocab,
        merges=merges,
        extra_special_tokens=list(LANGUAGE_CODES),
        src_lang="eng_Latn",
        tgt_lang="fra_Latn",
        model_max_length=512,
    )


def _labels(names: tuple[str, ...]) -> dict[str, dict]:
    return {"id2label": dict(enumerate(names)), "label2id": {name: i for i, name in enumerate(names)}}


def _bert(model_class: type[PreTrainedModel], path: Path, **config: object) -> None:
    tokenizer = wordpiece_tokenizer()
    bert = BertConfig(vocab_size=len(tokenizer), max_position_embeddings=512, **TINY_TRANSFORMER, **config)
    _save(model_class(bert), tokenizer, path)


def _save(model: PreTrainedModel, processor: object, path: Path) -> None:
    model.eval()
    model.save_pretrained(path)
    processor.save_pretrained(path)  # type: ignore[attr-defined]


def _text_classification(path: Path) -> None:
    _bert(BertForSequenceClassification, path, **_labels(SENTIMENT_LABELS))


def _token_classification(path: Path) -> None:
    _bert(BertForTokenClassification, path, **_labels(NER_LABELS))


def _question_answering(path: Path) -> None:
    _bert(BertForQuestionAnswering, path)


def _fill_mask(path: Path) -> None:
    _bert(BertForMaskedLM, path)


def _feature_extraction(path: Path) -> None:
    _bert(BertModel, path)


def _zero_shot(path: Path) -> None:
    _bert(BertForSequenceClassification, path, **_labels(NLI_LABELS))


def _cross_encoder(path: Path) -> None:
    _bert(BertForSequenceClassification, path, num_labels=1)


def _sentence_transformer(path: Path) -> None:
    """A BertModel plus the sentence-transformers files (mean pooling, then normalisation)."""
    _bert(BertModel, path)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    pooling = {"word_embedding_dimension": TINY_TRANSFORMER["hidden_size"], "pooling_mode_mean_tokens": True}
    _write_json(path / "modules.json", modules)
    _write_json(path / "sentence_bert_config.json", {"max_seq_length": 128, "do_lower_case": False})
    _write_json(path / "1_Pooling" / "config.json", pooling)
    (path / "2_Normalize").mkdir(exist_ok=True)


def _special_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int | None]:
    return {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def _short_generation(tokenizer: PreTrainedTokenizerBase, **config: object) -> GenerationConfig:
    """A generation config that stops after 8 new tokens, so tests stay fast."""
    return GenerationConfig(max_new_tokens=8, **_special_ids(tokenizer), **config)


def _encoder_decoder(
    config_class: type[PretrainedConfig],
    model_class: type[PreTrainedModel],
    tokenizer: PreTrainedTokenizerBase,
    path: Path,
) -> None:
    """A two-layer encoder-decoder (BART and M2M100 share their config names) whose decoder starts at </s>."""
    config = config_class(
        vocab_size=len(tokenizer),
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=37,
        decoder_ffn_dim=37,
        max_position_embeddings=512,
        decoder_start_token_id=tokenizer.eos_token_id,
        forced_bos_token_id=None,
        tie_word_embeddings=False,  # tied random embeddings make the decoder repeat its start token
        **_special_ids(tokenizer),
    )
    model = model_class(config)
    model.generation_config = _short_generation(tokenizer, decoder_start_token_id=tokenizer.eos_token_id)
    _save(model, tokenizer, path)


def _seq2seq(path: Path) -> None:
    _encoder_decoder(BartConfig, BartForConditionalGeneration, bart_tokenizer(), path)


def _translation(path: Path) -> None:
    _encoder_decoder(M2M100Config, M2M100ForConditionalGeneration, nllb_tokenizer(), path)


def _tiny_llama(max_positions: int = 512) -> tuple[LlamaForCausalLM, GPT2TokenizerFast]:
    tokenizer = chat_tokenizer(max_positions)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=max_positions,
        num_key_value_heads=2,
        tie_word_embeddings=False,
        **_special_ids(tokenizer),
        **TINY_TRANSFORMER,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = _short_generation(tokenizer, do_sample=False)
    return model, tokenizer


def _text_generation(path: Path, max_positions: int = 512) -> None:
    _save(*_tiny_llama(max_positions), path)


def _permute_for_gguf(weights: np.ndarray, heads: int) -> np.ndarray:
    """The rotary layout llama.cpp's converter writes q/k projections in (transformers undoes it on load)."""
    return weights.reshape(heads, 2, weights.shape[0] // heads // 2, -1).swapaxes(1, 2).reshape(weights.shape)


def _text_generation_gguf(path: Path) -> None:
    """The tiny Llama of `_text_generation` as a float32 GGUF file (`TINY_GGUF_FILE`) alone in the folder."""
    model, tokenizer = _tiny_llama()
    config = model.config
    writer = gguf.GGUFWriter(str(path / TINY_GGUF_FILE), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    specials = set(tokenizer.all_special_ids)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([token for token, _ in vocab])
    writer.add_token_types([3 if index in specials else 1 for _, index in vocab])  # 3: control token
    backend = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    writer.add_token_merges([" ".join(pair) for pair in backend["merges"]])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_unk_token_id(tokenizer.unk_token_id)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    layer_names = {
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    for name, tensor in model.state_dict().items():
        array = tensor.detach().float().numpy()
        if name.startswith("model.layers."):
            layer, rest = name.removeprefix("model.layers.").split(".", 1)
            module = rest.removesuffix(".weight")
            if module == "self_attn.q_proj":
                array = _permute_for_gguf(array, config.num_attention_heads)
            elif module == "self_attn.k_proj":
                array = _permute_for_gguf(array, config.num_key_value_heads)
            name = f"blk.{layer}.{layer_names[module]}.weight"
        else:
            name = names[name]
        writer.add_tensor(name, np.ascontiguousarray(array))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _vit(model_class: type[PreTrainedModel], path: Path, **config: object) -> None:
    vit = ViTConfig(image_size=32, patch_size=8, **TINY_TRANSFORMER, **config)
    processor = ViTImageProcessor(size={"height": 32, "width": 32})
    _save(model_class(vit), processor, path)


def _image_classification(path: Path) -> None:
    _vit(ViTForImageClassification, path, **_labels(IMAGE_LABELS))


def _image_feature_extraction(path: Path) -> None:
    _vit(ViTModel, path)


def _object_detection(path: Path) -> None:
    """A YOLOS detector (a ViT with detection tokens): no timm or torchvision needed."""
    yolos = YolosConfig(image_size=[32, 32], patch_size=8, num_detection_tokens=5, **TINY_TRANSFORMER,
                        **_labels(IMAGE_LABELS))
    _save(YolosForObjectDetection(yolos), YolosImageProcessor(size={"shortest_edge": 32, "longest_edge": 32}), path)


def _table_question_answering(path: Path) -> None:
    """TAPAS over the WordPiece vocabulary, with aggregation (its tokenizer, and serving it, need pandas)."""
    path.mkdir(parents=True, exist_ok=True)
    vocab = sorted(wordpiece_tokenizer().get_vocab().items(), key=lambda item: item[1])
    (path / "vocab.txt").write_text("".join(f"{piece}\n" for piece, _ in vocab))
    tapas = TapasConfig(vocab_size=len(vocab), max_position_embeddings=512, num_aggregation_labels=4,
                        use_answer_as_supervision=True, **TINY_TRANSFORMER,
                        aggregation_labels={0: "NONE", 1: "SUM", 2: "AVERAGE", 3: "COUNT"})
    _save(TapasForQuestionAnswering(tapas), TapasTokenizer(str(path / "vocab.txt"), model_max_length=512), path)


def _wav2vec2_config(**config: object) -> Wav2Vec2Config:
    return Wav2Vec2Config(
        conv_dim=(16, 16),
        conv_stride=(5, 4),
        conv_kernel=(10, 4),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        classifier_proj_size=16,
        **TINY_TRANSFORMER,
        **config,
    )


def _feature_extractor() -> Wav2Vec2FeatureExtractor:
    return Wav2Vec2FeatureExtractor(
        sampling_rate=SAMPLING_RATE, do_normalize=True, return_attention_mask=True
    )


def _speech_recognition(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    characters = ["<pad>", "<s>", "</s>", "<unk>", "|", *(c.upper() for c in LETTERS), "'"]
    _write_json(path / "vocab.json", {c: i for i, c in enumerate(characters)})
    tokenizer = Wav2Vec2CTCTokenizer(str(path / "vocab.json"), word_delimiter_token="|")
    processor = Wav2Vec2Processor(feature_extractor=_feature_extractor(), tokenizer=tokenizer)
    config = _wav2vec2_config(vocab_size=len(characters), pad_token_id=tokenizer.pad_token_id)
    _save(Wav2Vec2ForCTC(config), processor, path)


def _audio_classification(path: Path) -> None:
    _save(
        Wav2Vec2ForSequenceClassification(_wav2vec2_config(**_labels(AUDIO_LABELS))),
        _feature_extractor(),
        path,
    )


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


_BUILDERS: dict[str, Callable[..., None]] = {
    "text-classification": _text_classification,
    "token-classification": _token_classification,
    "question-answering": _question_answering,
    "fill-mask": _fill_mask,
    "feature-extraction": _feature_extraction,
    "zero-shot-classification": _zero_shot,
    "sentence-embeddings": _sentence_transformer,
    "sentence-similarity": _sentence_transformer,
    "sentence-ranking": _cross_encoder,
    "summarization": _seq2seq,
    "text2text-generation": _seq2seq,
    "translation": _translation,
    "text-generation": _text_generation,
    "text-generation-gguf": _text_generation_gguf,
    "image-classification": _image_classification,
    "image-feature-extraction": _image_feature_extraction,
    "object-detection": _object_detection,
    "table-question-answering": _table_question_answering,
    "automatic-speech-recognition": _speech_recognition,
    "audio-classification": _audio_classification,
}
_ALIASES = {"sentiment-analysis": "text-classification", "ner": "token-classification"}

TINY_MODEL_TASKS: tuple[str, ...] = tuple(_BUILDERS)


def build_tiny_model(task: str, path: Path, **options: int) -> Path:
    """Save a tiny random model for `task` (a name in `TINY_MODEL_TASKS` or an alias) into `path`; return it.
    `options` go to the task's builder (`max_positions` for text-generation)."""
    task = _ALIASES.get(task, task)
    if task not in _BUILDERS:
        raise ValueError(f"no tiny model for task {task!r}; known: {', '.join(TINY_MODEL_TASKS)}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        _BUILDERS[task](path, **options)
    library = "sentence-transformers" if task.startswith("sentence-") else "transformers"
    card = f"---\npipeline_tag: {task.removesuffix('-gguf')}\nlibrary_name: {library}\n---\n\nA tiny random model.\n"
    (path / "README.md").write_text(card)
    return path


def sine_wave(
    seconds: float = 1.0, frequency: float = 440.0, sampling_rate: int = SAMPLING_RATE
) -> np.ndarray:
    """A float32 mono sine wave, for audio tests."""
    t = np.arange(int(seconds * sampling_rate), dtype=np.float32) / sampling_rate
    return (0.5 * np.sin(2 * math.pi * frequency * t)).astype(np.float32)


def wav_bytes(samples: np.ndarray, sampling_rate: int = SAMPLING_RATE) -> bytes:
    """A 16-bit PCM mono WAV file holding `samples` (floats in [-1, 1])."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sampling_rate)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def tiny_image(size: int = 40) -> Image.Image:
    """A small deterministic RGB PIL image."""
    pixels = (np.arange(size * size * 3, dtype=np.uint32).reshape(size, size, 3) * 7 % 256).astype(np.uint8)
    return Image.fromarray(pixels)
