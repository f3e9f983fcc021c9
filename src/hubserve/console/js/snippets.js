// Copy-paste code that calls an endpoint with the clients users already have (as the README shows them); each
// snippet runs as shown (tests/console/test_console_snippets.py runs them), given the file or token it names.

// Tasks whose request is a file: what the playground's picker accepts, and the file the snippets send.
const IMAGE = {accept: "image/*", file: "cat.jpg", contentType: "image/jpeg"};
const AUDIO = {accept: "audio/*", file: "speech.wav", contentType: "audio/wav"};
export const FILE_TASKS = {
  "image-classification": IMAGE, "image-feature-extraction": IMAGE, "object-detection": IMAGE,
  "image-segmentation": IMAGE, "depth-estimation": IMAGE, "audio-classification": AUDIO,
  "automatic-speech-recognition": AUDIO,
};

// An example request body per task (the Inference Endpoints / SageMaker JSON).
export function exampleBody(task) {
  switch (task) {
    case "sentence-similarity":
      return {inputs: {source_sentence: "A man is eating food.", sentences: ["A man eats a meal.", "The sky is blue."]}};
    case "sentence-ranking":
      return {inputs: {query: "What is the capital of France?", texts: ["Paris is in France.", "The sky is blue."]}};
    case "zero-shot-classification":
      return {inputs: "I love this movie!", parameters: {candidate_labels: ["positive", "negative"]}};
    case "question-answering":
      return {inputs: {question: "Where does Clara live?", context: "My name is Clara and I live in Berlin."}};
    case "fill-mask":
      return {inputs: "The capital of France is [MASK]."};
    case "token-classification":
      return {inputs: "My name is Clara and I live in Berlin.", parameters: {aggregation_strategy: "simple"}};
    case "translation":
    case "summarization":
    case "text2text-generation":
      return {inputs: "The tower is 324 metres tall, about the same height as an 81-storey building."};
    case "text-generation":
      return {inputs: "Once upon a time", parameters: {max_new_tokens: 32}};
    default:
      return {inputs: "I love this movie!"};
  }
}

const CHAT_TASKS = new Set(["text-generation", "image-text-to-text"]);
const EMBEDDING_TASKS = new Set(["feature-extraction", "sentence-embeddings"]);
const TEXTS = `["first", "second one"]`;
const QUESTION = `[{"role": "user", "content": "Tell me the capital of France."}]`;
// huggingface_hub's InferenceClient method per task, and its arguments from the example body.
const HUB_METHODS = {
  "text-classification": (b) => `text_classification(${py(b.inputs)})`,
  "token-classification": (b) => `token_classification(${py(b.inputs)}, aggregation_strategy="simple")`,
  "fill-mask": (b) => `fill_mask(${py(b.inputs)})`,
  "question-answering": (b) => `question_answering(question=${py(b.inputs.question)}, context=${py(b.inputs.context)})`,
  "summarization": (b) => `summarization(${py(b.inputs)})`,
  "translation": (b) => `translation(${py(b.inputs)})`,
  "text-generation": () => `chat_completion(${QUESTION}, max_tokens=30)`,
  "feature-extraction": () => `feature_extraction(${TEXTS})`,
  "sentence-embeddings": () => `feature_extraction(${TEXTS})`,
  "sentence-similarity": (b) => `sentence_similarity(${py(b.inputs.source_sentence)}, ${py(b.inputs.sentences)})`,
  "zero-shot-classification": (b) => `zero_shot_classification(${py(b.inputs)}, ${py(b.parameters.candidate_labels)})`,
  "image-classification": () => `image_classification("cat.jpg")`,
  "object-detection": () => `object_detection("cat.jpg")`,
  "audio-classification": () => `audio_classification("speech.wav")`,
  "automatic-speech-recognition": () => `automatic_speech_recognition("speech.wav")`,
};
HUB_METHODS["image-text-to-text"] = HUB_METHODS["text-generation"];

// A JSON value as Python source.
function py(value) {
  if (value === null) return "None";
  if (typeof value === "boolean") return value ? "True" : "False";
  if (Array.isArray(value)) return `[${value.map(py).join(", ")}]`;
  if (typeof value === "object") {
    return `{${Object.entries(value).map(([key, item]) => `${JSON.stringify(key)}: ${py(item)}`).join(", ")}}`;
  }
  return JSON.stringify(value);
}

// [{name, code}] for an endpoint: {url, name, task, protected}. A protected endpoint's snippets read its token
// from HUBSERVE_TOKEN (boto3: an AWS key pair from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), never inline it.
export function snippets({url, name, task, protected: isProtected}) {
  const server = url.slice(0, url.length - `/endpoints/${name}`.length);
  const upload = FILE_TASKS[task];
  const body = exampleBody(task);
  const tokenNote = isProtected ? `# HUBSERVE_TOKEN: a token for ${name} (hubserve token create my-app --endpoint ${name})\n` : "";
  const pyToken = isProtected ? `os.environ["HUBSERVE_TOKEN"]` : null;
  const pyHead = (imports) => (isProtected ? ["import os", "", ...imports] : imports).join("\n") + "\n\n" + tokenNote;
  const curlAuth = isProtected ? ` \\\n  -H "Authorization: Bearer $HUBSERVE_TOKEN"` : "";
  const curlData = upload
    ? `-H 'content-type: ${upload.contentType}'${curlAuth} \\\n  --data-binary @${upload.file}`
    : `-H 'content-type: application/json'${curlAuth} \\\n  -d '${JSON.stringify(body).replaceAll("'", "'\\''")}'`;
  const list = [{name: "curl", code: `${tokenNote}curl -s ${url} ${curlData}`}, {
    name: "boto3",
    code: (upload ? "import boto3\n\n" : "import json\n\nimport boto3\n\n") +
      (isProtected
        ? "# a protected endpoint checks the AWS signature: export $(hubserve token create my-app --aws)\n" +
          `runtime = boto3.client("sagemaker-runtime", endpoint_url="${server}", region_name="us-east-1")\n`
        : "# a public endpoint takes any AWS key pair: boto3 only needs one to sign\n" +
          `runtime = boto3.client("sagemaker-runtime", endpoint_url="${server}", region_name="us-east-1",\n` +
          `                       aws_access_key_id="unused", aws_secret_access_key="unused")\n`) +
      (upload
        ? `with open("${upload.file}", "rb") as file:\n` +
          `    answer = runtime.invoke_endpoint(EndpointName="${name}", ContentType="${upload.contentType}", Body=file.read())\n` +
          `print(answer["Body"].read().decode())`
        : `answer = runtime.invoke_endpoint(EndpointName="${name}", ContentType="application/json",\n` +
          `                                 Body=json.dumps(${py(body)}))\n` +
          `print(json.loads(answer["Body"].read()))`),
  }];
  if (HUB_METHODS[task]) {
    list.push({
      name: "InferenceClient",
      code: pyHead(["from huggingface_hub import InferenceClient"]) +
        `client = InferenceClient(base_url="${url}", token=${pyToken ?? "None"})\n` +
        `print(client.${HUB_METHODS[task](body)})`,
    });
  }
  if (CHAT_TASKS.has(task) || EMBEDDING_TASKS.has(task)) {
    const openaiKey = pyToken ?? `"unused"`;
    list.push({
      name: "openai",
      code: pyHead(["import openai"]) + `client = openai.OpenAI(base_url="${url}/v1", api_key=${openaiKey})\n` +
        (CHAT_TASKS.has(task)
          ? `reply = client.chat.completions.create(model="${name}", messages=${QUESTION}, max_tokens=30)\n` +
            `print(reply.choices[0].message.content)`
          : `embeddings = client.embeddings.create(model="${name}", input=${TEXTS})\n` +
            `print([item.embedding[:4] for item in embeddings.data])`),
    });
    list.push({
      name: "LangChain",
      code: CHAT_TASKS.has(task)
        ? pyHead(["from langchain_openai import ChatOpenAI"]) +
          `chat = ChatOpenAI(base_url="${url}/v1", api_key=${openaiKey}, model="${name}", max_tokens=100)\n` +
          `print(chat.invoke("What is the capital of France?").content)`
        : pyHead(["from langchain_openai import OpenAIEmbeddings"]) +
          `embeddings = OpenAIEmbeddings(base_url="${url}/v1", api_key=${openaiKey}, model="${name}",\n` +
          `                              check_embedding_ctx_length=False)\n` +
          `print(embeddings.embed_documents(${TEXTS}))`,
    });
  }
  return list;
}
