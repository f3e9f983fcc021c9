"""The SageMaker Python SDK v2 flows of the AWS and Hugging Face guides, their seed code as written there, run
against hubserve by the environment alone (AWS_ENDPOINT_URL_*, keys, SAGEMAKER_USER_CONFIG_OVERRIDE).

`python sagemaker_flows.py FLOW CONFIG_JSON` runs one flow in the sagemaker venv (tests/clients/
sagemaker-requirements.txt) and prints what it got as JSON, on the last line. The seed code is the guides' own,
down to the model id, the S3 path and the role; only what the guides leave to the reader (endpoint names of
endpoints that already exist) comes from CONFIG_JSON. After the seed code, a flow asks the control plane what
became of what it deleted, with the SDK's own boto3 client.
"""

from __future__ import annotations

import json
import os
import sys
from ast import literal_eval
from collections.abc import Callable
from typing import Any

import sagemaker
from outcome import attempt
from sagemaker.async_inference import AsyncInferenceConfig, WaiterConfig
from sagemaker.exceptions import ObjectNotExistedError
from sagemaker.huggingface import HuggingFaceModel, HuggingFacePredictor
from sagemaker.iterators import LineIterator
from sagemaker.predictor import Predictor
from sagemaker.s3 import S3Downloader, S3Uploader, s3_path_join
from sagemaker.serializers import JSONSerializer

# The guides' role: a role ARN in code, since `sagemaker.get_execution_role()` asks STS at a fixed AWS host.
role = "arn:aws:iam::111122223333:role/service-role/AmazonSageMaker-ExecutionRole"


def plain(answer: Any) -> Any:
    """A boto3 answer as JSON can carry it (its datetimes as text)."""
    return json.loads(json.dumps(answer, default=str))


def gone(sagemaker_client: Any, endpoint_name: str, model_name: str) -> dict[str, Any]:
    """What the control plane answers, after the deletes, for the endpoint, its config and its model."""
    return {
        "endpoint": attempt(lambda: sagemaker_client.describe_endpoint(EndpointName=endpoint_name)),
        "endpoint_config": attempt(lambda: sagemaker_client.describe_endpoint_config(EndpointConfigName=endpoint_name)),
        "model": attempt(lambda: sagemaker_client.describe_model(ModelName=model_name)),
    }


def deleted(predictor: Any, model_name: str) -> dict[str, Any]:
    """The names the flow made, and what the control plane answers for each after the deletes: what it raised
    (botocore's message names the AWS code) or what it said."""
    answers = gone(predictor.sagemaker_session.sagemaker_client, predictor.endpoint_name, model_name)
    after = {key: {"raised": value["raised"], "message": value["message"]} if "raised" in value
             else {"answered": plain(value)} for key, value in answers.items()}
    return {"endpoint_name": predictor.endpoint_name, "model_name": model_name, "after_delete": after}


def model_data_flow(given: dict[str, Any]) -> dict[str, Any]:
    """Hugging Face's "Deploy a Transformers model trained in SageMaker": model_data on S3, then predict and
    delete."""
    # create Hugging Face Model Class
    huggingface_model = HuggingFaceModel(
        model_data="s3://models/my-bert-model/model.tar.gz",  # path to your trained SageMaker model
        role=role,  # IAM role with permissions to create an endpoint
        transformers_version="4.26",  # Transformers version used
        pytorch_version="1.13",  # PyTorch version used
        py_version="py39",  # Python version used
    )

    # deploy model to SageMaker Inference
    predictor = huggingface_model.deploy(
        initial_instance_count=1,
        instance_type="ml.m5.xlarge",
    )

    # example request: you always need to define "inputs"
    data = {
        "inputs": "Camera - You are awarded a SageMaker Camera for completing the task."
    }

    # request
    prediction = predictor.predict(data)
    described = predictor.sagemaker_session.sagemaker_client.describe_endpoint(EndpointName=predictor.endpoint_name)
    model_name = huggingface_model.name

    predictor.delete_model()
    predictor.delete_endpoint()
    return {"prediction": prediction, "described": plain(described),
            **deleted(predictor, model_name)}


def hub_model_flow(given: dict[str, Any]) -> dict[str, Any]:
    """Hugging Face's "Deploy a model from the Hub": HF_MODEL_ID and HF_TASK in env, no model_data."""
    # Hub model configuration <https://huggingface.co/models>
    hub = {
        "HF_MODEL_ID": "distilbert-base-uncased-distilled-squad",  # model_id from hf.co/models
        "HF_TASK": "question-answering",  # NLP task you want to use for predictions
    }

    # create Hugging Face Model Class
    huggingface_model = HuggingFaceModel(
        env=hub,  # configuration for loading model from Hub
        role=role,  # IAM role with permissions to create an endpoint
        transformers_version="4.26",  # Transformers version used
        pytorch_version="1.13",  # PyTorch version used
        py_version="py39",  # Python version used
    )

    # deploy model to SageMaker Inference
    predictor = huggingface_model.deploy(
        initial_instance_count=1,
        instance_type="ml.m5.xlarge",
    )

    # example request: you always need to define "inputs"
    data = {
        "inputs": {
            "question": "What is used for inference?",
            "context": "My Name is Philipp and I live in Nuremberg. This model is used with sagemaker for inference.",
        }
    }

    # request
    prediction = predictor.predict(data)
    model_name = huggingface_model.name

    predictor.delete_model()
    predictor.delete_endpoint()
    return {"prediction": prediction, **deleted(predictor, model_name)}


def predictors_flow(given: dict[str, Any]) -> dict[str, Any]:
    """Predictors on endpoints that exist already (made through hubserve's own API): the guides'
    `HuggingFacePredictor(endpoint_name=...)`, the bare `Predictor` (its answer as bytes), and `predict_stream`
    on a text-generation endpoint read line by line, as the LLM streaming guides do; then the control plane's
    DescribeEndpoint of one of them."""
    predictor = HuggingFacePredictor(endpoint_name=given["classifier"])
    prediction = predictor.predict({"inputs": "I love using SageMaker with Hugging Face."})

    raw = Predictor(endpoint_name=given["classifier"], serializer=JSONSerializer())
    answer = raw.predict({"inputs": "I love using SageMaker with Hugging Face."})

    llm = HuggingFacePredictor(endpoint_name=given["generator"])
    payload = {"inputs": "My name is Sarah and I live in", "parameters": {"max_new_tokens": 8}, "stream": True}
    tokens, generated_text = [], None
    for line in llm.predict_stream(payload, iterator=LineIterator):
        if line and line.startswith(b"data:"):
            event = json.loads(line.removeprefix(b"data:"))
            tokens.append(event["token"]["text"])
            generated_text = event.get("generated_text")
    described = predictor.sagemaker_session.sagemaker_client.describe_endpoint(EndpointName=given["classifier"])
    return {"prediction": prediction, "raw": answer.decode(), "raw_type": type(answer).__name__,
            "tokens": tokens, "generated_text": generated_text,
            "described": plain(described)}


def async_flow(given: dict[str, Any]) -> dict[str, Any]:
    """Hugging Face's "Asynchronous Inference with Hugging Face Transformers and Amazon SageMaker": an async
    endpoint, predict_async, the result polled from S3 with a WaiterConfig, then delete."""
    sess = sagemaker.Session()
    # sagemaker session bucket -> used for uploading data, models and logs
    # sagemaker will automatically create this bucket if it not exists
    sagemaker_session_bucket = None
    if sagemaker_session_bucket is None and sess is not None:
        # set to default bucket if a bucket name is not given
        sagemaker_session_bucket = sess.default_bucket()

    # Hub Model configuration. <https://huggingface.co/models>
    hub = {
        "HF_MODEL_ID": "distilbert-base-uncased-finetuned-sst-2-english",
        "HF_TASK": "text-classification",
    }

    # create Hugging Face Model Class
    huggingface_model = HuggingFaceModel(
        env=hub,  # configuration for loading model from Hub
        role=role,  # iam role with permissions to create an Endpoint
        transformers_version="4.26",  # transformers version used
        pytorch_version="1.13",  # pytorch version used
        py_version="py39",  # python version used
    )

    # create async endpoint configuration
    async_config = AsyncInferenceConfig(
        # Where our results will be stored
        output_path=s3_path_join("s3://", sagemaker_session_bucket, "async_inference/output"),
    )

    # deploy the endpoint endpoint
    async_predictor = huggingface_model.deploy(
        initial_instance_count=1,
        instance_type="ml.g4dn.xlarge",
        async_inference_config=async_config,
    )

    data = {
        "inputs": [
            "it 's a charming and often affecting journey .",
            "it 's slow -- very , very slow",
            "the mesmerizing performances of the leads keep the film grounded and keep the audience riveted .",
            "the emotions are raw and will strike a nerve with anyone who 's ever had family trauma .",
        ]
    }

    res = async_predictor.predict_async(data=data)
    # Asked at once, before any polling: the answer may or may not be there yet.
    at_once = attempt(res.get_result)

    config = WaiterConfig(
        max_attempts=5,  # number of attempts
        delay=10,  # time in seconds to wait between attempts
    )
    result = res.get_result(config)
    model_name = huggingface_model.name

    async_predictor.delete_model()
    async_predictor.delete_endpoint()
    not_yet = isinstance(at_once, dict) and at_once.get("raised") == ObjectNotExistedError.__name__
    return {"result": result, "at_once": "not yet" if not_yet else at_once, "output_path": res.output_path,
            "failure_path": res.failure_path, **deleted(async_predictor, model_name)}


def transform_flow(given: dict[str, Any]) -> dict[str, Any]:
    """Hugging Face's "Run Batch Transform with Hugging Face Transformers on SageMaker": a JSON Lines file uploaded
    to the session's bucket, a transformer of a Hub model sending one record per request, `transform()` waiting
    with the job's log printed (its defaults: wait=True, logs=True), and the output read back from S3."""
    sess = sagemaker.Session()
    sagemaker_session_bucket = sess.default_bucket()

    # the guide writes its tweets to a JSON Lines file: {"inputs": text} a line
    dataset_jsonl_file = "tweet_data.jsonl"
    with open(dataset_jsonl_file, "w") as outfile:
        for text in given["sentences"]:
            json.dump({"inputs": text}, outfile)
            outfile.write("\n")

    # uploads a given file to S3.
    input_s3_path = s3_path_join("s3://", sagemaker_session_bucket, "batch_transform/input")
    output_s3_path = s3_path_join("s3://", sagemaker_session_bucket, "batch_transform/output")
    s3_file_uri = S3Uploader.upload(dataset_jsonl_file, input_s3_path)

    # Hub Model configuration. <https://huggingface.co/models>
    hub = {
        "HF_MODEL_ID": "distilbert-base-uncased-finetuned-sst-2-english",
        "HF_TASK": "text-classification",
    }

    # create Hugging Face Model Class
    huggingface_model = HuggingFaceModel(
        env=hub,  # configuration for loading model from Hub
        role=role,  # iam role with permissions to create an Endpoint
        transformers_version="4.26",  # transformers version used
        pytorch_version="1.13",  # pytorch version used
        py_version="py39",  # python version used
    )

    # create Transformer to run our batch job
    batch_job = huggingface_model.transformer(
        instance_count=1,
        instance_type="ml.m5.xlarge",
        output_path=output_s3_path,  # we are using the same s3 path to save the output with the input
        strategy="SingleRecord",
    )

    # starts batch transform job and uses s3 data as input
    batch_job.transform(
        data=s3_file_uri,
        content_type="application/json",
        split_type="Line",
    )

    # creating s3 uri for result file -> input file + .out
    output_file = f"{dataset_jsonl_file}.out"
    output_path = s3_path_join(output_s3_path, output_file)

    # download file
    S3Downloader.download(output_path, ".")

    batch_transform_result = []
    with open(output_file) as f:
        for line in f:
            # converts jsonline array to normal array
            line = "[" + line.replace("[", "").replace("]", ",") + "]"
            batch_transform_result = literal_eval(line)

    job_name = batch_job.latest_transform_job.name
    described = sess.sagemaker_client.describe_transform_job(TransformJobName=job_name)
    return {"job_name": job_name, "result": batch_transform_result, "described": plain(described)}


FLOWS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "model-data": model_data_flow, "hub-model": hub_model_flow, "predictors": predictors_flow, "async": async_flow,
    "transform": transform_flow,
}

if __name__ == "__main__":
    try:
        outcome = FLOWS[sys.argv[1]](json.loads(sys.argv[2]) if len(sys.argv) > 2 else {})
    except Exception as error:
        # One line the test puts first when it fails: the SDK's own traceback is long and boxed.
        print(f"\nflow error: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        raise
    # deploy() prints its progress glyphs without a newline: the JSON goes on a line of its own.
    print("\n" + json.dumps(outcome, default=str), flush=True)
    # The SDK's S3 waiter on the failure key keeps polling after the result came, in a thread the interpreter
    # would wait for (max_attempts x delay); everything has been said.
    os._exit(0)
