// The server's public APIs: the control API under /api/v1 (admin token) and the invocation routes.

const TOKEN_KEY = "hubserve.token";

export const session = {
  token: () => sessionStorage.getItem(TOKEN_KEY),
  signIn: (token) => sessionStorage.setItem(TOKEN_KEY, token),
  signOut: () => sessionStorage.removeItem(TOKEN_KEY),
};

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// The message of an error answer: our `{"error"}` body, OpenAI's `{"error": {"message"}}`, or the status text.
export async function errorMessage(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    const error = body.error ?? body.message ?? body.detail;
    if (typeof error === "string") return error;
    if (error && typeof error.message === "string") return error.message;
  } catch {
    // not JSON: the text itself
  }
  return text || `${response.status} ${response.statusText}`;
}

export function authHeaders(extra = {}) {
  const token = session.token();
  return token ? {Authorization: `Bearer ${token}`, ...extra} : extra;
}

// A call to the control API; a refused token (401, or 403: not an admin token) signs out and shows the sign-in.
export async function call(path, {method = "GET", body, signal, raw = false} = {}) {
  const headers = authHeaders(body === undefined ? {} : {"Content-Type": "application/json"});
  const response = await fetch(`/api/v1${path}`, {
    method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401 || response.status === 403) {
    const message = await errorMessage(response);
    session.signOut();
    window.dispatchEvent(new CustomEvent("hubserve:signin", {detail: message}));
    throw new ApiError(response.status, message);
  }
  if (!response.ok) throw new ApiError(response.status, await errorMessage(response));
  if (raw) return response;
  return response.status === 204 ? null : response.json();
}

export const api = {
  endpoints: () => call("/endpoints").then((list) => list.items),
  endpoint: (name) => call(`/endpoints/${name}`),
  create: (spec) => call("/endpoints", {method: "POST", body: spec}),
  update: (name, change) => call(`/endpoints/${name}`, {method: "PATCH", body: change}),
  remove: (name) => call(`/endpoints/${name}`, {method: "DELETE"}),
  pause: (name) => call(`/endpoints/${name}/pause`, {method: "POST"}),
  resume: (name) => call(`/endpoints/${name}/resume`, {method: "POST"}),
  analytics: (name, period) => call(`/endpoints/${name}/analytics?period=${period}`),
  allAnalytics: () => call("/analytics"),
  logs: (name, signal) => call(`/endpoints/${name}/logs?tail=200&follow=true`, {signal, raw: true}),
  tokens: () => call("/tokens"),
  createToken: (request) => call("/tokens", {method: "POST", body: request}),
  revokeToken: (id) => call(`/tokens/${id}`, {method: "DELETE"}),
  models: () => call("/models").then((list) => list.items),
  tasks: () => call("/tasks").then((list) => list.tasks),
};

// Calls `onText` with each decoded piece of a streamed answer's body until it ends or `signal` aborts.
export async function readStream(response, onText) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    onText(decoder.decode(value, {stream: true}));
  }
}
