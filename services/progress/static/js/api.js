// HTTP calls of the page. The session lives in an HttpOnly cookie set by POST /api/session:
// no token is ever kept in JavaScript storage or put in a URL.

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

async function detailOf(response) {
  try {
    const body = await response.json();
    if (body && typeof body.detail === "string") return body.detail;
  } catch {
    // not JSON: fall through to the status text
  }
  return `${response.status} ${response.statusText || "error"}`.trim();
}

export async function request(method, path, body) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) throw new ApiError(response.status, await detailOf(response));
  return response.status === 204 ? null : response.json();
}

export const getConfig = () => request("GET", "/api/config");
const PAGE = 500;
export const listFiles = (cursor = null, limit = PAGE) =>
  request("GET", `/api/files?limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);

// Every file, a page at a time (the cursor is opaque: pass `next` back unchanged).
export async function allFiles() {
  const items = [];
  let cursor = null;
  do {
    const page = await listFiles(cursor);
    items.push(...page.items);
    cursor = page.next;
  } while (cursor);
  return items;
}
export const signIn = (token) => request("POST", "/api/session", { token });
export const signOut = () => request("DELETE", "/api/session");
export const batches = (id) => request("GET", `/api/files/${id}/batches`);
export const summary = (id) => request("GET", `/api/files/${id}/summary`);
export function preview(id, range, sensor) {
  const q = new URLSearchParams({ points: "800" });
  if (range) {
    q.set("start_ns", String(range[0]));
    q.set("end_ns", String(range[1]));
  }
  if (sensor) q.set("sensor", sensor);
  return request("GET", `/api/files/${id}/preview?${q}`);
}

const COMMANDS = {
  cancel: (id) => request("POST", `/api/files/${id}/cancel`),
  retry: (id) => request("POST", `/api/files/${id}/retry`),
  reparse: (id) => request("POST", `/api/files/${id}/reparse`, {}),
  delete: (id) => request("DELETE", `/api/files/${id}`),
};

export function command(name, id) {
  return COMMANDS[name](id);
}

// An export is streamed and may be gigabytes, so it must be a browser download, not a
// fetch into memory. Ask first (dropping the body once the headers say OK) so that an
// error answer shows its detail on the page instead of replacing it.
export async function download(id, as) {
  const url = `/api/files/${id}/samples?as=${encodeURIComponent(as)}`;
  const controller = new AbortController();
  const response = await fetch(url, { credentials: "same-origin", signal: controller.signal });
  if (!response.ok) throw new ApiError(response.status, await detailOf(response));
  controller.abort();
  const link = document.createElement("a");
  link.href = url;
  link.download = "";
  document.body.append(link);
  link.click();
  link.remove();
}
