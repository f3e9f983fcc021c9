"""Task adapters: `adapter_class(task)` finds the adapter for a task name or alias, `infer_task` a model's task."""

from __future__ import annotations

from transformers.pipelines import SUPPORTED_TASKS as PIPELINE_TASKS
from transformers.pipelines import TASK_ALIASES as PIPELINE_ALIASES

from hubserve.errors import BadRequest
from hubserve.worker.tasks.base import LoadOptions, TaskAdapter
from hubserve.worker.tasks.embeddings import (
    FeatureExtractionAdapter,
    SentenceEmbeddingsAdapter,
    SentenceRankingAdapter,
    SentenceSimilarityAdapter,
)
from hubserve.worker.tasks.fill_mask import FillMaskAdapter
from hubserve.worker.tasks.infer import infer_task
from hubserve.worker.tasks.pipeline import pipeline_adapter
from hubserve.worker.tasks.question_answering import QuestionAnsweringAdapter
from hubserve.worker.tasks.seq2seq import (
    TRANSLATION_TASK,
    SummarizationAdapter,
    Text2TextGenerationAdapter,
    TranslationAdapter,
    translation_adapter,
)
from hubserve.worker.tasks.text_classification import TextClassificationAdapter
from hubserve.worker.tasks.text_generation import TextGenerationAdapter
from hubserve.worker.tasks.token_classification import TokenClassificationAdapter
from hubserve.worker.tasks.vision_audio import (
    AudioClassificationAdapter,
    AutomaticSpeechRecognitionAdapter,
    ImageClassificationAdapter,
)
from hubserve.worker.tasks.zero_shot import ZeroShotClassificationAdapter

ADAPTERS: tuple[type[TaskAdapter], ...] = (
    TextClassificationAdapter,
    TokenClassificationAdapter,
    QuestionAnsweringAdapter,
    FillMaskAdapter,
    SummarizationAdapter,
    TranslationAdapter,
    Text2TextGenerationAdapter,
    TextGenerationAdapter,
    FeatureExtractionAdapter,
    SentenceEmbeddingsAdapter,
    SentenceSimilarityAdapter,
    SentenceRankingAdapter,
    ZeroShotClassificationAdapter,
    ImageClassificationAdapter,
    AutomaticSpeechRecognitionAdapter,
    AudioClassificationAdapter,
)
SUPPORTED_TASKS: tuple[str, ...] = tuple(adapter.task for adapter in ADAPTERS)
_BY_NAME: dict[str, type[TaskAdapter]] = {
    name: adapter for adapter in ADAPTERS for name in (adapter.task, *adapter.aliases)
}


def adapter_class(task: str) -> type[TaskAdapter]:
    """The adapter for a task name or alias; any other transformers pipeline task gets the pass-through one.

    `translation_xx_to_yy` gives a translation adapter whose default languages are xx and yy.
    """
    if task in _BY_NAME:
        return _BY_NAME[task]
    if TRANSLATION_TASK.match(task):
        return translation_adapter(task)
    pipeline_task = PIPELINE_ALIASES.get(task, task)
    if pipeline_task in PIPELINE_TASKS:
        return pipeline_adapter(pipeline_task)
    names = sorted({*SUPPORTED_TASKS, *PIPELINE_TASKS, "translation_xx_to_yy"})
    raise BadRequest(f"unsupported task {task!r}; supported tasks: {', '.join(names)}")


__all__ = ["SUPPORTED_TASKS", "LoadOptions", "TaskAdapter", "adapter_class", "infer_task"]
