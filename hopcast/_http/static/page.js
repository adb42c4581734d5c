// hopcast's live page: one EventSource on the patterns typed (or given as ?topic=), its events
// listed as they arrive, and a form that publishes. Every URL is relative to the page, so the
// page works wherever the gateway is mounted. The browser's EventSource resumes by itself with
// Last-Event-ID; the page only shows it happening.
"use strict";

const $ = (id) => document.getElementById(id);
const ALWAYS = ["message", "hopcast-missed", "hopcast-undeliverable", "hopcast-token-expired"];
const MAX_ROWS = 500;

let source = null;
let listening = new Set();
let lastId = null;
let dropped = false;

function words(text) {
  return text.split(/[\s,]+/).filter((w) => w.length > 0);
}

function setStatus(kind, text) {
  const status = $("status");
  status.className = "status " + kind;
  status.textContent = text;
}

function addRow(cells, kind) {
  const row = document.createElement("tr");
  if (kind) row.className = kind;
  for (const [name, text] of cells) {
    const cell = document.createElement("td");
    cell.className = name;
    cell.textContent = text;
    row.appendChild(cell);
  }
  const rows = $("rows");
  rows.insertBefore(row, rows.firstChild);
  while (rows.childElementCount > MAX_ROWS) rows.removeChild(rows.lastChild);
  $("empty").hidden = true;
}

function notice(text) {
  addRow([["id", ""], ["name", ""], ["data", text], ["time", clock()]], "notice");
}

function clock() {
  return new Date().toLocaleTimeString();
}

function received(event) {
  if (event.lastEventId) {
    lastId = event.lastEventId;
    $("last-id").textContent = lastId;
  }
  if (event.type === "hopcast-missed") {
    let detail = event.data;
    try {
      const missed = JSON.parse(event.data);
      detail = `events were lost (${missed.reason}): after ${missed.requested},` +
        ` the stream starts at ${missed.first}`;
    } catch (_) { /* shown as it came */ }
    addRow([["id", event.lastEventId], ["name", event.type], ["data", detail],
      ["time", clock()]], "missed");
    return;
  }
  addRow([["id", event.lastEventId], ["name", event.type], ["data", event.data],
    ["time", clock()]]);
}

function listen(name) {
  if (source && !listening.has(name)) {
    source.addEventListener(name, received);
    listening.add(name);
  }
}

function streamUrl(patterns) {
  const query = new URLSearchParams();
  for (const pattern of patterns) query.append("topic", pattern);
  return new URL("events?" + query.toString(), document.baseURI).href;
}

function shareLink(patterns, names) {
  const query = new URLSearchParams();
  for (const pattern of patterns) query.append("topic", pattern);
  for (const name of names) query.append("event", name);
  const link = "./" + (patterns.length || names.length ? "?" + query.toString() : "");
  $("share").href = link;
  $("share").textContent = link;
  history.replaceState(null, "", link);
}

async function explainRefusal(url) {
  // EventSource does not tell why it gave up: ask the same URL, read the problem, stop there.
  const controller = new AbortController();
  try {
    const response = await fetch(url, { signal: controller.signal });
    if (response.ok) {
      controller.abort();
      return "the stream ended";
    }
    const problem = await response.json();
    return `${response.status} ${problem.title}: ${problem.detail}`;
  } catch (_) {
    return "the gateway cannot be reached";
  }
}

function subscribe(patterns, names) {
  if (source) source.close();
  listening = new Set();
  shareLink(patterns, names);
  if (patterns.length === 0) {
    source = null;
    setStatus("idle", "not subscribed");
    return;
  }
  const url = streamUrl(patterns);
  source = new EventSource(url);
  for (const name of [...ALWAYS, ...names]) listen(name);
  setStatus("reconnecting", "connecting…");
  dropped = false;
  source.onopen = () => {
    setStatus("live", "live: " + patterns.join(" "));
    if (dropped) {
      notice(lastId === null ? "reconnected" : `reconnected: resumed after event ${lastId}`);
      dropped = false;
    }
  };
  source.onerror = async () => {
    const current = source;
    if (current.readyState === EventSource.CLOSED) {
      const why = await explainRefusal(url);
      setStatus("refused", "refused: " + why);
      notice("the gateway refused the subscription: " + why);
      return;
    }
    if (!dropped) {
      dropped = true;
      const from = lastId === null ? "" : ` (it resumes after event ${lastId})`;
      setStatus("reconnecting", "reconnecting…");
      notice("connection lost; reconnecting" + from);
    }
  };
}

async function publish(form) {
  const topic = $("pub-topic").value.trim();
  const name = $("pub-event").value.trim();
  const result = $("publish-result");
  if (!topic) {
    result.className = "meta bad";
    result.textContent = "name a topic to publish on";
    return;
  }
  let url = "events/" + encodeURIComponent(topic);
  if (name) {
    url += "?event=" + encodeURIComponent(name);
    listen(name);
  }
  try {
    const response = await fetch(url, {
      method: "POST",
      body: $("pub-data").value,
      headers: { "Content-Type": "text/plain; charset=utf-8" },
    });
    const answer = await response.json();
    if (response.status === 202) {
      result.className = "meta ok";
      result.textContent = `published on ${answer.topic} (${answer.size} bytes)`;
    } else {
      result.className = "meta bad";
      result.textContent = `${response.status} ${answer.title}: ${answer.detail}`;
    }
  } catch (error) {
    result.className = "meta bad";
    result.textContent = "the gateway cannot be reached";
  }
}

function start() {
  const query = new URLSearchParams(location.search);
  const patterns = query.getAll("topic").flatMap(words);
  const names = query.getAll("event").flatMap(words);
  $("patterns").value = patterns.join(" ");
  $("names").value = names.join(" ");
  if (patterns.length) $("pub-topic").placeholder = patterns[0].replace(/[*#]/g, "demo");
  $("subscribe").addEventListener("submit", (event) => {
    event.preventDefault();
    subscribe(words($("patterns").value), words($("names").value));
  });
  $("names").addEventListener("change", () => {
    for (const name of words($("names").value)) listen(name);
    shareLink(words($("patterns").value), words($("names").value));
  });
  $("publish").addEventListener("submit", (event) => {
    event.preventDefault();
    publish(event.target);
  });
  subscribe(patterns, names);
}

start();
