// Small DOM helpers: build elements, a confirmation dialog, an error line.

// h("div", {class: "x", "data-testid": "y", onclick: fn}, child, ...): children are nodes, strings or arrays.
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "value") node.value = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function replace(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

// Resolves true when the user confirms `message`, false when they cancel.
export function confirmAction(message, action = "Confirm") {
  return new Promise((resolve) => {
    const dialog = h("dialog", {class: "confirm", "data-testid": "confirm-dialog"},
      h("p", {}, message),
      h("div", {class: "row end"},
        h("button", {type: "button", "data-testid": "confirm-cancel", onclick: () => close(false)}, "Cancel"),
        h("button", {type: "button", class: "danger", "data-testid": "confirm-ok", onclick: () => close(true)}, action)));
    function close(answer) {
      dialog.close();
      dialog.remove();
      resolve(answer);
    }
    dialog.addEventListener("cancel", () => close(false));
    document.body.append(dialog);
    dialog.showModal();
  });
}

export function errorLine(error) {
  return h("p", {class: "error", "data-testid": "error"}, error.message || String(error));
}

export function formatBytes(bytes) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

export function copyButton(text) {
  const button = h("button", {type: "button", class: "copy", "data-testid": "copy"}, "Copy");
  button.addEventListener("click", async () => {
    await navigator.clipboard.writeText(typeof text === "function" ? text() : text);
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  });
  return button;
}

// A labelled form control.
export function field(label, control) {
  return h("label", {class: "field"}, h("span", {}, label), control);
}
